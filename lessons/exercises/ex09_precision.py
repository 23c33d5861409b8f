# %% [markdown]
# # Exercise 9: precision, what int8 and int4 weights really take (slides 5 and 7)
#
# "A 7B model in int4 is 3.5 GB" is the rule of thumb. Count it exactly, the way minitx stores it: the layers'
# matrices as small integers with a float16 scale per group of inputs, everything else in bfloat16. Then
# `minitx grade ex09_precision.py`: the grader quantizes small models for real (`minitx.quantize`) and builds
# GPT-2, Llama-3-8B, Mistral-7B and Gemma by shape, and reads the bytes they store. `lessons/09_precision.py`
# and `lessons/02_memory.py` (section 5) are the background; your `count_params` of exercise 1 helps.

# %%
def quantized_weights_bytes(cfg, weight_dtype, group_size) -> int:
    """Bytes of the model's weights when its float parameters are bfloat16 and its layers' matrices are stored in
    `weight_dtype`: "int8", "int4" or "bfloat16" (nothing quantized).

    Quantized, per layer: the q|k|v matrix (C × (NH + 2·KV)·HS), the output projection (NH·HS × C), the MLP's
    up (C × F; a gated MLP's gate and up together, C × 2F) and down (F × C). A matrix of K inputs and M outputs
    stores K·M int8 values (1 byte each), or K·ceil(M/2) bytes of int4 values (two to a byte along the outputs),
    plus one float16 scale (2 bytes) for each group of `group_size` inputs of each output: (K / group_size) · M
    scales. Everything else (the embeddings, an untied LM head, the norms, the biases) stays bfloat16, 2 bytes a
    value; so does every matrix when weight_dtype is "bfloat16". Return an int.
    """
    raise NotImplementedError
