"""Cross-entropy of the logits against target ids, averaged over all N rows (the B·T positions of a batch).

loss = mean over rows of ( log Σ_v exp(logits_v) − logits_target )

Computed stably as lse = max + log Σ exp(x − max). Saves the per-row log-sum-exp (N,), so the backward,
dlogits = (softmax(logits) − onehot(target)) / N, recomputes each probability with one exp and no new pass
for the max. Targets are validated by the caller.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..shaped import empty, is_shaped


class LossCache(NamedTuple):
    # No probabilities: they would be a second (N, V) array, the widest activation of the model (V ≫ C).
    # N log-sum-exps are enough to rebuild any probability with one exp.
    logits: np.ndarray     # (N, V)
    targets: np.ndarray    # (N,)
    lse: np.ndarray        # (N,) log-sum-exp per row


@njit(cache=True, error_model="numpy")
def _xent_fwd(logits, targets, lse):
    # logits (N, V), targets (N,) ids in [0, V), lse (N,) out; returns the mean loss.
    # loss_i = −log p_i[target] = −log(exp(x_t) / Σ_v exp(x_v)) = lse_i − x_t: no softmax needs to be written
    # out, only one log-sum-exp per row.
    N, V = logits.shape
    for i in range(N):
        row = logits[i]
        # pass 1: the row's max, so that no exp below can overflow (see _softmax_fwd: the same trick)
        m = -np.inf
        for v in range(V):
            m = max(m, row[v])
        # pass 2: Σ exp(x − m) ≥ 1 (the max's own term is 1), so the log is finite. s starts as a Python float:
        # Numba sums the V terms in float64, and lse is rounded to the logits' dtype only when stored.
        s = 0.0
        for v in range(V):
            s += np.exp(row[v] - m)
        # log Σ exp(x) = m + log Σ exp(x − m): the shift is undone outside the log
        lse[i] = m + np.log(s)
    total = 0.0
    for i in range(N):                  # the mean in a fixed order, so the loss is bit-reproducible
        total += lse[i] - logits[i, targets[i]]
    return total / N


@njit(cache=True, error_model="numpy")
def _xent_bwd(logits, targets, lse, dloss, dlogits):
    # logits (N, V), targets (N,), lse (N,) from the forward, dloss the upstream gradient (1.0), dlogits (N, V) out.
    # in the forward pass this was:  loss = (1/N) Σ_i (lse_i − x_i,t_i),   lse_i = log Σ_v exp(x_i,v)
    # so now we have:                ∂lse_i/∂x_i,v = exp(x_i,v) / Σ exp(x_i) = exp(x_i,v − lse_i) = p_i,v
    #                                dx_i,v = dloss/N · (p_i,v − [v = t_i])
    # The probability is rebuilt from the saved lse with one subtract and one exp: no max pass, no sum pass,
    # and no stored (N, V) probabilities (see LossCache).
    N, V = logits.shape
    scale = dloss / N            # every row's loss enters the mean with weight 1/N
    for i in range(N):
        # pass 1: p·scale for every logit, the target included, with no branch in the loop ...
        for v in range(V):
            dlogits[i, v] = np.exp(logits[i, v] - lse[i]) * scale
        # ... then the one-hot part, at the target only: −1 times the same scale
        dlogits[i, targets[i]] -= scale


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, name: str) -> tuple[float, LossCache]:
    """logits (N, V), targets (N,) int64 -> mean loss (a float)."""
    N, V = logits.shape
    lse = empty((N,), logits.dtype, like=logits)   # N numbers: all the backward needs besides the logits
    loss = float("nan") if is_shaped(logits) else _xent_fwd(logits, targets, lse)   # by shape: no value
    if counting():
        per_logit, per_row = cv.CROSS_ENTROPY_FWD
        record(name, "loss", N * (per_logit * V + per_row), reads=(("activations", nbytes(logits, targets)),),
               writes=(("activations", nbytes(lse) + logits.itemsize),))  # the per-row lse and the scalar loss
    return float(loss), LossCache(logits, targets, lse)


def cross_entropy_backward(dloss: float, cache: LossCache, name: str) -> np.ndarray:
    """-> dlogits (N, V)."""
    logits = cache.logits
    N, V = logits.shape
    dlogits = empty(logits.shape, logits.dtype, like=logits)
    if not is_shaped(logits):
        _xent_bwd(logits, cache.targets, cache.lse, dloss, dlogits)
    if counting():
        per_logit, per_row = cv.CROSS_ENTROPY_BWD
        record(name, "loss", N * (per_logit * V + per_row),
               reads=(("activations", nbytes(logits, cache.targets, cache.lse)),),
               writes=(("activations", nbytes(dlogits)),))
    return dlogits
