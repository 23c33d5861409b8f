# %% [markdown]
# # Solutions, exercise 3: compute

# %%
def matmul_params(cfg) -> int:
    """Weights that take part in a matmul per token: the layers' matrices and the LM head (tied or not)."""
    C, F, HS = cfg.d_model, cfg.d_ff, cfg.head_dim
    q, kv = cfg.n_heads * HS, cfg.n_kv_heads * HS
    up = 2 * F if cfg.mlp == "gated" else F
    return cfg.n_layers * (C * (q + 2 * kv) + q * C + C * up + F * C) + cfg.vocab_size * C


def forward_matmul_flops(cfg, batch, seq_len) -> int:
    linear = 2 * batch * seq_len * matmul_params(cfg)
    # per layer, per sequence and head: QKᵀ (T×HS by HS×T) and A·V (T×T by T×HS), 2·T·T·HS FLOPs each
    attention = cfg.n_layers * batch * cfg.n_heads * 4 * seq_len * seq_len * cfg.head_dim
    return linear + attention


def training_matmul_flops(cfg, batch, seq_len) -> int:
    return 3 * forward_matmul_flops(cfg, batch, seq_len)     # backward: dX and dW, two matmuls per matmul
