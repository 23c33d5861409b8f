# %% [markdown]
# # Solutions, exercise 1: parameters
#
# For the teacher. The exercise (lessons/exercises/ex01_parameters.py) defines the graded quantity; this file
# is one answer that `minitx grade` passes. Check it: `minitx grade lessons/solutions/ex01_parameters.py`.

# %%
def count_params(cfg) -> int:
    C, V, L, F, HS = cfg.d_model, cfg.vocab_size, cfg.n_layers, cfg.d_ff, cfg.head_dim
    q, kv = cfg.n_heads * HS, cfg.n_kv_heads * HS           # query width, and each of the key and value widths
    bias = 1 if cfg.bias else 0
    norm = 2 * C if cfg.norm == "layernorm" else C          # LayerNorm: scale and shift; RMSNorm: scale
    up = 2 * F if cfg.mlp == "gated" else F                 # the gated MLP's gate and up, side by side
    attention = C * (q + 2 * kv) + bias * (q + 2 * kv) + q * C + bias * C
    mlp = C * up + bias * up + F * C + bias * C
    embeddings = V * C + (cfg.n_ctx * C if cfg.position == "learned" else 0)
    head = 0 if cfg.tie_embeddings else V * C               # tied: the head *is* the embedding table
    return embeddings + L * (attention + mlp + 2 * norm) + norm + head
