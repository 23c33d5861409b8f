"""Normalisation: LayerNorm (GPT-2) and RMSNorm (Llama, with Gemma's (1 + w) variant).

LayerNorm   y = (x - mean(x)) / sqrt(var(x) + eps) * w + b        reference: torch.nn.LayerNorm
RMSNorm     y = x / sqrt(mean(x²) + eps) * w                       reference: LlamaRMSNorm (Gemma: * (1 + w))

Saves for backward: the input x (N, C) and per-row statistics: mean and rstd for LayerNorm, rstd for RMSNorm
(recomputing the normalised x in backward is cheaper than storing another (N, C) array).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..shaped import empty, is_shaped
from .half import call_f32, compute_dtype, widen


class NormCache(NamedTuple):
    # The input and N (or 2N) row statistics: the normalised x is recomputed from them in the backward, two
    # FLOPs per element, rather than stored as a second (N, C) array.
    x: np.ndarray             # (N, C) the input
    w_eff: np.ndarray         # (C,) the scale actually applied (w, or 1 + w for Gemma)
    mean: np.ndarray | None   # (N,) LayerNorm only
    rstd: np.ndarray          # (N,)
    kind: str
    unit_offset: bool


# ---- LayerNorm kernels ---------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _layernorm_fwd(x, w, b, eps, out, mean, rstd):
    # x (N, C), w (C,), b (C,), out (N, C), mean (N,), rstd (N,): each token's row normalised on its own.
    # The accumulators start as Python floats, so Numba sums in float64, even for a float32 model.
    N, C = x.shape
    for i in range(N):
        # pass 1: the mean
        m = 0.0
        for c in range(C):
            m += x[i, c]
        m = m / C
        # pass 2: the variance as the mean of squared deviations from that mean. A second pass, rather than
        # E[x²] − E[x]² in the first: when |mean| ≫ std that difference cancels catastrophically (it can even
        # come out negative). Divided by C, not C − 1: the biased variance, as torch.nn.LayerNorm uses.
        v = 0.0
        for c in range(C):
            d = x[i, c] - m
            v += d * d
        v = v / C
        # the reciprocal standard deviation, once per row, so the passes multiply instead of dividing; eps keeps
        # a constant row (v = 0) finite
        r = 1.0 / np.sqrt(v + eps)
        # pass 3: normalise, then scale and shift by the learned per-channel w and b
        for c in range(C):
            out[i, c] = (x[i, c] - m) * r * w[c] + b[c]
        # kept for the backward: two numbers per row, from which (x − mean)·rstd is recomputed
        mean[i] = m
        rstd[i] = r


@njit(cache=True, error_model="numpy")
def _layernorm_bwd(dout, x, w, mean, rstd, dres, dx, dw, db):
    # dout (N, C), x (N, C), w (C,), mean (N,), rstd (N,), dres (N, C) or (0, C) for none, dx (N, C) out,
    # dw and db (C,) out.
    # In the forward pass: norm = (x - mean) * rstd; y = norm * w + b. So dnorm = dout * w, and pushing dnorm
    # through the normalisation gives dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
    # Why the two means: x_k reaches norm_c directly (c = k) and through mean and rstd, which every c shares:
    #     ∂mean/∂x_k = 1/C,   ∂rstd/∂x_k = −rstd³ (x_k − mean) / C,   so
    #     ∂norm_c/∂x_k = rstd · (δ_ck − 1/C − norm_c · norm_k / C)
    #     dx_k = Σ_c dnorm_c ∂norm_c/∂x_k = rstd · (dnorm_k − mean(dnorm) − norm_k · mean(dnorm · norm))
    # Every dx_k needs both row-wide means, so they must be complete before any dx_k can be written: one pass
    # that accumulates both reductions, then one per-element pass. w and b are shared by all N rows (every
    # token), so their gradients are sums over the rows: zeroed here, then accumulated row by row.
    N, C = x.shape
    dw[:] = 0.0
    db[:] = 0.0
    has_res = dres.shape[0] == N
    for i in range(N):
        m, r = mean[i], rstd[i]
        # pass 1: the two reductions, Σ dnorm and Σ dnorm·norm, with norm recomputed from the saved statistics
        dnorm_mean = 0.0
        dnorm_norm_mean = 0.0
        for c in range(C):
            norm = (x[i, c] - m) * r
            dnorm = w[c] * dout[i, c]
            dnorm_mean += dnorm
            dnorm_norm_mean += dnorm * norm
        dnorm_mean = dnorm_mean / C
        dnorm_norm_mean = dnorm_norm_mean / C
        # pass 2: per element. norm and dnorm are recomputed, as llm.c does, rather than kept from pass 1 in a
        # C-long scratch row: 3 FLOPs per element. The same pass also accumulates the weight gradients:
        # y = norm·w + b, so db = Σ_rows dout and dw = Σ_rows dout·norm.
        for c in range(C):
            norm = (x[i, c] - m) * r
            dnorm = w[c] * dout[i, c]
            db[c] += dout[i, c]
            dw[c] += norm * dout[i, c]
            g = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r
            # the residual stream's own gradient joins here (llm.c's `dinp +=`): one add per element
            dx[i, c] = g + dres[i, c] if has_res else g


# ---- RMSNorm kernels -----------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _rmsnorm_fwd(x, w, eps, out, rstd):
    # x (N, C), w (C,) (already 1 + w for Gemma), out (N, C), rstd (N,).
    # LayerNorm without the centring: no mean to subtract and no bias, so one reduction instead of two.
    N, C = x.shape
    for i in range(N):
        # pass 1: the sum of squares (a float64 accumulator: a Python float, as in the LayerNorm)
        ss = 0.0
        for c in range(C):
            ss += x[i, c] * x[i, c]
        # 1 / root-mean-square, once per row; eps keeps an all-zero row finite
        r = 1.0 / np.sqrt(ss / C + eps)
        # pass 2: rescale each channel, then apply the learned per-channel gain
        for c in range(C):
            out[i, c] = x[i, c] * r * w[c]
        rstd[i] = r                         # the one statistic the backward needs


@njit(cache=True, error_model="numpy")
def _rmsnorm_bwd(dout, x, w, rstd, dres, dx, dw):
    # dout (N, C), x (N, C), w (C,), rstd (N,), dres (N, C) or (0, C) for none, dx (N, C) out, dw (C,) out.
    # Forward: y = x * r * w with r = (mean(x²) + eps)^(-1/2). Since dr/dx_j = -r³ x_j / C,
    # dx = r * (w * dout - norm * r * s / C) with norm = x * r and s = Σ_c dout·w·x.
    # In full: dx_k = Σ_c dout_c w_c ∂(x_c r)/∂x_k = dout_k w_k r + (Σ_c dout_c w_c x_c) · ∂r/∂x_k
    #                = r · (w_k dout_k − norm_k · r · s / C).
    # One row-wide reduction (s) is needed by every dx_k, so, as in the LayerNorm, a reduction pass comes first.
    N, C = x.shape
    dw[:] = 0.0                         # w is shared by every row: its gradient is a sum, accumulated below
    has_res = dres.shape[0] == N
    for i in range(N):
        r = rstd[i]
        # pass 1: s = Σ dout·w·x, how much the row's output gradient leans along x itself
        s = 0.0
        for c in range(C):
            s += dout[i, c] * w[c] * x[i, c]
        s = s / C                       # from here on s means s / C
        # pass 2: per element; y = norm·w, so dw = Σ_rows dout·norm
        for c in range(C):
            norm = x[i, c] * r
            dw[c] += dout[i, c] * norm
            g = r * (w[c] * dout[i, c] - norm * r * s)
            # the residual stream's gradient joins here, as in the LayerNorm
            dx[i, c] = g + dres[i, c] if has_res else g


# ---- the op pair ---------------------------------------------------------------------------------------------

def norm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, kind: str, eps: float,
                 unit_offset: bool, name: str) -> tuple[np.ndarray, NormCache]:
    """(N, C) -> (N, C). kind is "layernorm" (uses b) or "rmsnorm"; unit_offset applies Gemma's (1 + w)."""
    N, C = x.shape
    # Gemma stores w and applies 1 + w (so zero-initialised w means "no scaling"). Since ∂(1 + w)/∂w = 1, the
    # kernels treat w_eff as the weight, and the dw they write is also the gradient of the stored w.
    # A 16-bit model computes 1 + w in float32, as Hugging Face's Gemma does (1 + w rounded to 16 bits would
    # lose the small w's low bits), and runs the float32 kernel on widened rows (minitx.core.ops.half).
    real = not is_shaped(x, w)
    w_eff = ((1.0 + widen(w)).astype(compute_dtype(x.dtype)) if real else empty(w.shape, x.dtype, like=w)) \
        if unit_offset else w
    out = empty(x.shape, x.dtype, like=x)
    rstd = empty((N,), x.dtype, like=x)
    mean = empty((N,), x.dtype, like=x) if kind == "layernorm" else None
    if real and kind == "layernorm":
        call_f32(_layernorm_fwd, x, w_eff, b, eps, out, mean, rstd, outputs=(4, 5, 6))
    elif real:
        call_f32(_rmsnorm_fwd, x, w_eff, eps, out, rstd, outputs=(3, 4))
    if counting():
        per_elem, per_row = cv.LAYERNORM_FWD if kind == "layernorm" else cv.RMSNORM_FWD
        flops = N * (per_elem * C + per_row) + (cv.NORM_UNIT_OFFSET * C if unit_offset else 0)
        stats = nbytes(rstd) + (nbytes(mean) if mean is not None else 0)
        record(name, "norm", flops, reads=(("activations", nbytes(x)), ("weights", nbytes(w) + _nbytes(b))),
               writes=(("activations", nbytes(out) + stats),))
    return out, NormCache(x, w_eff, mean, rstd, kind, unit_offset)


