# %% [markdown]
# # Exercise 2: memory, training vs inference (slides 5 and 7)
#
# Serving needs the weights; training needs the weights, a gradient for each, and Adam's state. Write both,
# then `minitx grade ex02_memory.py`. The grader compares your answers with the buffers minitx allocates: the
# parameters of a model built in `dtype`, and everything a float32 training step with AdamW allocates. Lesson 2
# (`lessons/02_memory.py`) is the background. You may reuse exercise 1: paste your `count_params` here.

# %%
def inference_weights_bytes(cfg, dtype) -> int:
    """Bytes of the model's parameters stored in `dtype`: "float32" (4 bytes a value) or "bfloat16" (2 bytes).

    Every parameter once (a tied LM head is the embedding table). Return an int: bytes, not bits.
    """
    raise NotImplementedError


# %%
def training_memory_bytes(cfg) -> int:
    """Bytes a float32 training step with AdamW keeps for the parameters: the weights, one gradient per weight,
    and Adam's two moments (m and v) per weight, 4 bytes each. Activations are not included. Return an int.
    """
    raise NotImplementedError
