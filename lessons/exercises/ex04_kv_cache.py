# %% [markdown]
# # Exercise 4: the size of the KV cache (slide 11)
#
# Each decode step needs the keys and values of every earlier token; the cache keeps them. Write its size, then
# `minitx grade ex04_kv_cache.py`: the grader allocates a `minitx.KVCache` for each case and reads its buffer's
# size. Lesson 4 (`lessons/04_kv_cache.py`) is the background. Mind grouped-query attention (n_kv_heads <
# n_heads) and models whose head_dim is not d_model / n_heads.

# %%
def kv_cache_bytes(cfg, batch, seq_len, bytes_per_value) -> int:
    """Bytes of a full KV cache holding `seq_len` positions for each of `batch` sequences: for every layer,
    the keys and the values of every key/value head, head_dim numbers per position, each `bytes_per_value`
    bytes (4 for float32, 2 for bfloat16). Return an int.
    """
    raise NotImplementedError
