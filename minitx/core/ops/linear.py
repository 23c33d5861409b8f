"""Linear layers (matmul + optional bias) and the residual add.

linear   y = x @ w + b      x (N, K), w (K, M) stored (in, out) as GPT-2's Conv1D; or, for the LM head, w (M, K)
                            stored (out, in) as the embedding it is tied to: then y = x @ wᵀ.
residual y = x + f(x)       the skip connection. Its backward is the identity on both branches: the gradient
                            that arrives is passed on unchanged (the two paths are summed in the norm backward).

The matmuls run in BLAS through NumPy. A linear layer is the one place where training's "backward = 2 × forward"
comes from: dx = dy @ wᵀ and dw = xᵀ @ dy are each as large as y = x @ w.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..quantize import QuantizedWeight, quantized_matmul
from ..shaped import empty, is_shaped
from .half import is_half
from .half_linear import half_matmul


class LinearCache(NamedTuple):
    # The input, because dw = xᵀ dy needs it; the weight is a view of the parameters, kept, not copied.
    x: np.ndarray       # (N, K)
    w: np.ndarray       # the weight as stored
    has_bias: bool
    transposed: bool    # True when w is stored (out, in)


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, name: str,
                   transposed: bool = False) -> tuple[np.ndarray, LinearCache]:
    """(N, K) @ (K, M) [+ b (M,)] -> (N, M). With transposed=True, w is (M, K)."""
    # w.T is a free view: BLAS reads a transposed operand directly, so the tied LM head needs no (K, V) copy.
    # Every row is a token and tokens do not interact here, so N packed tokens are one matmul.
    quantized = isinstance(w, QuantizedWeight)
    (N, K), M = x.shape, (w.shape[0] if transposed else w.shape[1])
    out = empty((N, M), x.dtype, like=x)
    if not is_shaped(x):
        # Weights narrower than what the kernel computes in (int8/int4, bfloat16/float16) are widened inside
        # the kernel, one weight at a time, with the bias added in float32 before the one rounding into out.
        if quantized:
            quantized_matmul(x, w, b, out)  # dequantizes each weight once, inside the kernel (minitx.core.quantize)
        elif is_half(w):
            half_matmul(x, w, b, out, transposed)      # minitx.core.ops.half_linear
        else:
            np.matmul(x, w.T if transposed else w, out=out)
            if b is not None:
                out += b                # broadcast over the N rows, in place: no second (N, M) temporary
    if counting():
        macs = N * K * M
        bias = b is not None
        dequant = cv.DEQUANTIZE * K * M if quantized else 0    # scale × int, once per weight per call
        w_bytes = w.nbytes if quantized else nbytes(w)         # quantized: the packed values and their scales
        record(name, "matmul", 2 * macs + (cv.ELEMENTWISE * N * M if bias else 0) + dequant, macs,
               reads=(("activations", nbytes(x)), ("weights", w_bytes + (nbytes(b) if bias else 0))),
               writes=(("activations", nbytes(out)),))
    return out, LinearCache(x, w, b is not None, transposed)


def linear_backward(dout: np.ndarray, cache: LinearCache, dw: np.ndarray, db: np.ndarray | None,
                    name: str) -> np.ndarray:
    """dout (N, M) -> dx (N, K); writes dw (shaped like w) and db (M,). Two matmuls, each the size of the forward."""
    # in the forward pass this was:  y[n, m] = Σ_k x[n, k] w[k, m] + b[m]
    # so now we have:                dx[n, k] = Σ_m dy[n, m] w[k, m]   -> dx = dy wᵀ
    #                                dw[k, m] = Σ_n x[n, k] dy[n, m]   -> dw = xᵀ dy   (summed over the tokens)
    #                                db[m]    = Σ_n dy[n, m]
    # Stored (out, in), the forward was y = x wᵀ, and the same sums give dx = dy w and dw = dyᵀ x.
    x, w = cache.x, cache.w
    wm = w.T if cache.transposed else w     # the (K, M) matrix the forward multiplied by, as a view
    dx = empty(x.shape, x.dtype, like=x)
    if not is_shaped(x, dout):
        np.matmul(dout, wm.T, out=dx)       # (N, M) @ (M, K): the gradient that flows on to earlier layers
        # dw is written straight into the flat gradient buffer's view (out=): no temporary, no copy. It is
        # assigned, not added: a weight is used by one linear layer, except the tied wte, whose lookup share the
        # embedding backward adds afterwards.
        if cache.transposed:
            np.matmul(dout.T, x, out=dw)    # (M, N) @ (N, K) -> (M, K)
        else:
            np.matmul(x.T, dout, out=dw)    # (K, N) @ (N, M) -> (K, M)
        if cache.has_bias:
            np.sum(dout, axis=0, out=db)    # the bias was added to every row, so its gradient sums the rows
    if counting():
        (N, K), M = x.shape, dout.shape[1]
        macs = 2 * N * K * M
        bias = cache.has_bias
        record(name, "matmul", 2 * macs + (cv.ELEMENTWISE * N * M if bias else 0), macs,
               reads=(("activations", nbytes(dout, x)), ("weights", nbytes(w))),
               writes=(("activations", nbytes(dx)), ("gradients", nbytes(dw) + (nbytes(db) if bias else 0))))
    return dx


def residual_forward(x: np.ndarray, fx: np.ndarray, name: str) -> np.ndarray:
    """(N, C) + (N, C) -> (N, C)."""
    # A new array rather than x += fx: in training, x is still held by the next norm's cache for its backward.
    out = empty(x.shape, x.dtype, like=x)
    if not is_shaped(x, fx):
        np.add(x, fx, out=out)
    if counting():
        record(name, "elementwise", cv.ELEMENTWISE * out.size, reads=(("activations", nbytes(x, fx)),),
               writes=(("activations", nbytes(out)),))
    return out


def residual_backward(dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The skip connection copies its gradient to both branches: no arithmetic, nothing recorded."""
    # in the forward pass this was:  out = x + f(x)      so ∂out/∂x = ∂out/∂f = I
    # so now both branches receive dout itself. The same array, not two copies: both consumers only read it.
    return dout, dout
