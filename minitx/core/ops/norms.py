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


class NormCache(NamedTuple):
    x: np.ndarray             # (N, C) the input
    w_eff: np.ndarray         # (C,) the scale actually applied (w, or 1 + w for Gemma)
    mean: np.ndarray | None   # (N,) LayerNorm only
    rstd: np.ndarray          # (N,)
    kind: str
    unit_offset: bool


# ---- LayerNorm kernels ---------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _layernorm_fwd(x, w, b, eps, out, mean, rstd):
    N, C = x.shape
    for i in range(N):
        m = 0.0
        for c in range(C):
            m += x[i, c]
        m = m / C
        v = 0.0
        for c in range(C):
            d = x[i, c] - m
            v += d * d
        v = v / C
        r = 1.0 / np.sqrt(v + eps)
        for c in range(C):
            out[i, c] = (x[i, c] - m) * r * w[c] + b[c]
        mean[i] = m
        rstd[i] = r


@njit(cache=True, error_model="numpy")
def _layernorm_bwd(dout, x, w, mean, rstd, dres, dx, dw, db):
    # In the forward pass: norm = (x - mean) * rstd; y = norm * w + b. So dnorm = dout * w, and pushing dnorm
    # through the normalisation gives dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
    N, C = x.shape
    dw[:] = 0.0
    db[:] = 0.0
    has_res = dres.shape[0] == N
    for i in range(N):
        m, r = mean[i], rstd[i]
        dnorm_mean = 0.0
        dnorm_norm_mean = 0.0
        for c in range(C):
            norm = (x[i, c] - m) * r
            dnorm = w[c] * dout[i, c]
            dnorm_mean += dnorm
            dnorm_norm_mean += dnorm * norm
        dnorm_mean = dnorm_mean / C
        dnorm_norm_mean = dnorm_norm_mean / C
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
    N, C = x.shape
    for i in range(N):
        ss = 0.0
        for c in range(C):
            ss += x[i, c] * x[i, c]
        r = 1.0 / np.sqrt(ss / C + eps)
        for c in range(C):
            out[i, c] = x[i, c] * r * w[c]
        rstd[i] = r


@njit(cache=True, error_model="numpy")
def _rmsnorm_bwd(dout, x, w, rstd, dres, dx, dw):
    # Forward: y = x * r * w with r = (mean(x²) + eps)^(-1/2). Since dr/dx_j = -r³ x_j / C,
    # dx = r * (w * dout - norm * r * s / C) with norm = x * r and s = Σ_c dout·w·x.
    N, C = x.shape
    dw[:] = 0.0
    has_res = dres.shape[0] == N
    for i in range(N):
        r = rstd[i]
        s = 0.0
        for c in range(C):
            s += dout[i, c] * w[c] * x[i, c]
        s = s / C
        for c in range(C):
            norm = x[i, c] * r
            dw[c] += dout[i, c] * norm
            g = r * (w[c] * dout[i, c] - norm * r * s)
            dx[i, c] = g + dres[i, c] if has_res else g


# ---- the op pair ---------------------------------------------------------------------------------------------

def norm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, kind: str, eps: float,
                 unit_offset: bool, name: str) -> tuple[np.ndarray, NormCache]:
    """(N, C) -> (N, C). kind is "layernorm" (uses b) or "rmsnorm"; unit_offset applies Gemma's (1 + w)."""
    N, C = x.shape
    w_eff = (1.0 + w).astype(x.dtype) if unit_offset else w
    out = np.empty_like(x)
    rstd = np.empty(N, dtype=x.dtype)
    mean = np.empty(N, dtype=x.dtype) if kind == "layernorm" else None
    if kind == "layernorm":
        _layernorm_fwd(x, w_eff, b, eps, out, mean, rstd)
    else:
        _rmsnorm_fwd(x, w_eff, eps, out, rstd)
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
    dx = np.empty_like(x)
    dres = dresidual if dresidual is not None else np.empty((0, C), dtype=x.dtype)
    if cache.kind == "layernorm":
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
