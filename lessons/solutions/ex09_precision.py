# %% [markdown]
# # Solutions, exercise 9: what int8 and int4 weights really take

# %%
from ex01_parameters import count_params


def quantized_weights_bytes(cfg, weight_dtype, group_size) -> int:
    C, F, HS = cfg.d_model, cfg.d_ff, cfg.head_dim
    q, kv = cfg.n_heads * HS, cfg.n_kv_heads * HS
    up = 2 * F if cfg.mlp == "gated" else F
    matrices = [(C, q + 2 * kv), (q, C), (C, up), (F, C)]          # (inputs K, outputs M) of each layer
    everything = count_params(cfg)
    if weight_dtype == "bfloat16":
        return 2 * everything
    in_matrices = cfg.n_layers * sum(K * M for K, M in matrices)
    rest = everything - in_matrices                                 # embeddings, head, norms, biases: bf16
    per_layer = 0
    for K, M in matrices:
        values = K * M if weight_dtype == "int8" else K * -(-M // 2)     # int4: two per byte, rows rounded up
        scales = 2 * (K // group_size) * M                          # a float16 per group of inputs, per output
        per_layer += values + scales
    return 2 * rest + cfg.n_layers * per_layer
