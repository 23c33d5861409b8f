# %% [markdown]
# # Solutions, exercise 5: one decode step, and when batching makes it compute-bound

# %%
import math

import minitx
from ex03_compute import matmul_params


def decode_step_flops(cfg, batch, context) -> int:
    keys = context + 1                                      # the cached keys and the new token's own
    attention = cfg.n_layers * cfg.n_heads * 4 * keys * cfg.head_dim
    return batch * (2 * matmul_params(cfg) + attention)


def decode_step_bytes(cfg, batch, context, bytes_per_value) -> int:
    C, F, HS = cfg.d_model, cfg.d_ff, cfg.head_dim
    q, kv = cfg.n_heads * HS, cfg.n_kv_heads * HS
    up = 2 * F if cfg.mlp == "gated" else F
    biases = cfg.n_layers * ((q + 2 * kv) + C + up + C) if cfg.bias else 0
    weights = (matmul_params(cfg) + biases) * bytes_per_value     # each read once, whatever the batch
    cache = 2 * cfg.n_layers * kv * (context + 1) * batch * bytes_per_value
    return weights + cache


def critical_batch(cfg, hardware, context):
    chip = minitx.hardware.get(hardware)
    ridge = chip.peak("bf16") / chip.bandwidth
    per_sequence_flops = decode_step_flops(cfg, 1, context)
    per_sequence_bytes = decode_step_bytes(cfg, 2, context, 2) - decode_step_bytes(cfg, 1, context, 2)
    weights = decode_step_bytes(cfg, 1, context, 2) - per_sequence_bytes
    # B·flops ≥ ridge·(weights + B·bytes)  <=>  B ≥ ridge·weights / (flops − ridge·bytes)
    if per_sequence_flops <= ridge * per_sequence_bytes:
        return None                                          # the cache grows as fast as the FLOPs
    return max(1, math.ceil(ridge * weights / (per_sequence_flops - ridge * per_sequence_bytes)))