def norm_backward(dout: np.ndarray, cache: NormCache, dw: np.ndarray, db: np.ndarray | None,
                  dresidual: np.ndarray | None, name: str) -> np.ndarray:
    """(N, C) -> dx (N, C); writes dw (and db). If `dresidual` is given (the gradient that reached this block's
    input along the skip connection), it is added to dx here, as llm.c's layernorm_backward does with `+=`."""
    x = cache.x
    N, C = x.shape
    dx = empty(x.shape, x.dtype, like=x)
    # "no residual" as an empty (0, C) array, not None: Numba compiles one signature per argument types
    dres = dresidual if dresidual is not None else np.empty((0, C), dtype=x.dtype)
    if is_shaped(x, dout):
        pass                              # by shape: nothing to compute, the cost is recorded below
    elif cache.kind == "layernorm":
        _layernorm_bwd(dout, x, cache.w_eff, cache.mean, cache.rstd, dres, dx, dw, db)
    else:
        _rmsnorm_bwd(dout, x, cache.w_eff, cache.rstd, dres, dx, dw)
    if counting():
        per_elem, per_row = cv.LAYERNORM_BWD if cache.kind == "layernorm" else cv.RMSNORM_BWD
        flops = N * (per_elem * C + per_row) + (cv.RESIDUAL_GRAD_ADD * N * C if dresidual is not None else 0)
        stats = nbytes(cache.rstd) + _nbytes(cache.mean)
        record(name, "norm", flops,
               reads=(("activations", nbytes(dout, x) + stats + _nbytes(dresidual)), ("weights", nbytes(cache.w_eff))),
               writes=(("activations", nbytes(dx)), ("gradients", nbytes(dw) + _nbytes(db))))
    return dx


def _nbytes(a: np.ndarray | None) -> int:
    return 0 if a is None else nbytes(a)
