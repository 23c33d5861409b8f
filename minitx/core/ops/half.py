"""16-bit storage: bfloat16 and float16 numbers kept in 16 bits, computed on in float32.

A 16-bit deployment stores its weights, activations and KV cache in 16 bits and does its arithmetic in float32,
as every bf16 GPU kernel does (the tensor cores multiply 16-bit inputs into a float32 accumulator):

    bfloat16   1 sign, 8 exponent, 7 mantissa bits: float32's range, 2-3 decimal digits   (eps = 2^-7)
    float16    1 sign, 5 exponent, 10 mantissa bits: up to 65504, 3-4 decimal digits      (eps = 2^-10)

NumPy has float16; bfloat16 comes from ml_dtypes (the small library JAX uses for it). Numba knows neither, so
this module gives the kernels two ways in:

* `call_f32(kernel, *args, outputs=...)`: the ops other than the matmuls (norms, softmax, activations, RoPE)
  run their float32 kernel on widened copies of 16-bit inputs and round the outputs back to 16 bits. Those ops
  touch activations only (a few rows at decode), so the widening copies cost little; every op's output is
  stored in 16 bits, as it would be in memory on a GPU. Counting is untouched: an op records the bytes of the
  arrays it was handed, 2 per value.
* `bf16_to_f32`, `fp16_to_f32`: the conversion of one 16-bit pattern (a uint16) to float32, written with
  integer operations so it vectorises. The matmul kernels (minitx.core.ops.half_linear) read 16-bit weights
  as uint16 and widen each in a register on its way into a float32 multiply-add: the whole point of a 16-bit
  deployment is that the weights cross the memory bus in 16 bits, so a widened copy of them would defeat it.
  `load(x, kind)` is the same inside a kernel that also runs on float arrays (fused attention reading the KV
  cache): a float value as it is, a uint16 pattern widened; Numba picks the branch when it compiles.

Accumulation. Every kernel accumulates in float32 at least. The norms' and the softmax's row reductions
(sums of C squares, the softmax's max and sum) accumulate in float64, as they already do in a float32 model
(their accumulators are Python floats): one row of C values is O(C) work next to the O(C²) of a matmul, so
the wider accumulator costs nothing measurable and makes each row's statistics exact to float32 before they
are rounded to 16 bits with the row. Hugging Face computes the same norms and softmax in float32.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

HALF_FORMATS = ("bfloat16", "float16")
BF16, FP16 = 0, 1                 # the `kind` the kernels take: which 16-bit format a uint16 holds
# Scalar type -> kind. Every op asks "is this array 16-bit?" of each argument on every call (dozens of times per
# decode step), so the answer is one dict lookup on the dtype's scalar type, hashed by identity: resolving the
# dtype's name instead (np.dtype(...).name builds a string each time) cost a fifth of a small model's step.
_KINDS = {ml_dtypes.bfloat16: BF16, np.float16: FP16}


def half_kind(dtype) -> int | None:
    """BF16 or FP16 for a 16-bit float dtype (a np.dtype, a scalar type or a name), None for any other."""
    return _KINDS.get((dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)).type)


def is_half(a) -> bool:
    """True for an array stored in bfloat16 or float16."""
    return isinstance(a, np.ndarray) and a.dtype.type in _KINDS


def compute_dtype(dtype) -> np.dtype:
    """What an op computes in for values stored as `dtype`: float32 for the 16-bit formats, else the dtype."""
    return np.dtype(np.float32) if half_kind(dtype) is not None else np.dtype(dtype)


def widen(a):
    """A float32 copy of a 16-bit array (exact: every bf16 and fp16 value is a float32); anything else as is."""
    return a.astype(np.float32) if is_half(a) else a


def bits(a: np.ndarray) -> np.ndarray:
    """The uint16 patterns of a 16-bit array, as a view (no copy): what the Numba kernels read."""
    return a.view(np.uint16)


def call_f32(kernel, *args, outputs: tuple[int, ...] = ()):
    """kernel(*args), with every 16-bit array argument widened to float32 and the arguments at `outputs` (the
    arrays the kernel writes) rounded back into the 16-bit arrays given. With no 16-bit argument this is plain
    kernel(*args): float32 and float64 models run exactly as before."""
    for a in args:                      # a plain loop: a generator would cost more than the test itself
        if is_half(a):
            break
    else:
        return kernel(*args)
    wide = [np.empty(a.shape, np.float32) if i in outputs and is_half(a) else widen(a) for i, a in enumerate(args)]
    result = kernel(*wide)
    for i in outputs:
        if is_half(args[i]):
            args[i][...] = wide[i]           # round to nearest even, as a 16-bit store does
    return result


# ---- one 16-bit pattern to float32, inside a kernel ------------------------------------------------------------

@intrinsic
def as_float32(typingctx, value):
    """The float32 whose bit pattern is the low 32 bits of an integer: a reinterpretation, no arithmetic."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if value.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif value.bitwidth < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(value), codegen


@njit(cache=True, inline="always")
def bf16_to_f32(u):
    """A bfloat16 pattern (uint16) -> float32. bfloat16 is the top half of a float32: shift it into place."""
    return as_float32(np.uint32(u) << 16)


@njit(cache=True, inline="always")
def fp16_to_f32(u):
    """A float16 pattern (uint16) -> float32, subnormals, infinities and NaN included, without a branch.

    float16 has 5 exponent bits (bias 15) and 10 mantissa bits, float32 8 (bias 127) and 23. Shifting the
    magnitude bits left by 13 lines the mantissas up and puts the exponent field in float32's, where it reads as
    a number 2^(15 − 127) = 2^-112 times too small: multiplying by 2^112 corrects it, and turns a float16
    subnormal (exponent field 0) into the right float32 at the same time. Infinity and NaN (exponent field 31)
    instead get float32's all-ones exponent. The sign bit goes back on top."""
    h = np.uint32(u)
    mag = (h & np.uint32(0x7FFF)) << 13
    special = (h & np.uint32(0x7C00)) == np.uint32(0x7C00)
    v = as_float32(mag | np.uint32(0x7F800000)) if special else as_float32(mag) * np.float32(2.0 ** 112)
    return -v if h & np.uint32(0x8000) else v


def load(x, kind):
    """One value of an array a kernel reads, as the kernel computes with it (used inside Numba kernels only):
    a float as it is; a uint16 pattern widened to float32 from its 16-bit `kind` (BF16 or FP16)."""
    raise NotImplementedError("load is for Numba kernels")


@overload(load)
def _load(x, kind):
    # Chosen by type when the kernel compiles: a float32/float64 kernel does no work here at all.
    if isinstance(x, types.Float):
        return lambda x, kind: x
    if isinstance(x, types.Integer) and x.bitwidth == 16 and not x.signed:
        return lambda x, kind: bf16_to_f32(x) if kind == BF16 else fp16_to_f32(x)
    return None
