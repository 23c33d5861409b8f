"""Arrays with a shape and a dtype but no data: how a 70B model runs on a laptop, by shape.

    x = shaped((8192, 8192), "bfloat16")     a (8192, 8192) bfloat16 array that occupies 2 bytes
    x.size, x.nbytes                          67,108,864 and 134,217,728: what a real one would hold

A `Shaped` array is a NumPy view in which every element is one shared zero (every stride 0). Reshapes, transposes
and slices of it are Shaped too, with the right shapes. An op handed one skips its kernel and makes Shaped outputs
with `empty`, but records its cost exactly as for real arrays: the counters read only shapes and dtypes. So a
shape-only model (`Transformer(cfg, shape_only=True)`) runs the same op functions, in the same order, and its
counts are the counts of a real run, with nothing the size of a weight or an activation ever allocated.
"""
from __future__ import annotations

import numpy as np


class Shaped(np.ndarray):
    """A data-less array: see the module docstring. Its values are zeros and must not be relied on."""


def shaped(shape: tuple[int, ...], dtype) -> Shaped:
    """A Shaped array of this shape and dtype: one element of memory, whatever the shape."""
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(int(n) for n in shape)).view(Shaped)


def is_shaped(*arrays) -> bool:
    """True when any of the arrays is Shaped (then the op runs by shape: no kernel, Shaped outputs)."""
    for a in arrays:                 # a plain loop: called by every op, a generator costs more than the test
        if isinstance(a, Shaped):
            return True
    return False


def empty(shape: tuple[int, ...], dtype, like: np.ndarray) -> np.ndarray:
    """np.empty(shape, dtype), or a Shaped array when `like` is one: how every op allocates its output."""
    return shaped(shape, dtype) if isinstance(like, Shaped) else np.empty(shape, dtype=dtype)
