"""Number formats, written once: their names, the spellings people use for them, and their size in bits.

    dtypes.name("bf16")            -> "bfloat16"      the canonical name (NumPy's where NumPy has one)
    dtypes.bits("int4")            -> 4               bits per value
    dtypes.nbytes("int4", 7)       -> 4               bytes of 7 packed values: ceil(7 · 4 / 8)
    dtypes.short("bfloat16")       -> "bf16"          the name datasheets (and `minitx.hardware`) use
    dtypes.numpy_dtype("float32")  -> np.dtype        for the formats a minitx model runs in

Sizes are bits per value, not bytes, because int4 is half a byte: a row of n int4 values packs two per byte
and takes ceil(n / 2) bytes; every other format is a whole number of bytes per value. Compute-only formats
(tf32, fp8) appear here because hardware quotes peaks for them; a model never stores them.
"""
from __future__ import annotations

import numpy as np

# canonical name -> (bits per value, short name)
FORMATS: dict[str, tuple[int, str]] = {
    "float64": (64, "fp64"),
    "float32": (32, "fp32"),
    "tfloat32": (32, "tf32"),     # tensor-core input format: stored as float32, multiplied at reduced precision
    "bfloat16": (16, "bf16"),
    "float16": (16, "fp16"),
    "float8": (8, "fp8"),
    "int8": (8, "int8"),
    "int4": (4, "int4"),
}
# What a minitx model, its gradients and its KV cache can be allocated in today.
RUNNABLE = ("float32", "float64")

_ALIASES = {alias: canonical for canonical, (_, short) in FORMATS.items() for alias in (canonical, short)}
_ALIASES.update({"f64": "float64", "double": "float64", "f32": "float32", "single": "float32",
                 "f16": "float16", "half": "float16", "i8": "int8", "i4": "int4", "fp8_e4m3": "float8"})


def name(dtype) -> str:
    """The canonical name of `dtype`: a name or alias ("bf16", "FP32"), or anything with a `.name` (np.float32's
    dtype, np.dtype("float64")). ValueError for anything else, listing what is known."""
    key = getattr(dtype, "name", dtype)
    if isinstance(dtype, type) and issubclass(dtype, np.generic):         # np.float32 itself
        key = np.dtype(dtype).name
    if isinstance(key, str):
        key = key.strip().lower()
        if key not in _ALIASES:
            try:
                key = np.dtype(key).name                                   # NumPy's codes: "f4", "<f8"
            except TypeError:
                pass
        if key in _ALIASES:
            return _ALIASES[key]
    raise ValueError(f"dtype {dtype!r} is unknown; choose one of {', '.join(FORMATS)} "
                     f"(or {', '.join(sorted(set(_ALIASES) - set(FORMATS)))})")


def bits(dtype) -> int:
    """Bits per value."""
    return FORMATS[name(dtype)][0]


def nbytes(dtype, count: int) -> int:
    """Bytes that `count` values occupy, packed: int4 rounds a row of odd length up to a whole byte."""
    return -(-int(count) * bits(dtype) // 8)


def itemsize(dtype) -> int:
    """Bytes per value of a format that is a whole number of bytes (int4 is not: use nbytes)."""
    b = bits(dtype)
    if b % 8:
        raise ValueError(f"{name(dtype)} is {b} bits per value, not a whole number of bytes: use nbytes()")
    return b // 8


def short(dtype) -> str:
    """The datasheet name: "bf16", "fp32", "int8"."""
    return FORMATS[name(dtype)][1]


def numpy_dtype(dtype, arg: str = "dtype") -> np.dtype:
    """The NumPy dtype of a format minitx can run in (RUNNABLE), else a ValueError naming `arg`."""
    try:
        canonical = None if dtype is None else name(dtype)   # np.dtype(None) would silently mean float64
    except ValueError:
        canonical = None
    if canonical not in RUNNABLE:
        raise ValueError(f"{arg}={dtype!r} is not supported; choose one of {', '.join(RUNNABLE)}")
    return np.dtype(canonical)
