# %% [markdown]
# # Exercise 8: the serving engine's KV cache, paged or contiguous (slide 16)
#
# A server keeps many sequences' keys and values at once, and it cannot know how long each will get. The
# **contiguous** layout gives each sequence, when it is admitted, room for its prompt plus its cap on new tokens;
# the **paged** one (vLLM's PagedAttention) hands out fixed-size blocks as a sequence grows. Both count memory
# in whole blocks of `block_size` positions. Write what each holds, then `minitx grade ex08_serving_engine.py`:
# the grader runs `minitx.Engine` for real on small models of both families (float32) with your requests and
# reads the KV bytes its block manager holds after the first step. `lessons/06_batching.py` (section 3) and
# `minitx.Engine`'s docstring are the background; your `kv_cache_bytes` of exercise 4 gives the bytes of one
# position.

# %%
def kv_reserved_bytes(cfg, prompt_lens, max_new_tokens, block_size, layout) -> int:
    """Bytes of KV cache the engine's blocks hold after its first step, when requests with prompts of
    `prompt_lens` tokens (a tuple of ints), each allowed up to `max_new_tokens` new tokens, arrive together and
    are prefilled together in that step (float32: 4 bytes a value).

    A position holds the keys and values of every layer: 2 · n_layers · n_kv_heads · head_dim values. After the
    prefill a sequence's cache holds its prompt (the token the step sampled is written by the next step).
      layout "paged":      each sequence holds ceil(positions held / block_size) blocks;
      layout "contiguous": each sequence reserved ceil((prompt + max_new_tokens) / block_size) blocks when it
                           was admitted.
    A block is block_size positions. Return an int.
    """
    raise NotImplementedError
