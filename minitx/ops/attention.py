"""Causal self-attention, as five ops that each record their cost:

    split   qkv (B, T, (NH+2KV)·HS) -> q (B, NH, T, HS), k and v written at rows `pos` of (B, KV, S, HS)
            (rope: the same copy, rotating q and k by their positions on the way: HF's rotate-half convention)
    scores  s = q kᵀ                        (B, NH, T, S)   a matmul over the full T × S rectangle
    softmax p = softmax(s / √HS), causal    (B, NH, T, S)   visits only keys at positions ≤ the query's
    mix     o = p v                         (B, NH, T, HS)  a matmul over the full rectangle
    merge   o -> (B, T, NH·HS)                              heads side by side again, for the output projection

Attention is the only op that mixes information across positions. In training, S = T and `pos` is 0..T-1. With a
KV cache (prefill, decode), k and v go into the cache at each sequence's own positions and the scores read the
cache's first S rows, so one code path serves all three phases.

Grouped-query attention: query head h uses key/value head h // G. Viewing q as (B, KV, G·T, HS) makes every
group one matmul against its shared k, and the backward's dk = dsᵀ q sums the group's contributions for free.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .. import conventions as cv
from ..counting import counting, nbytes, record


class SplitCache(NamedTuple):
    pos: np.ndarray              # (B, T)
    cos: np.ndarray | None       # (P, HS/2) RoPE tables, or None
    sin: np.ndarray | None
    n_heads: int
    n_kv_heads: int


class ScoresCache(NamedTuple):
    q: np.ndarray                # (B, NH, T, HS)
    k: np.ndarray                # (B, KV, S, HS)


class SoftmaxCache(NamedTuple):
    probs: np.ndarray            # (B, NH, T, S)
    pos: np.ndarray              # (B, T)
    scale: float


class MixCache(NamedTuple):
    probs: np.ndarray
    v: np.ndarray                # (B, KV, S, HS)


# ---- split heads (+ RoPE) ------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _split_fwd(qkv, pos, cos, sin, NH, KV, q, k_dst, v_dst):
    B, T, _ = qkv.shape
    HS = q.shape[3]
    half = HS // 2
    rope = cos.shape[0] > 0
    for b in range(B):
        for t in range(T):
            p = pos[b, t]
            for h in range(NH + KV):
                base = h * HS
                dst = q[b, h, t] if h < NH else k_dst[b, h - NH, p]
                if rope:
                    for j in range(half):
                        x1, x2 = qkv[b, t, base + j], qkv[b, t, base + half + j]
                        c, s = cos[p, j], sin[p, j]
                        dst[j] = x1 * c - x2 * s
                        dst[half + j] = x2 * c + x1 * s
                else:
                    for j in range(HS):
                        dst[j] = qkv[b, t, base + j]
            vbase = (NH + KV) * HS
            for h in range(KV):
                for j in range(HS):
                    v_dst[b, h, p, j] = qkv[b, t, vbase + h * HS + j]


@njit(cache=True, error_model="numpy")
def _split_bwd(dq, dk, dv, pos, cos, sin, dqkv):
    # The forward rotated (x1, x2) by +angle; the gradient rotates (dy1, dy2) back by -angle.
    B, NH, T, HS = dq.shape
    KV = dk.shape[1]
    half = HS // 2
    rope = cos.shape[0] > 0
    for b in range(B):
        for t in range(T):
            p = pos[b, t]
            for h in range(NH + KV):
                base = h * HS
                src = dq[b, h, t] if h < NH else dk[b, h - NH, p]
                if rope:
                    for j in range(half):
                        d1, d2 = src[j], src[half + j]
                        c, s = cos[p, j], sin[p, j]
                        dqkv[b, t, base + j] = d1 * c + d2 * s
                        dqkv[b, t, base + half + j] = d2 * c - d1 * s
                else:
                    for j in range(HS):
                        dqkv[b, t, base + j] = src[j]
            vbase = (NH + KV) * HS
            for h in range(KV):
                for j in range(HS):
                    dqkv[b, t, vbase + h * HS + j] = dv[b, h, p, j]


def split_forward(qkv: np.ndarray, pos: np.ndarray, n_heads: int, n_kv_heads: int, cos: np.ndarray | None,
                  sin: np.ndarray | None, k_dst: np.ndarray, v_dst: np.ndarray, name: str,
                  kv_category: str = "activations") -> tuple[np.ndarray, SplitCache]:
    """qkv (B, T, (NH+2KV)·HS) -> q (B, NH, T, HS); writes k, v into rows pos[b, t] of k_dst, v_dst (B, KV, S, HS)."""
    B, T, _ = qkv.shape
    HS = k_dst.shape[3]
    q = np.empty((B, n_heads, T, HS), dtype=qkv.dtype)
    empty = np.empty((0, HS // 2), dtype=qkv.dtype)
    rope = cos is not None
    _split_fwd(qkv, pos, cos if rope else empty, sin if rope else empty, n_heads, n_kv_heads, q, k_dst, v_dst)
    if counting():
        kv_written = 2 * B * T * n_kv_heads * HS * qkv.itemsize       # one k row and one v row per token
        flops = cv.ROPE * B * T * (n_heads + n_kv_heads) * HS if rope else 0
        tables = 2 * B * T * (HS // 2) * qkv.itemsize if rope else 0   # one cos row and one sin row per token
        record(name, "rope" if rope else "layout", flops,
               reads=(("activations", nbytes(qkv, pos)), ("weights", tables)),
               writes=(("activations", nbytes(q)), (kv_category, kv_written)))
    return q, SplitCache(pos, cos, sin, n_heads, n_kv_heads)


def split_backward(dq: np.ndarray, dk: np.ndarray, dv: np.ndarray, cache: SplitCache, name: str) -> np.ndarray:
    """dq (B, NH, T, HS), dk and dv (B, KV, T, HS) -> dqkv (B, T, (NH+2KV)·HS)."""
    B, NH, T, HS = dq.shape
    KV = dk.shape[1]
    dqkv = np.empty((B, T, (NH + 2 * KV) * HS), dtype=dq.dtype)
    rope = cache.cos is not None
    empty = np.empty((0, HS // 2), dtype=dq.dtype)
    _split_bwd(dq, dk, dv, cache.pos, cache.cos if rope else empty, cache.sin if rope else empty, dqkv)
    if counting():
        flops = cv.ROPE * B * T * (NH + KV) * HS if rope else 0
        tables = 2 * B * T * (HS // 2) * dq.itemsize if rope else 0
        record(name, "rope" if rope else "layout", flops,
               reads=(("activations", nbytes(dq, dk, dv, cache.pos)), ("weights", tables)),
               writes=(("activations", nbytes(dqkv)),))
    return dqkv


# ---- scores = q kᵀ -------------------------------------------------------------------------------------------

def _grouped(x: np.ndarray, n_kv_heads: int) -> np.ndarray:
    """(B, NH, T, X) -> (B, KV, G·T, X): a free view, each key/value head's group of queries in one block."""
    B, NH, T, X = x.shape
    return x.reshape(B, n_kv_heads, (NH // n_kv_heads) * T, X)


def scores_forward(q: np.ndarray, k: np.ndarray, name: str,
                   kv_category: str = "activations") -> tuple[np.ndarray, ScoresCache]:
    """q (B, NH, T, HS), k (B, KV, S, HS) -> scores (B, NH, T, S), unscaled (the softmax scales)."""
    B, NH, T, HS = q.shape
    KV, S = k.shape[1], k.shape[2]
    scores = np.matmul(_grouped(q, KV), k.transpose(0, 1, 3, 2)).reshape(B, NH, T, S)
    if counting():
        macs = B * NH * T * S * HS
        record(name, "attention", 2 * macs, macs, reads=(("activations", nbytes(q)), (kv_category, nbytes(k))),
               writes=(("activations", nbytes(scores)),))
    return scores, ScoresCache(q, k)


def scores_backward(dscores: np.ndarray, cache: ScoresCache, name: str) -> tuple[np.ndarray, np.ndarray]:
    """dscores (B, NH, T, S) -> dq (B, NH, T, HS), dk (B, KV, S, HS)."""
    q, k = cache.q, cache.k
    B, NH, T, HS = q.shape
    KV, S = k.shape[1], k.shape[2]
    ds = _grouped(dscores, KV)                              # (B, KV, G·T, S)
    dq = np.matmul(ds, k).reshape(B, NH, T, HS)             # (B, KV, G·T, S) @ (B, KV, S, HS)
    dk = np.matmul(ds.transpose(0, 1, 3, 2), _grouped(q, KV))  # (B, KV, S, G·T) @ (B, KV, G·T, HS): sums the group
    if counting():
        macs = 2 * B * NH * T * S * HS
        record(name, "attention", 2 * macs, macs, reads=(("activations", nbytes(dscores, q, k)),),
               writes=(("activations", nbytes(dq, dk)),))
    return dq, dk


# ---- causal softmax ------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _softmax_fwd(scores, pos, scale, probs):
    B, NH, T, S = scores.shape
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(pos[b, t] + 1, S)           # keys this query may see: positions 0..pos
                row, out = scores[b, h, t], probs[b, h, t]
                m = -np.inf
                for j in range(n):
                    m = max(m, row[j] * scale)
                total = 0.0
                for j in range(n):
                    e = np.exp(row[j] * scale - m)
                    total += e
                    out[j] = e
                inv = 1.0 / total
                for j in range(n):
                    out[j] *= inv
                for j in range(n, S):
                    out[j] = 0.0                    # masked: exactly zero weight, not a tiny one


@njit(cache=True, error_model="numpy")
def _softmax_bwd(dprobs, probs, pos, scale, dscores):
    # Forward: p_j = exp(a_j) / Σ exp(a), a_j = scale·s_j. So ds_j = scale · p_j (dp_j − Σ_k p_k dp_k).
    B, NH, T, S = probs.shape
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(pos[b, t] + 1, S)
                p, dp, ds = probs[b, h, t], dprobs[b, h, t], dscores[b, h, t]
                dot = 0.0
                for j in range(n):
                    dot += p[j] * dp[j]
                for j in range(n):
                    ds[j] = scale * p[j] * (dp[j] - dot)
                for j in range(n, S):
                    ds[j] = 0.0


def _visible(pos: np.ndarray, n_heads: int, S: int) -> int:
    """(query, key) pairs the causal loops visit: Σ over queries of min(pos + 1, S), for every head."""
    return int(np.minimum(pos + 1, S).sum()) * n_heads


def softmax_forward(scores: np.ndarray, pos: np.ndarray, scale: float,
                    name: str) -> tuple[np.ndarray, SoftmaxCache]:
    """scores (B, NH, T, S), pos (B, T) -> probs (B, NH, T, S): row (b, ·, t) sees keys 0..pos[b, t].
    `scale` is 1/√HS: dot products of HS-dimensional vectors grow like √HS, and would saturate the softmax."""
    B, NH, T, S = scores.shape
    probs = np.empty_like(scores)
    _softmax_fwd(scores, pos, scale, probs)
    if counting():
        per_entry, per_row = cv.SOFTMAX_FWD
        record(name, "softmax", per_entry * _visible(pos, NH, S) + per_row * B * NH * T,
               reads=(("activations", nbytes(scores, pos)),), writes=(("activations", nbytes(probs)),))
    return probs, SoftmaxCache(probs, pos, scale)


def softmax_backward(dprobs: np.ndarray, cache: SoftmaxCache, name: str) -> np.ndarray:
    """dprobs (B, NH, T, S) -> dscores (B, NH, T, S)."""
    dscores = np.empty_like(dprobs)
    _softmax_bwd(dprobs, cache.probs, cache.pos, cache.scale, dscores)
    if counting():
        B, NH, T, S = dprobs.shape
        per_entry, per_row = cv.SOFTMAX_BWD
        record(name, "softmax", per_entry * _visible(cache.pos, NH, S) + per_row * B * NH * T,
               reads=(("activations", nbytes(dprobs, cache.probs, cache.pos)),),
               writes=(("activations", nbytes(dscores)),))
    return dscores


# ---- mix = p v -----------------------------------------------------------------------------------------------

def mix_forward(probs: np.ndarray, v: np.ndarray, name: str,
                kv_category: str = "activations") -> tuple[np.ndarray, MixCache]:
    """probs (B, NH, T, S), v (B, KV, S, HS) -> out (B, NH, T, HS): each query's weighted average of values."""
    B, NH, T, S = probs.shape
    KV, HS = v.shape[1], v.shape[3]
    out = np.matmul(_grouped(probs, KV), v).reshape(B, NH, T, HS)
    if counting():
        macs = B * NH * T * S * HS
        record(name, "attention", 2 * macs, macs, reads=(("activations", nbytes(probs)), (kv_category, nbytes(v))),
               writes=(("activations", nbytes(out)),))
    return out, MixCache(probs, v)


def mix_backward(dout: np.ndarray, cache: MixCache, name: str) -> tuple[np.ndarray, np.ndarray]:
    """dout (B, NH, T, HS) -> dprobs (B, NH, T, S), dv (B, KV, S, HS)."""
    probs, v = cache.probs, cache.v
    B, NH, T, S = probs.shape
    KV, HS = v.shape[1], v.shape[3]
    d = _grouped(dout, KV)                                           # (B, KV, G·T, HS)
    dprobs = np.matmul(d, v.transpose(0, 1, 3, 2)).reshape(B, NH, T, S)
    dv = np.matmul(_grouped(probs, KV).transpose(0, 1, 3, 2), d)     # (B, KV, S, G·T) @ (B, KV, G·T, HS)
    if counting():
        macs = 2 * B * NH * T * S * HS
        record(name, "attention", 2 * macs, macs, reads=(("activations", nbytes(dout, probs, v)),),
               writes=(("activations", nbytes(dprobs, dv)),))
    return dprobs, dv


# ---- merge heads ---------------------------------------------------------------------------------------------

def merge_forward(o: np.ndarray, name: str) -> np.ndarray:
    """(B, NH, T, HS) -> (B, T, NH·HS): a copy, because the output projection wants each token's heads adjacent."""
    B, NH, T, HS = o.shape
    out = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(B, T, NH * HS)
    if counting():
        record(name, "layout", 0, reads=(("activations", nbytes(o)),), writes=(("activations", nbytes(out)),))
    return out


def merge_backward(dout: np.ndarray, n_heads: int, name: str) -> np.ndarray:
    """(B, T, NH·HS) -> (B, NH, T, HS)."""
    B, T, D = dout.shape
    d = np.ascontiguousarray(dout.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3))
    if counting():
        record(name, "layout", 0, reads=(("activations", nbytes(dout)),), writes=(("activations", nbytes(d)),))
    return d


def rope_tables(max_pos: int, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pos · θ^(−2j/HS) for pos < max_pos, j < HS/2: (max_pos, HS/2) each, as HF computes them
    (inverse frequencies and angles in float32, then cos/sin cast to the model's dtype)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    angles = np.arange(max_pos, dtype=np.float32)[:, None] * inv_freq[None, :].astype(np.float32)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
