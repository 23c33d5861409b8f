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

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..batch import Block, TokenBatch


class SplitCache(NamedTuple):
    batch: TokenBatch            # the blocks (which rows go where) and the positions
    cos: np.ndarray | None       # (P, HS/2) RoPE tables, or None
    sin: np.ndarray | None
    n_heads: int


class HeadMatmulCache(NamedTuple):
    """What the scores (q kᵀ) and the mix (p v) keep: both operands."""
    a: np.ndarray                # (B, NH, T, X) one row per query: q (X = HS) or probs (X = S)
    kv: np.ndarray               # (B, KV, S, HS) shared by a group of query heads: k or v
    transposed: bool             # True for the scores (a @ kᵀ), False for the mix (a @ v)


class SoftmaxCache(NamedTuple):
    probs: np.ndarray            # (B, NH, T, S)
    pos: np.ndarray              # (B, T)
    scale: float


# ---- split heads (+ RoPE) ------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _split_fwd(qkv, pos, blocks, cos, sin, NH, KV, q, k_pool, v_pool, table):
    # One pass over the tokens, block by block (see minitx.core.batch). Token r is sequence bi's token ti of its
    # block, at position p. Its query goes to q laid out as the block's (b, NH, n, HS) array; its key and value
    # to row `row`, column `col` of the KV pools (R, KV, X, HS): with X positions per row, position p lives in
    # the slot's block table entry p // X, at p % X (a contiguous cache has one row per slot: row = slot, col = p).
    # RoPE rotates each (x_j, x_{j+HS/2}) pair of q and k by the angle pos·θ_j on the way; v is copied as is.
    HS = k_pool.shape[3]
    X = k_pool.shape[2]
    half = HS // 2
    rope = cos.shape[0] > 0
    for blk in range(blocks.shape[0]):
        start, slot, b, n = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3]
        for bi in range(b):
            for ti in range(n):
                r = start + bi * n + ti
                p = pos[r]
                row, col = table[slot + bi, p // X], p % X
                qbase = start * NH * HS + (bi * NH * n + ti) * HS      # q[bi, h, ti, :] of the block's array
                for h in range(NH + KV):
                    base = h * HS
                    if h < NH:
                        dst = q[qbase + h * n * HS: qbase + h * n * HS + HS]
                    else:
                        dst = k_pool[row, h - NH, col]
                    if rope:
                        for j in range(half):
                            x1, x2 = qkv[r, base + j], qkv[r, base + half + j]
                            c, s = cos[p, j], sin[p, j]
                            dst[j] = x1 * c - x2 * s
                            dst[half + j] = x2 * c + x1 * s
                    else:
                        for j in range(HS):
                            dst[j] = qkv[r, base + j]
                vbase = (NH + KV) * HS
                for h in range(KV):
                    for j in range(HS):
                        v_pool[row, h, col, j] = qkv[r, vbase + h * HS + j]


@njit(cache=True, error_model="numpy")
def _split_bwd(dq, dk_pool, dv_pool, pos, blocks, cos, sin, NH, table, dqkv):
    # The forward, reversed: gather each token's dq, dk, dv back from where the forward scattered q, k, v.
    # The forward rotated (x1, x2) by +angle; the gradient rotates (dy1, dy2) back by -angle.
    HS = dk_pool.shape[3]
    KV = dk_pool.shape[1]
    X = dk_pool.shape[2]
    half = HS // 2
    rope = cos.shape[0] > 0
    for blk in range(blocks.shape[0]):
        start, slot, b, n = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3]
        for bi in range(b):
            for ti in range(n):
                r = start + bi * n + ti
                p = pos[r]
                row, col = table[slot + bi, p // X], p % X
                qbase = start * NH * HS + (bi * NH * n + ti) * HS
                for h in range(NH + KV):
                    base = h * HS
                    if h < NH:
                        src = dq[qbase + h * n * HS: qbase + h * n * HS + HS]
                    else:
                        src = dk_pool[row, h - NH, col]
                    if rope:
                        for j in range(half):
                            d1, d2 = src[j], src[half + j]
                            c, s = cos[p, j], sin[p, j]
                            dqkv[r, base + j] = d1 * c + d2 * s
                            dqkv[r, base + half + j] = d2 * c - d1 * s
                    else:
                        for j in range(HS):
                            dqkv[r, base + j] = src[j]
                vbase = (NH + KV) * HS
                for h in range(KV):
                    for j in range(HS):
                        dqkv[r, vbase + h * HS + j] = dv_pool[row, h, col, j]


def split_forward(qkv: np.ndarray, batch: TokenBatch, n_heads: int, cos: np.ndarray | None,
                  sin: np.ndarray | None, k_pool: np.ndarray, v_pool: np.ndarray, table: np.ndarray, name: str,
                  kv_category: str = "activations") -> tuple[np.ndarray, SplitCache]:
    """qkv (N, (NH+2KV)·HS) -> q (N·NH·HS,), each block's queries a (b, NH, n, HS) array (block_queries);
    writes each token's k and v into the pools (R, KV, X, HS) where the block table puts its position."""
    N = qkv.shape[0]
    KV, HS = k_pool.shape[1], k_pool.shape[3]
    q = np.empty(N * n_heads * HS, dtype=qkv.dtype)
    empty = np.empty((0, HS // 2), dtype=qkv.dtype)
    rope = cos is not None
    _split_fwd(qkv, batch.pos, batch.block_array, cos if rope else empty, sin if rope else empty, n_heads, KV, q,
               k_pool, v_pool, table)
    if counting():
        kv_written = 2 * N * KV * HS * qkv.itemsize                   # one k row and one v row per token
        flops = cv.ROPE * N * (n_heads + KV) * HS if rope else 0
        tables = 2 * N * (HS // 2) * qkv.itemsize if rope else 0      # one cos row and one sin row per token
        record(name, "rope" if rope else "layout", flops,
               reads=(("activations", nbytes(qkv, batch.pos)), ("weights", tables)),
               writes=(("activations", nbytes(q)), (kv_category, kv_written)))
    return q, SplitCache(batch, cos, sin, n_heads)


def split_backward(dq: np.ndarray, dk: np.ndarray, dv: np.ndarray, cache: SplitCache, name: str) -> np.ndarray:
    """dq (queries, as split_forward returned them), dk and dv (B, KV, T, HS) -> dqkv (N, (NH+2KV)·HS).
    Training's keys and values live in a throwaway store with one row per sequence: slot b is row b."""
    batch, NH = cache.batch, cache.n_heads
    N = batch.n_tokens
    KV, HS = dk.shape[1], dk.shape[3]
    dqkv = np.empty((N, (NH + 2 * KV) * HS), dtype=dq.dtype)
    rope = cache.cos is not None
    empty = np.empty((0, HS // 2), dtype=dq.dtype)
    table = np.arange(dk.shape[0], dtype=np.int64)[:, None]
    _split_bwd(dq.reshape(-1), dk, dv, batch.pos, batch.block_array, cache.cos if rope else empty,
               cache.sin if rope else empty, NH, table, dqkv)
    if counting():
        flops = cv.ROPE * N * (NH + KV) * HS if rope else 0
        tables = 2 * N * (HS // 2) * dq.itemsize if rope else 0
        record(name, "rope" if rope else "layout", flops,
               reads=(("activations", nbytes(dq, dk, dv, batch.pos)), ("weights", tables)),
               writes=(("activations", nbytes(dqkv)),))
    return dqkv


def block_queries(q: np.ndarray, blk: Block, n_heads: int, head_dim: int) -> np.ndarray:
    """A block's queries, (b, NH, n, HS): a view of split_forward's output."""
    width = n_heads * head_dim
    return q[blk.start * width:(blk.start + blk.b * blk.n) * width].reshape(blk.b, n_heads, blk.n, head_dim)


# ---- scores = q kᵀ and mix = p v: one matmul per key/value head ----------------------------------------------

def _grouped(x: np.ndarray, n_kv_heads: int) -> np.ndarray:
    """(B, NH, T, X) -> (B, KV, G·T, X): a free view, each key/value head's group of queries in one block."""
    B, NH, T, X = x.shape
    return x.reshape(B, n_kv_heads, (NH // n_kv_heads) * T, X)


def _head_matmul_forward(a: np.ndarray, kv: np.ndarray, transposed: bool, name: str,
                         kv_category: str) -> tuple[np.ndarray, HeadMatmulCache]:
    """a (B, NH, T, X) @ kvᵀ (X = HS) or @ kv (X = S), per key/value head -> (B, NH, T, S or HS).
    One BLAS matmul per (sequence, kv head) over the full T × S rectangle: B·NH·T·S·HS multiply-adds."""
    B, NH, T, _ = a.shape
    KV, S, HS = kv.shape[1:]
    out = np.matmul(_grouped(a, KV), kv.transpose(0, 1, 3, 2) if transposed else kv).reshape(B, NH, T, -1)
    if counting():
        macs = B * NH * T * S * HS
        record(name, "attention", 2 * macs, macs, reads=(("activations", nbytes(a)), (kv_category, nbytes(kv))),
               writes=(("activations", nbytes(out)),))
    return out, HeadMatmulCache(a, kv, transposed)


def _head_matmul_backward(dout: np.ndarray, cache: HeadMatmulCache, name: str) -> tuple[np.ndarray, np.ndarray]:
    """dout shaped like the forward's output -> (da, dkv), shaped like a and kv. Two matmuls, each the forward's
    size. The group's queries share one kv head, so dkv = Σ over the group: the (G·T)-long inner dimension of
    the second matmul sums it for free."""
    a, kv = cache.a, cache.kv
    B, NH, T, _ = a.shape
    KV, S, HS = kv.shape[1:]
    d = _grouped(dout, KV)                                            # (B, KV, G·T, S or HS)
    if cache.transposed:      # out = a kᵀ: da = dout k, dk = doutᵀ a
        da, dkv = np.matmul(d, kv), np.matmul(d.transpose(0, 1, 3, 2), _grouped(a, KV))
    else:                     # out = a v:  da = dout vᵀ, dv = aᵀ dout
        da, dkv = np.matmul(d, kv.transpose(0, 1, 3, 2)), np.matmul(_grouped(a, KV).transpose(0, 1, 3, 2), d)
    da = da.reshape(a.shape)
    if counting():
        macs = 2 * B * NH * T * S * HS
        record(name, "attention", 2 * macs, macs, reads=(("activations", nbytes(dout, a, kv)),),
               writes=(("activations", nbytes(da, dkv)),))
    return da, dkv


def scores_forward(q: np.ndarray, k: np.ndarray, name: str,
                   kv_category: str = "activations") -> tuple[np.ndarray, HeadMatmulCache]:
    """q (B, NH, T, HS), k (B, KV, S, HS) -> scores q kᵀ (B, NH, T, S), unscaled (the softmax scales)."""
    return _head_matmul_forward(q, k, True, name, kv_category)


def scores_backward(dscores: np.ndarray, cache: HeadMatmulCache, name: str) -> tuple[np.ndarray, np.ndarray]:
    """dscores (B, NH, T, S) -> dq (B, NH, T, HS), dk (B, KV, S, HS)."""
    return _head_matmul_backward(dscores, cache, name)


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


# ---- mix = p v ------------------------------------------------------------------------------------------------

def mix_forward(probs: np.ndarray, v: np.ndarray, name: str,
                kv_category: str = "activations") -> tuple[np.ndarray, HeadMatmulCache]:
    """probs (B, NH, T, S), v (B, KV, S, HS) -> out (B, NH, T, HS): each query's weighted average of values."""
    return _head_matmul_forward(probs, v, False, name, kv_category)


def mix_backward(dout: np.ndarray, cache: HeadMatmulCache, name: str) -> tuple[np.ndarray, np.ndarray]:
    """dout (B, NH, T, HS) -> dprobs (B, NH, T, S), dv (B, KV, S, HS)."""
    return _head_matmul_backward(dout, cache, name)


# ---- merge heads ---------------------------------------------------------------------------------------------

def merge_forward(o: np.ndarray, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """(B, NH, T, HS) -> (B·T, NH·HS): a copy, because the output projection wants each token's heads side by
    side. Written into `out` (rows of a larger batch) when given."""
    B, NH, T, HS = o.shape
    if out is None:
        out = np.empty((B * T, NH * HS), dtype=o.dtype)
    np.copyto(out.reshape(B, T, NH, HS), o.transpose(0, 2, 1, 3))
    if counting():
        record(name, "layout", 0, reads=(("activations", nbytes(o)),), writes=(("activations", nbytes(out)),))
    return out


def merge_backward(dout: np.ndarray, blk: Block, n_heads: int, name: str) -> np.ndarray:
    """(B·T, NH·HS) -> (B, NH, T, HS) for a block of B sequences of T tokens."""
    D = dout.shape[1]
    d = np.ascontiguousarray(dout.reshape(blk.b, blk.n, n_heads, D // n_heads).transpose(0, 2, 1, 3))
    if counting():
        record(name, "layout", 0, reads=(("activations", nbytes(dout)),), writes=(("activations", nbytes(d)),))
    return d


def rope_tables(max_pos: int, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pos · θ^(−2j/HS) for pos < max_pos, j < HS/2: (max_pos, HS/2) each, as HF computes them
    (inverse frequencies and angles in float32, then cos/sin cast to the model's dtype)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    angles = np.arange(max_pos, dtype=np.float32)[:, None] * inv_freq[None, :].astype(np.float32)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
