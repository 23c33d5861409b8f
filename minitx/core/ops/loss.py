"""Cross-entropy of the logits against target ids, averaged over all B·T positions.

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


class LossCache(NamedTuple):
    logits: np.ndarray     # (N, V)
    targets: np.ndarray    # (N,)
    lse: np.ndarray        # (N,) log-sum-exp per row


@njit(cache=True, error_model="numpy")
def _xent_fwd(logits, targets, lse):
    N, V = logits.shape
    for i in range(N):
        row = logits[i]
        m = -np.inf
        for v in range(V):
            m = max(m, row[v])
        s = 0.0
        for v in range(V):
            s += np.exp(row[v] - m)
        lse[i] = m + np.log(s)
    total = 0.0
    for i in range(N):                  # the mean in a fixed order, so the loss is bit-reproducible
        total += lse[i] - logits[i, targets[i]]
    return total / N


@njit(cache=True, error_model="numpy")
def _xent_bwd(logits, targets, lse, dloss, dlogits):
    N, V = logits.shape
    scale = dloss / N            # every row's loss enters the mean with weight 1/N
    for i in range(N):
        for v in range(V):
            dlogits[i, v] = np.exp(logits[i, v] - lse[i]) * scale
        dlogits[i, targets[i]] -= scale


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, name: str) -> tuple[float, LossCache]:
    """logits (N, V), targets (N,) int64 -> mean loss (a float)."""
    N, V = logits.shape
    lse = np.empty(N, dtype=logits.dtype)
    loss = _xent_fwd(logits, targets, lse)
    if counting():
        per_logit, per_row = cv.CROSS_ENTROPY_FWD
        record(name, "loss", N * (per_logit * V + per_row), reads=(("activations", nbytes(logits, targets)),),
               writes=(("activations", nbytes(lse) + logits.itemsize),))  # the per-row lse and the scalar loss
    return float(loss), LossCache(logits, targets, lse)


def cross_entropy_backward(dloss: float, cache: LossCache, name: str) -> np.ndarray:
    """-> dlogits (N, V)."""
    logits = cache.logits
    N, V = logits.shape
    dlogits = np.empty_like(logits)
    _xent_bwd(logits, cache.targets, cache.lse, dloss, dlogits)
    if counting():
        per_logit, per_row = cv.CROSS_ENTROPY_BWD
        record(name, "loss", N * (per_logit * V + per_row),
               reads=(("activations", nbytes(logits, cache.targets, cache.lse)),),
               writes=(("activations", nbytes(dlogits)),))
    return dlogits
