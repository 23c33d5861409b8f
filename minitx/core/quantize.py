"""Weight-only quantization: a layer's (K, M) matrix stored as small integers and one float16 scale per group.

    w[k, m] ≈ q[k, m] · scale[k // g, m]        q an int8 in [-127, 127], or an int4 in [-7, 7]
    scale[i, m] = max |w[i·g:(i+1)·g, m]| / 127 (or / 7)      symmetric: no zero point

Each output column is split into groups of g consecutive inputs (g = 128 by default), each with its own scale, so
one large weight spoils the precision of only its own group. int4 packs two values to a byte along the outputs:
byte [k, j] holds q[k, 2j] in its low nibble and q[k, 2j + 1] in its high one (a row of M values takes ceil(M/2)
bytes). Stored bytes: K·M (int8) or K·ceil(M/2) (int4), plus 2·(K/g)·M of scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes
from .shaped import Shaped, shaped

QMAX = {"int8": 127, "int4": 7}


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A quantized (K, M) matrix: `values` int8 (K, M) or packed int4 uint8 (K, ceil(M/2)); `scales` float16
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

    @classmethod
    def shaped(cls, shape: tuple[int, int], fmt: str, group_size: int) -> "QuantizedWeight":
        """A data-less one, for shape-only models: the storage's shapes and dtypes, no memory."""
        K, M = shape
        cols = M if fmt == "int8" else -(-M // 2)
        return cls(shaped((K, cols), np.int8 if fmt == "int8" else np.uint8),
                   shaped((K // group_size, M), dtypes.SCALE_FORMAT), fmt, (K, M))

    @property
    def is_shaped(self) -> bool:
        return isinstance(self.values, Shaped)


def quantized_matmul(x: np.ndarray, w: QuantizedWeight, out: np.ndarray) -> None:
    """out (N, M) = x (N, K) @ w, dequantizing inside the kernel."""
    raise NotImplementedError("executing int8/int4 weights comes with minitx.quantize; shape-only models count them")
