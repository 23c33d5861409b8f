# %% [markdown]
# # Solutions, exercise 6: time to first token, time per output token, and what a token costs

# %%
import minitx
from ex03_compute import matmul_params
from ex05_decode import decode_step_bytes, decode_step_flops


def ttft_seconds(cfg, hardware, batch, prompt) -> float:
    chip = minitx.hardware.get(hardware)
    layers = matmul_params(cfg) - cfg.vocab_size * cfg.d_model
    flops = 2 * batch * prompt * layers + 2 * batch * cfg.vocab_size * cfg.d_model   # logits: last token only
    # causal attention, fused: query i sees i + 1 keys; QKᵀ and A·V are 2·HS FLOPs per (query, key, head) each
    flops += cfg.n_layers * batch * cfg.n_heads * 4 * cfg.head_dim * prompt * (prompt + 1) // 2
    weights = decode_step_bytes(cfg, batch, 0, 2) - 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * batch * 2
    return max(flops / chip.peak("bf16"), weights / chip.bandwidth)


def tpot_seconds(cfg, hardware, batch, context) -> float:
    chip = minitx.hardware.get(hardware)
    return max(decode_step_flops(cfg, batch, context) / chip.peak("bf16"),
               decode_step_bytes(cfg, batch, context, 2) / chip.bandwidth)


def cost_per_million_output_tokens(cfg, hardware, batch, context, gpu_price_per_hour) -> float:
    tokens_per_s = batch / tpot_seconds(cfg, hardware, batch, context)
    return gpu_price_per_hour / 3600 / tokens_per_s * 1e6


def break_even_utilization(cfg, hardware, batch, context, gpu_price_per_hour, api_price_per_million) -> float:
    return cost_per_million_output_tokens(cfg, hardware, batch, context, gpu_price_per_hour) / api_price_per_million
