"""Weight-only quantization: a layer's (K, M) matrix stored as small integers and one float16 scale per group.

    w[k, m] ≈ q[k, m] · scale[k // g, m]        q an int8 in [-127, 127], or an int4 in [-7, 7]
    scale[i, m] = max |w[i·g:(i+1)·g, m]| / 127 (or / 7), rounded to float16     symmetric: no zero point

    qmodel = minitx.quantize(model, "int8" | "int4", group_size=128)   a new model (minitx.core.quantize_model)

Each output column is split into groups of g consecutive inputs (g = 128 by default), each with its own scale, so
one large weight spoils the precision of only its own group. int4 packs two values to a byte along the outputs:
byte [k, j] holds q[k, 2j] in its low nibble and q[k, 2j + 1] in its high one (a row of M values takes ⌈M/2⌉
bytes; for an odd M the last byte's high nibble is 0). Stored bytes: K·M (int8) or K·⌈M/2⌉ (int4), plus 2·(K/g)·M
of scales. g must divide K (every group whole): a clear error otherwise.

What is quantized: the matrices of the layers (q|k|v, the output projection, the MLP's up and down), 4·L of them,
where almost all of a model's weights live. The embedding, and with it a tied LM head, stays in the model's float
format (an embedding row is gathered, not multiplied, and the head's logits are the most sensitive output); so do
an untied head, the norms and the biases. formulas.param_bytes counts exactly that, and so does the model:
`model.flat.nbytes + Σ q.nbytes`.

Rounding. q = round(w / scale) with the scale already rounded to float16, so q · scale is what the kernel
computes. The largest |w| of a group then lands on exactly ±127 (±7): scale is within float16's relative half-ulp
(2^-11) of max|w| / 127, so max|w| / scale is within 0.07 of 127. That makes quantizing idempotent: dequantized
weights (export_hf writes them in float32, exactly) quantize back to the same integers and scales, bit for bit,
as long as each scale is a normal float16 (a group whose largest weight is at least 127 · 2^-14 ≈ 0.0078 for
int8, 7 · 2^-14 ≈ 0.00043 for int4; a subnormal scale still dequantizes right, but may not re-quantize to itself).

The kernels (dequantizing inside the matmul, never the whole matrix): minitx.core.ops.quantized_linear.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks, dtypes
from .ops.half import widen
from .ops.quantized_linear import dequantize_columns, quantized_gemm
from .shaped import Shaped, shaped

QMAX = {"int8": 127, "int4": 7}
STORAGE = {"int8": np.dtype(np.int8), "int4": np.dtype(np.uint8)}     # int4: two values per uint8
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A quantized (K, M) matrix: `values` int8 (K, M) or packed int4 uint8 (K, ⌈M/2⌉); `scales` float16
    (K/g, M)."""
    values: np.ndarray
    scales: np.ndarray
    fmt: str                 # "int8" or "int4"
    shape: tuple[int, int]   # (K, M) of the matrix it stands for

    @property
    def group_size(self) -> int:
        return self.shape[0] // self.scales.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.scales.nbytes)

    @staticmethod
    def storage_shapes(shape: tuple[int, int], fmt: str, group_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(values shape, scales shape) of a (K, M) matrix in `fmt` with groups of `group_size` inputs."""
        K, M = shape
        return (K, M if fmt == "int8" else -(-M // 2)), (K // group_size, M)

    @classmethod
    def shaped(cls, shape: tuple[int, int], fmt: str, group_size: int) -> "QuantizedWeight":
        """A data-less one, for shape-only models: the storage's shapes and dtypes, no memory."""
        vshape, sshape = cls.storage_shapes(shape, fmt, group_size)
        return cls(shaped(vshape, STORAGE[fmt]), shaped(sshape, dtypes.SCALE_FORMAT), fmt, tuple(shape))

    @classmethod
    def zeros(cls, shape: tuple[int, int], fmt: str, group_size: int) -> "QuantizedWeight":
        """All-zero storage (a matrix of zeros), to be filled by `quantize_into` or a checkpoint."""
        vshape, sshape = cls.storage_shapes(shape, fmt, group_size)
        return cls(np.zeros(vshape, STORAGE[fmt]), np.zeros(sshape, np.float16), fmt, tuple(shape))

    @property
    def is_shaped(self) -> bool:
        return isinstance(self.values, Shaped)

    def dequantize(self) -> np.ndarray:
        """The (K, M) float32 matrix q · scale stands for: a full copy, for export and inspection (the kernels
        never make one)."""
        return dequantize_columns(self.values, self.scales, self.fmt, 0, self.shape[1])


def quantize_into(w: np.ndarray, qw: QuantizedWeight) -> None:
    """Quantize the float (K, M) matrix w into qw's storage, in place (see the module docstring)."""
    K, M = qw.shape
    if w.shape != (K, M):
        raise ValueError(f"matrix of shape {w.shape} does not fit quantized storage for {qw.shape}")
    g, qmax = qw.group_size, QMAX[qw.fmt]
    # One group of every column at a time: (g, M) in float64, so no float copy of the whole matrix is made.
    for i in range(K // g):
        block = np.asarray(widen(w[i * g:(i + 1) * g]), dtype=np.float64)          # (g, M)
        if not np.all(np.isfinite(block)):
            raise ValueError(f"cannot quantize weights holding NaN or inf (rows {i * g}..{(i + 1) * g - 1})")
        amax = np.abs(block).max(axis=0)                                             # (M,)
        if amax.max() / qmax > FLOAT16_MAX:
            raise ValueError(f"a weight of magnitude {amax.max():.3g} needs a scale beyond float16's range "
                             f"({FLOAT16_MAX:g} · {qmax}): it cannot be quantized to {qw.fmt}")
        scale = (amax / qmax).astype(np.float16)
        s64 = scale.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            # a group of zeros (or of weights too small for a float16 scale) has scale 0: its values are 0
            q = np.where(s64 > 0, np.rint(block / np.where(s64 > 0, s64, 1.0)), 0.0)
        q = np.clip(q, -qmax, qmax).astype(np.int8)                                 # (g, M)
        qw.scales[i] = scale
        if qw.fmt == "int8":
            qw.values[i * g:(i + 1) * g] = q
        else:
            nib = (q.astype(np.uint8) & 0xF)                                         # two's complement nibbles
            if M % 2:
                nib = np.concatenate([nib, np.zeros((g, 1), np.uint8)], axis=1)      # the odd column's empty half
            qw.values[i * g:(i + 1) * g] = nib[:, 0::2] | (nib[:, 1::2] << 4)


def quantize_matrix(w: np.ndarray, fmt: str, group_size: int = 128) -> QuantizedWeight:
    """A float (K, M) matrix as a QuantizedWeight in `fmt` ("int8" or "int4") with groups of `group_size`."""
    fmt = checks.one_of("fmt", fmt, tuple(QMAX))
    if not isinstance(w, np.ndarray) or w.ndim != 2 or half_or_float(w) is None:
        raise TypeError(f"w must be a 2-D float array (K, M), got {type(w).__name__} "
                        f"{getattr(w, 'dtype', '')} {getattr(w, 'shape', '')}")
    dtypes.Precision("float32", fmt, group_size=checks.integer("group_size", group_size)).matrix_bytes(*w.shape)
    qw = QuantizedWeight.zeros(w.shape, fmt, group_size)
    quantize_into(w, qw)
    return qw


def half_or_float(a: np.ndarray) -> str | None:
    try:
        name = dtypes.name(a.dtype)
    except ValueError:
        return None
    return name if name in dtypes.ACTIVATION_FORMATS else None


def quantized_matmul(x: np.ndarray, w: QuantizedWeight, b: np.ndarray | None, out: np.ndarray) -> None:
    """out (N, M) = x (N, K) @ w (+ b), dequantizing inside the kernel; float32 accumulation, rounded once
    into `out` (float32, float64, bfloat16 or float16, as the model's activations)."""
    N, K = x.shape
    if w.shape[0] != K or out.shape != (N, w.shape[1]):
        raise ValueError(f"quantized_matmul: x {x.shape} @ w {w.shape} does not fit out {out.shape}")
    x32 = np.ascontiguousarray(widen(x), dtype=np.float32)
    out32 = out if out.dtype == np.float32 and out.flags.c_contiguous else np.empty(out.shape, np.float32)
    quantized_gemm(x32, w.values, w.scales, w.fmt, out32)
    if b is not None:
        out32 += widen(b)
    if out32 is not out:
        out[...] = out32
