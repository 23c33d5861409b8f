# %% [markdown]
# # Solutions, exercise 4: the KV cache

# %%
def kv_cache_bytes(cfg, batch, seq_len, bytes_per_value) -> int:
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * seq_len * batch * bytes_per_value
