# %% [markdown]
# # Exercise 5: one decode step, and the batch that makes it compute-bound (slides 13 to 16)
#
# A decode step makes one token per sequence: every weight matrix is read once for the whole batch, and every
# sequence reads its own keys and values. Write the step's FLOPs and bytes, then the batch size at which a GPU
# stops waiting on memory. `minitx grade ex05_decode.py` runs a decode step of each model under the counters
# (small models for real, real ones by shape). Lessons 5 and 6 are the background.

# %%
def decode_step_flops(cfg, batch, context) -> int:
    """2 × the MACs of one cached decode step: `batch` sequences each have `context` tokens in the cache and
    add one. The matmuls run on one row per sequence (every projection and the LM head); attention's q·Kᵀ and
    A·V cover the context + 1 keys (the new token's own included), per layer, sequence and query head.
    Return an int.
    """
    raise NotImplementedError


# %%
def decode_step_bytes(cfg, batch, context, bytes_per_value) -> int:
    """Bytes that step reads from (a) the weights of its matmuls: every matrix of every layer, their biases
    when cfg.bias, and the LM head (the embedding table when tied), each read once whatever the batch (the norms'
    scales and the embedding lookup are not counted here); and (b) the KV cache: for each sequence, the keys and
    values of its context + 1 positions in every layer. Weights and cache use `bytes_per_value` bytes a number.
    Return an int.
    """
    raise NotImplementedError


# %%
def critical_batch(cfg, hardware, context):
    """The smallest batch B at which a bfloat16 decode step (bytes_per_value = 2) does at least the chip's ridge
    point in FLOPs per byte: decode_step_flops(cfg, B, context) / decode_step_bytes(cfg, B, context, 2) ≥
    peak / bandwidth, with `hardware` a preset name of `minitx.hardware.get` (its .peak("bf16") in FLOP/s and
    .bandwidth in bytes/s). Return an int, or None if no batch gets there.
    """
    raise NotImplementedError
