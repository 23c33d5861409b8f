# %% [markdown]
# # Solutions, exercise 2: memory, training vs inference

# %%
from ex01_parameters import count_params

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def inference_weights_bytes(cfg, dtype) -> int:
    return count_params(cfg) * BYTES[dtype]


def training_memory_bytes(cfg) -> int:
    # weights, one gradient per weight, Adam's m and v: four float32 copies
    return 4 * count_params(cfg) * 4
