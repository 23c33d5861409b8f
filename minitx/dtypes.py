"""Number formats, written once: their names, the spellings people use for them, and their size in bits.

    dtypes.name("bf16")            -> "bfloat16"      the canonical name (NumPy's where NumPy has one)
    dtypes.bits("int4")            -> 4               bits per value
    dtypes.nbytes("int4", 7)       -> 4               bytes of 7 packed values: ceil(7 · 4 / 8)
    dtypes.short("bfloat16")       -> "bf16"          the name datasheets (and `minitx.hardware`) use
    dtypes.numpy_dtype("bf16")     -> np.dtype        for the formats a minitx model runs in (RUNNABLE)

Sizes are bits per value, not bytes, because int4 is half a byte: a row of n int4 values packs two per byte
and takes ceil(n / 2) bytes; every other format is a whole number of bytes per value. Compute-only formats
(tf32, fp8) appear here because hardware quotes peaks for them; a model never stores them.
"""
from __future__ import annotations

from dataclasses import dataclass

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
# What a minitx model and its KV cache run in, for real (16-bit: inference only, float32 arithmetic), and what
# it trains in (its gradients and Adam's moments share the parameters' format).
RUNNABLE = ("float32", "float64", "bfloat16", "float16")
TRAINABLE = ("float32", "float64")

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


def storage(dtype) -> np.dtype:
    """The NumPy dtype that stores values of a format: bfloat16 through ml_dtypes (the small library JAX uses
    for it); int4 has none of its own (two values are packed into each uint8)."""
    fmt = name(dtype)
    if fmt == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    if fmt in ("int4", "tfloat32", "float8"):
        raise ValueError(f"{fmt} has no NumPy storage dtype of its own")
    return np.dtype(fmt)


def numpy_dtype(dtype, arg: str = "dtype") -> np.dtype:
    """The NumPy dtype of a format minitx can run in (RUNNABLE), else a ValueError naming `arg`."""
    try:
        canonical = None if dtype is None else name(dtype)   # np.dtype(None) would silently mean float64
    except ValueError:
        canonical = None
    if canonical not in RUNNABLE:
        raise ValueError(f"{arg}={dtype!r} is not supported; choose one of {', '.join(RUNNABLE)}")
    return storage(canonical)


# ---- how a model stores its numbers ------------------------------------------------------------------------------

ACTIVATION_FORMATS = ("float64", "float32", "bfloat16", "float16")
QUANTIZED_FORMATS = ("int8", "int4")
SCALE_FORMAT = "float16"       # one scale per group of a quantized weight's inputs


@dataclass(frozen=True)
class Precision:
    """The number formats of one deployment: activations (what the ops compute in and pass on), weights, KV cache.

    Weights are stored either in the activations' format or quantized (int8, int4). Quantized applies to the
    matrices of the layers (q|k|v, the output projection, the MLP's up and down), weight-only and symmetric: each
    int value times a float16 scale shared by a group of `group_size` inputs of one output, scales (K/g, M) for a
    (K, M) matrix; int4 packs two values to a byte along the outputs, a row of M values in ceil(M/2) bytes. Every
    other parameter (embeddings, norms, biases, an untied LM head) stays in the activations' format. The KV cache
    may use any float format or int8."""
    activations: str = "float32"
    weights: str | None = None           # None: as activations
    kv: str | None = None                # None: as activations
    group_size: int = 128

    def __post_init__(self):
        act = name(self.activations)
        weights = act if self.weights is None else name(self.weights)
        kv = act if self.kv is None else name(self.kv)
        if act not in ACTIVATION_FORMATS:
            raise ValueError(f"activations={self.activations!r}: choose one of {', '.join(ACTIVATION_FORMATS)}")
        if weights not in (act,) + QUANTIZED_FORMATS:
            raise ValueError(f"weights={self.weights!r}: weights are stored in the activations' format ({act}) or "
                             f"quantized ({', '.join(QUANTIZED_FORMATS)})")
        if kv not in ACTIVATION_FORMATS + ("int8",):
            raise ValueError(f"kv={self.kv!r}: choose one of {', '.join(ACTIVATION_FORMATS + ('int8',))}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size={self.group_size!r} must be a positive integer")
        for field, value in (("activations", act), ("weights", weights), ("kv", kv)):
            object.__setattr__(self, field, value)

    @property
    def quantized(self) -> bool:
        return self.weights in QUANTIZED_FORMATS

    def matrix_bytes(self, n_in: int, n_out: int) -> int:
        """Bytes of a layer's (n_in, n_out) weight matrix as stored: values (packed for int4) plus scales."""
        if not self.quantized:
            return n_in * n_out * itemsize(self.weights)
        if n_in % self.group_size:
            raise ValueError(f"group_size={self.group_size} does not divide a weight's input width {n_in}: each "
                             "group of inputs shares one scale, so the width must be a multiple of it")
        return n_in * nbytes(self.weights, n_out) + (n_in // self.group_size) * n_out * itemsize(SCALE_FORMAT)

    def __str__(self) -> str:
        parts = [self.activations] + [f"{k} {v}" for k, v in (("weights", self.weights), ("KV", self.kv))
                                       if v != self.activations]
        return ", ".join(parts) + (f" (groups of {self.group_size})" if self.quantized else "")


def precision(dtype=None, weights=None, kv=None, group_size: int = 128) -> Precision:
    """A Precision from a format name or a Precision, with weights/kv overriding it. A float format sets all
    three; "int8" means int8 weights and KV cache with bfloat16 activations (W8A16), "int4" int4 weights with a
    bfloat16 KV cache and activations (W4A16): what the calculators' --dtype int8 / int4 describe."""
    if isinstance(dtype, Precision):
        if weights is None and kv is None:
            return dtype
        dtype, weights, kv, group_size = (dtype.activations, weights or dtype.weights, kv or dtype.kv,
                                          dtype.group_size)
    fmt = "float32" if dtype is None else name(dtype)
    if fmt in QUANTIZED_FORMATS:
        fmt, weights, kv = "bfloat16", weights or fmt, kv or ("int8" if fmt == "int8" else None)
    return Precision(fmt, weights, kv, group_size)
