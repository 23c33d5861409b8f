"""Causal self-attention over packed tokens, as five ops that each record their cost.

The model runs over a TokenBatch (minitx.core.batch): N tokens, one row each, grouped into attention Blocks of
b sequences × n tokens, all at positions p..p+n-1. Every other op treats the N rows alike; attention is the one
that must know which rows belong to which sequence, so it runs in two stages:

    split   qkv (N, (NH+2KV)·HS) -> q, a flat (N·NH·HS,) buffer laid out block by block, each block's queries a
            (b, NH, n, HS) array (block_queries views it); each token's k and v are written into the KV store's
            pools (R, KV, X, HS): position p of slot s at row table[s, (p // X) % rows], column p % X. A
            contiguous cache has one row per sequence slot (table[s] = [s], X = its max_len): row s, column p.
            (rope: the same copy, rotating q and k by their positions on the way: HF's rotate-half convention)
  then, block by block (Transformer._block_forward), with the block's keys and values k, v (b, KV, S, HS) read
  back from the store, S = p + n (store.keys: a plain view for a contiguous store):
    scores  s = q kᵀ                        (b, NH, n, S)   a matmul over the full n × S rectangle
    softmax a = softmax(s / √HS), causal    (b, NH, n, S)   visits only keys at positions ≤ the query's
    mix     o = a v                         (b, NH, n, HS)  a matmul over the full rectangle
    merge   o -> (b·n, NH·HS)                               heads side by side again, for the output projection;
                                                            written into the block's rows of an (N, NH·HS)
                                                            array when the batch has several blocks

Attention is the only op that mixes information across positions. Writing every token's k and v into the store
first, and then reading each block's keys back from it, makes one code path serve all three phases. Training:
a throwaway store (minitx.core.kv_cache.Scratch), one block of B sequences × T tokens at p = 0, so S = T.
Prefill: the prompts' keys go into the KV cache; prompts of equal length form one block, ragged ones several.
Decode: each sequence adds one token (n = 1) at its own position p and attends to p + 1 keys, p of them written
by earlier calls. The backward runs only in training, on its one block, as if from a contiguous store.

Grouped-query attention: query head h uses key/value head h // G. Viewing q as (b, KV, G·n, HS) makes every
group one matmul against its shared k, and the backward's dk = dsᵀ q sums the group's contributions for free.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..batch import Block, TokenBatch
from ..shaped import empty, is_shaped
from .half import call_f32, is_half, widen


class SplitCache(NamedTuple):
    # No activations kept: the split is a copy (or a rotation), and its backward needs only to know where each
    # entry went and by which angle it was turned.
    batch: TokenBatch            # the blocks (which rows go where) and the positions
    cos: np.ndarray | None       # (n_ctx, HS/2) RoPE tables, or None
    sin: np.ndarray | None
    n_heads: int


class HeadMatmulCache(NamedTuple):
    """What the scores (q kᵀ) and the mix (p v) keep: both operands, since the gradient of each is the output
    gradient times the other. The mix keeps the very probs array the softmax cache holds: one array, two caches."""
    a: np.ndarray                # (B, NH, T, X) one row per query: q (X = HS) or probs (X = S)
    kv: np.ndarray               # (B, KV, S, HS) shared by a group of query heads: k or v
    transposed: bool             # True for the scores (a @ kᵀ), False for the mix (a @ v)


class SoftmaxCache(NamedTuple):
    # The output, not the input: softmax's gradient is written entirely in terms of its output p (see _softmax_bwd).
    probs: np.ndarray            # (B, NH, T, S)
    pos: np.ndarray              # (B, T)
    scale: float
    window: int                  # 0, or the sliding window W


# ---- split heads (+ RoPE) ------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _split_fwd(qkv, pos, blocks, cos, sin, NH, KV, q, k_pool, v_pool, table):
    # qkv (N, (NH+2KV)·HS), pos (N,), blocks (n_blocks, 5) rows of (start, slot, b, n, p), cos and sin (n_ctx, HS/2)
    # or (0, HS/2) for no RoPE, q (N·NH·HS,) flat output, k_pool and v_pool (R, KV, X, HS), table (slots, rows/slot).
    # One pass over the tokens, block by block (see minitx.core.batch). Token r is sequence bi's token ti of its
    # block, at position p. Its query goes to q laid out as the block's (b, NH, n, HS) array; its key and value
    # to row `row`, column `col` of the KV pools (R, KV, X, HS): with X positions per row, position p lives in
    # the slot's block table entry (p // X) mod its rows, at p % X (a contiguous cache: one row per slot, row = slot,
    # col = p; a rolling one, X positions reused in turn: col = p % X).
    # RoPE rotates each (x_j, x_{j+HS/2}) pair of q and k by the angle pos·θ_j on the way; v is copied as is.
    HS = k_pool.shape[3]
    X = k_pool.shape[2]
    half = HS // 2
    rope = cos.shape[0] > 0          # "no RoPE" arrives as an empty table, so one compiled kernel serves both
    for blk in range(blocks.shape[0]):
        start, slot, b, n = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3]
        # A block's tokens are rows start..start+b·n-1, sequence by sequence, so the loops below walk qkv's rows
        # in order: r = start + bi·n + ti.
        for bi in range(b):
            for ti in range(n):
                r = start + bi * n + ti
                p = pos[r]
                # Where this token's k and v live, now and for every later call that reads this sequence's keys.
                # The sequences of a block sit in consecutive slots, so sequence bi is slot slot + bi.
                row, col = table[slot + bi, (p // X) % table.shape[1]], p % X
                # The block's (b, NH, n, HS) array starts at its first token's share of the buffer, start·NH·HS
                # (every token owns NH·HS entries of q, wherever they sit). Inside it, q[bi, h, ti, :] is at
                # ((bi·NH + h)·n + ti)·HS = qbase + h·n·HS: each head's n queries of a sequence are contiguous,
                # which is the (n, HS) matrix the scores matmul wants.
                qbase = start * NH * HS + (bi * NH * n + ti) * HS      # q[bi, h, ti, :] of the block's array
                # qkv's row is [q heads 0..NH-1 | k heads 0..KV-1 | v heads 0..KV-1], HS columns each (one matmul
                # made all three). q and k take the same treatment (rotated by RoPE), so one loop walks the first
                # NH + KV heads; v, never rotated, follows as a plain copy.
                for h in range(NH + KV):
                    base = h * HS
                    # dst is a view: writing dst[j] writes q (a 1-D slice) or the pool row in place, no copy.
                    if h < NH:
                        dst = q[qbase + h * n * HS: qbase + h * n * HS + HS]
                    else:
                        dst = k_pool[row, h - NH, col]
                    if rope:
                        # Rotate-half (HF's convention): x_j pairs with x_{j+HS/2}, not with its neighbour x_{j+1}
                        # as in the RoFormer paper. Each pair turns by the angle p·θ_j, looked up in the tables.
                        # Rotating q at position m and k at position p makes q·k depend on m and p only through
                        # m − p: attention sees relative positions. The key is stored already rotated, by its own
                        # position, which never changes: a cached key is never touched again.
                        for j in range(half):
                            x1, x2 = qkv[r, base + j], qkv[r, base + half + j]
                            c, s = cos[p, j], sin[p, j]
                            dst[j] = x1 * c - x2 * s
                            dst[half + j] = x2 * c + x1 * s
                    else:
                        for j in range(HS):
                            dst[j] = qkv[r, base + j]
                # Values carry content, not position: copied into the v pool unrotated, at the key's (row, col).
                vbase = (NH + KV) * HS
                for h in range(KV):
                    for j in range(HS):
                        v_pool[row, h, col, j] = qkv[r, vbase + h * HS + j]


@njit(cache=True, error_model="numpy")
def _split_bwd(dq, dk_pool, dv_pool, pos, blocks, cos, sin, NH, table, dqkv):
    # dq (N·NH·HS,) flat, laid out as split_forward wrote q; dk_pool and dv_pool (R, KV, X, HS); pos (N,);
    # blocks (n_blocks, 5); cos and sin (n_ctx, HS/2) or (0, HS/2); table (slots, rows/slot); dqkv (N, (NH+2KV)·HS) out.
    # The forward, reversed: gather each token's dq, dk, dv back from where the forward scattered q, k, v.
    # The forward rotated (x1, x2) by +angle; the gradient rotates (dy1, dy2) back by -angle.
    # Each entry of qkv went to exactly one place (every token has its own q entries and its own (row, col) in
    # the pools), so each entry of dqkv comes from exactly one place: a gather with `=`, and no zeroing first.
    # (dk and dv already hold the sum over every query that read the key: the scores and mix backward did that.)
    HS = dk_pool.shape[3]
    KV = dk_pool.shape[1]
    X = dk_pool.shape[2]
    half = HS // 2
    rope = cos.shape[0] > 0
    for blk in range(blocks.shape[0]):
        start, slot, b, n = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3]
        for bi in range(b):
            for ti in range(n):
                # the same walk and the same addresses as the forward: see _split_fwd
                r = start + bi * n + ti
                p = pos[r]
                row, col = table[slot + bi, (p // X) % table.shape[1]], p % X
                qbase = start * NH * HS + (bi * NH * n + ti) * HS
                for h in range(NH + KV):
                    base = h * HS
                    if h < NH:
                        src = dq[qbase + h * n * HS: qbase + h * n * HS + HS]
                    else:
                        src = dk_pool[row, h - NH, col]
                    if rope:
                        # in the forward pass this was:
                        #     y1 = x1·c − x2·s,   y2 = x2·c + x1·s      i.e. y = R x with R = [[c, −s], [s, c]]
                        # so now we have dx = Rᵀ dy:
                        #     dx1 = dy1·c + dy2·s,   dx2 = −dy1·s + dy2·c
                        # a rotation's transpose is its inverse: the gradient is turned back by −p·θ_j.
                        for j in range(half):
                            d1, d2 = src[j], src[half + j]
                            c, s = cos[p, j], sin[p, j]
                            dqkv[r, base + j] = d1 * c + d2 * s
                            dqkv[r, base + half + j] = d2 * c - d1 * s
                    else:
                        # the forward was a copy, so the gradient is copied back
                        for j in range(HS):
                            dqkv[r, base + j] = src[j]
                # v was copied: its gradient is copied back into v's columns of the token's row
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
    # q is flat because its blocks have different shapes: one buffer, each block's (b, NH, n, HS) array a slice.
    # np.empty, not zeros: the kernel writes every entry.
    q = empty((N * n_heads * HS,), qkv.dtype, like=qkv)
    # Numba compiles a kernel per argument type, and None is a type of its own: "no RoPE" is an empty table.
    none = np.empty((0, HS // 2), dtype=qkv.dtype)
    rope = cos is not None
    if not is_shaped(qkv, k_pool) and (is_half(qkv) or is_half(k_pool)):
        _split_half(qkv, batch, n_heads, cos, sin, q, k_pool, v_pool, table)
    elif not is_shaped(qkv, k_pool):
        _split_fwd(qkv, batch.pos, batch.block_array, cos if rope else none, sin if rope else none, n_heads, KV, q,
                   k_pool, v_pool, table)
    if counting():
        kv_written = 2 * N * KV * HS * k_pool.itemsize                # one k row and one v row per token
        flops = cv.ROPE * N * (n_heads + KV) * HS if rope else 0
        tables = 2 * N * (HS // 2) * qkv.itemsize if rope else 0      # one cos row and one sin row per token
        record(name, "rope" if rope else "layout", flops,
               reads=(("activations", nbytes(qkv, batch.pos)), ("weights", tables)),
               writes=(("activations", nbytes(q)), (kv_category, kv_written)))
    return q, SplitCache(batch, cos, sin, n_heads)


@njit(cache=True, error_model="numpy")
def _token_places(blocks, pos, table, X, own, rows, cols):
    # blocks (n_blocks, 5) rows of (start, slot, b, n, p), pos (N,), table (slots, rows/slot), X positions per pool
    # row; own (n_slots, ≥ max pos + 1) zeros, rows and cols (N,) out. Token r, sequence bi of its block (slot
    # s = slot + bi) at position p: own[s, p] = r, where the float32 split puts its key and value (row r of a
    # one-column scratch pool), and (rows[r], cols[r]) = (table[s, (p // X) mod width], p mod X), where they
    # belong in the store's pools (the address _split_fwd writes to). The walk of _split_fwd, addresses only:
    # one compiled pass where NumPy would take a dozen calls per layer.
    width = table.shape[1]
    for blk in range(blocks.shape[0]):
        start, slot, b, n = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3]
        for bi in range(b):
            for ti in range(n):
                r = start + bi * n + ti
                p = pos[r]
                own[slot + bi, p] = r
                rows[r] = table[slot + bi, (p // X) % width]
                cols[r] = p % X


def _split_half(qkv, batch: TokenBatch, n_heads: int, cos, sin, q, k_pool, v_pool, table) -> None:
    """split_forward's work for 16-bit arrays (minitx.core.ops.half): the float32 kernel rotates and lays out q,
    and writes each token's k and v into float32 rows of its own (token r in row r of a one-column pool, through
    a table of its own: own[slot, p] = r); then q is rounded into place, and the k, v rows into the store's pools
    at (table[slot, (p // X) mod width], p mod X), where the float kernel would have written them."""
    N = qkv.shape[0]
    KV, X, HS = k_pool.shape[1], k_pool.shape[2], k_pool.shape[3]
    blocks, pmax = batch.block_array, int(batch.pos.max())
    own = np.zeros((batch.n_slots, pmax + 1), dtype=np.int64)
    rows, cols = np.empty(N, dtype=np.int64), np.empty(N, dtype=np.int64)
    _token_places(blocks, batch.pos, table, X, own, rows, cols)
    k_rows, v_rows = np.empty((N, KV, 1, HS), np.float32), np.empty((N, KV, 1, HS), np.float32)
    q32 = np.empty(q.shape, np.float32)
    none = np.empty((0, HS // 2), dtype=np.float32)
    # Only the RoPE rows of positions 0..pmax are read: only they are widened, not the whole (n_ctx, HS/2) table.
    _split_fwd(widen(qkv), batch.pos, blocks, none if cos is None else widen(cos[:pmax + 1]),
               none if sin is None else widen(sin[:pmax + 1]), n_heads, KV, q32, k_rows, v_rows, own)
    q[...] = q32
    k_pool[rows, :, cols, :] = k_rows[:, :, 0, :]               # (N, KV, HS) rounded to the pools' 16 bits
    v_pool[rows, :, cols, :] = v_rows[:, :, 0, :]


def split_backward(dq: np.ndarray, dk: np.ndarray, dv: np.ndarray, cache: SplitCache, name: str) -> np.ndarray:
    """dq (queries, as split_forward returned them), dk and dv (B, KV, T, HS) -> dqkv (N, (NH+2KV)·HS).
    Training's keys and values live in a throwaway store with one row per sequence: slot b is row b."""
    batch, NH = cache.batch, cache.n_heads
    N = batch.n_tokens
    KV, HS = dk.shape[1], dk.shape[3]
    dqkv = empty((N, (NH + 2 * KV) * HS), dq.dtype, like=dq)    # every entry written once: see _split_bwd
    rope = cache.cos is not None
    none = np.empty((0, HS // 2), dtype=dq.dtype)
    # dk and dv come out of the matmul backward as (B, KV, T, HS): a contiguous store with row b for slot b
    # and X = T, which is the table the forward's Scratch store used too, so it is rebuilt here, not cached.
    table = np.arange(dk.shape[0], dtype=np.int64)[:, None]
    # dq is the scores backward's (B, NH, T, HS) for the one training block at row 0: flattened, it is exactly
    # the buffer layout split_forward gave q, so the kernel addresses it the same way.
    if not is_shaped(dq, dk, dv):
        _split_bwd(dq.reshape(-1), dk, dv, batch.pos, batch.block_array, cache.cos if rope else none,
                   cache.sin if rope else none, NH, table, dqkv)
    if counting():
        flops = cv.ROPE * N * (NH + KV) * HS if rope else 0
        tables = 2 * N * (HS // 2) * dq.itemsize if rope else 0
        record(name, "rope" if rope else "layout", flops,
               reads=(("activations", nbytes(dq, dk, dv, batch.pos)), ("weights", tables)),
               writes=(("activations", nbytes(dqkv)),))
    return dqkv


def block_queries(q: np.ndarray, blk: Block, n_heads: int, head_dim: int) -> np.ndarray:
    """A block's queries, (b, NH, n, HS): a view of split_forward's output."""
    # The block owns rows start..start+b·n-1, so NH·HS entries per row from start·width on: no copy.
    width = n_heads * head_dim
    return q[blk.start * width:(blk.start + blk.b * blk.n) * width].reshape(blk.b, n_heads, blk.n, head_dim)


# ---- scores = q kᵀ and mix = p v: one matmul per key/value head ----------------------------------------------

def _grouped(x: np.ndarray, n_kv_heads: int) -> np.ndarray:
    """(B, NH, T, X) -> (B, KV, G·T, X): a free view, each key/value head's group of queries in one block."""
    # Query heads kv·G .. kv·G + G − 1 share key/value head kv, and they are neighbours along the NH axis; each
    # holds T rows, so merging the (G, T) axes stacks the group's G·T queries into one matrix. Free only because
    # x is contiguous over (NH, T, X), as every caller's array is; otherwise reshape would quietly copy.
    B, NH, T, X = x.shape
    return x.reshape(B, n_kv_heads, (NH // n_kv_heads) * T, X)


def _head_matmul_forward(a: np.ndarray, kv: np.ndarray, transposed: bool, name: str,
                         kv_category: str) -> tuple[np.ndarray, HeadMatmulCache]:
    """a (B, NH, T, X) @ kvᵀ (X = HS) or @ kv (X = S), per key/value head -> (B, NH, T, S or HS).
    One BLAS matmul per (sequence, kv head) over the full T × S rectangle: B·NH·T·S·HS multiply-adds."""
    B, NH, T, _ = a.shape
    KV, S, HS = kv.shape[1:]
    # np.matmul batches over the leading (B, KV) axes: per pair, (G·T, X) @ (X, S) for the scores, with kᵀ a free
    # transposed view that BLAS reads as such, or (G·T, S) @ (S, HS) for the mix. Deliberately the full
    # rectangle: BLAS cannot skip the masked (future) keys, and a dense matmul still beats a triangular loop. In
    # training (S = T) that computes T² scores of which T(T+1)/2 are used; in decode (n = 1) nothing is wasted,
    # since the one query sees every key.
    out = empty((B, NH, T, S if transposed else HS), a.dtype, like=a)
    if not is_shaped(a, kv) and (is_half(a) or is_half(kv)):
        # 16-bit q, probabilities or cache: BLAS on float32 copies, rounded once into out (minitx.core.ops.half)
        k32 = widen(kv)
        _grouped(out, KV)[...] = np.matmul(_grouped(widen(a), KV), k32.transpose(0, 1, 3, 2) if transposed else k32)
    elif not is_shaped(a, kv):
        np.matmul(_grouped(a, KV), kv.transpose(0, 1, 3, 2) if transposed else kv, out=_grouped(out, KV))
    if counting():
        # counted as executed, masked entries included (minitx.conventions)
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
    # in the forward pass this was, per (sequence, kv head):  out = A Kᵀ  or  out = A V   (A: the group's rows)
    # so now we have, for out_ij = Σ_x A_ix K_jx:   dA_ix = Σ_j dout_ij K_jx   and   dK_jx = Σ_i dout_ij A_ix,
    # i.e. dA = dout K, dK = doutᵀ A; and for out = A V:  dA = dout Vᵀ, dV = Aᵀ dout. The sum over i runs over
    # all G·T rows of the group, so every query head that shared the kv head adds its share in the same matmul.
    # The masked entries of dscores are exact zeros (the softmax backward wrote them), multiplied all the same.
    d = _grouped(dout, KV)                                            # (B, KV, G·T, S or HS)
    if is_shaped(dout, a, kv):
        da, dkv = empty(a.shape, a.dtype, like=dout), empty(kv.shape, kv.dtype, like=dout)
    elif cache.transposed:    # out = a kᵀ: da = dout k, dk = doutᵀ a
        da, dkv = np.matmul(d, kv), np.matmul(d.transpose(0, 1, 3, 2), _grouped(a, KV))
    else:                     # out = a v:  da = dout vᵀ, dv = aᵀ dout
        da, dkv = np.matmul(d, kv.transpose(0, 1, 3, 2)), np.matmul(_grouped(a, KV).transpose(0, 1, 3, 2), d)
    da = da.reshape(a.shape)                                          # (B, KV, G·T, X) back to (B, NH, T, X)
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
def _softmax_fwd(scores, pos, scale, window, probs):
    # scores (B, NH, T, S) one block's q kᵀ, pos (B, T) each query's position, scale 1/√HS, window W (0: none),
    # probs (B, NH, T, S) out.
    # Key column j of a block is key position j (the block reads each sequence's keys 0..S-1), so causality is
    # a prefix: the query at position pos may see columns 0..pos; a sliding window of W keeps the last W of them,
    # lo..pos with lo = pos − W + 1 (Mistral's i − W < j ≤ i). No mask array is built or read.
    B, NH, T, S = scores.shape
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(pos[b, t] + 1, S)           # keys this query may see: positions lo..pos
                lo = max(pos[b, t] + 1 - window, 0) if window > 0 else 0
                row, out = scores[b, h, t], probs[b, h, t]
                # pass 1: the row's max. exp overflows past ~88 (float32) or ~709 (float64), and softmax is
                # unchanged by subtracting one constant from every entry; subtracting the max makes every
                # exponent ≤ 0 and the largest term exactly 1, so the sum below is ≥ 1: nothing overflows,
                # nothing divides by zero. (m, total and the Python-float `scale` are float64, so Numba runs this
                # row's arithmetic in float64 even for a float32 model: unlike the activations, this loop is not
                # kept in the model's dtype.)
                m = -np.inf
                for j in range(lo, n):
                    m = max(m, row[j] * scale)
                # pass 2: exponentiate and sum. Each exp is stored in the output as it is made, so the last
                # pass only rescales: exp runs once per entry, not twice.
                total = 0.0
                for j in range(lo, n):
                    e = np.exp(row[j] * scale - m)
                    total += e
                    out[j] = e
                # pass 3: normalise. One division per row, then a multiply per entry.
                inv = 1.0 / total
                for j in range(lo, n):
                    out[j] *= inv
                # The masked keys (the future, and those the window left behind): the mix multiplies the full
                # rectangle, so they must hold a real 0, not garbage.
                for j in range(lo):
                    out[j] = 0.0
                for j in range(n, S):
                    out[j] = 0.0                    # masked: exactly zero weight, not a tiny one


@njit(cache=True, error_model="numpy")
def _softmax_bwd(dprobs, probs, pos, scale, window, dscores):
    # dprobs (B, NH, T, S), probs (B, NH, T, S) the forward's output, pos (B, T), dscores (B, NH, T, S) out.
    # Forward: p_j = exp(a_j) / Σ exp(a), a_j = scale·s_j. So ds_j = scale · p_j (dp_j − Σ_k p_k dp_k).
    # In full: in the forward pass this was p_j = exp(a_j − m) / Σ_k exp(a_k − m), so
    #     ∂p_j/∂a_i = p_j (δ_ij − p_i)           (p does not change when every a shifts by m: m passes no gradient)
    #     da_i = Σ_j dp_j ∂p_j/∂a_i = p_i (dp_i − Σ_j p_j dp_j),   and   ds_i = scale · da_i.
    # The Jacobian is n × n, but it is diag(p) − p pᵀ, so its product with dp costs one dot product per row
    # (pass 1) and one pass over the entries (pass 2): O(n), not O(n²). And it needs only p, which is why the
    # forward's cache keeps the output, not the scores.
    B, NH, T, S = probs.shape
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(pos[b, t] + 1, S)
                lo = max(pos[b, t] + 1 - window, 0) if window > 0 else 0
                p, dp, ds = probs[b, h, t], dprobs[b, h, t], dscores[b, h, t]
                # pass 1: Σ_j p_j dp_j, the part of the gradient every entry of the row shares
                dot = 0.0
                for j in range(lo, n):
                    dot += p[j] * dp[j]
                # pass 2: each visible entry's own gradient
                for j in range(lo, n):
                    ds[j] = scale * p[j] * (dp[j] - dot)
                # masked entries were a constant 0 in the forward, independent of the scores: zero gradient. (dp
                # there is not zero, since the mix backward computed the full rectangle; it is simply not read.)
                for j in range(lo):
                    ds[j] = 0.0
                for j in range(n, S):
                    ds[j] = 0.0


def _visible(pos: np.ndarray, n_heads: int, S: int, window: int) -> int:
    """(query, key) pairs the masked loops visit: Σ over queries of min(pos + 1, S) − lo, for every head."""
    seen = np.minimum(pos + 1, S)
    if window:
        seen = seen - np.maximum(pos + 1 - window, 0)
    return int(seen.sum()) * n_heads


def softmax_forward(scores: np.ndarray, pos: np.ndarray, scale: float, name: str,
                    window: int = 0) -> tuple[np.ndarray, SoftmaxCache]:
    """scores (B, NH, T, S), pos (B, T) -> probs (B, NH, T, S): row (b, ·, t) sees keys 0..pos[b, t], or with a
    sliding window of W > 0 the last W of them (pos − W < j ≤ pos).
    `scale` is 1/√HS: dot products of HS-dimensional vectors grow like √HS, and would saturate the softmax."""
    B, NH, T, S = scores.shape
    probs = empty(scores.shape, scores.dtype, like=scores)   # every entry written: visible ones, masked ones 0
    if not is_shaped(scores):
        call_f32(_softmax_fwd, scores, pos, scale, window, probs, outputs=(4,))
    if counting():
        # only the visible entries: the loops never touch the masked ones except to write their zero
        per_entry, per_row = cv.SOFTMAX_FWD
        record(name, "softmax", per_entry * _visible(pos, NH, S, window) + per_row * B * NH * T,
               reads=(("activations", nbytes(scores, pos)),), writes=(("activations", nbytes(probs)),))
    return probs, SoftmaxCache(probs, pos, scale, window)


def softmax_backward(dprobs: np.ndarray, cache: SoftmaxCache, name: str) -> np.ndarray:
    """dprobs (B, NH, T, S) -> dscores (B, NH, T, S)."""
    dscores = empty(dprobs.shape, dprobs.dtype, like=dprobs)
    if not is_shaped(dprobs, cache.probs):
        _softmax_bwd(dprobs, cache.probs, cache.pos, cache.scale, cache.window, dscores)
    if counting():
        B, NH, T, S = dprobs.shape
        per_entry, per_row = cv.SOFTMAX_BWD
        record(name, "softmax", per_entry * _visible(cache.pos, NH, S, cache.window) + per_row * B * NH * T,
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
        out = empty((B * T, NH * HS), o.dtype, like=o)
    # One strided copy: o's transpose is a free view (B, T, NH, HS), and so is out's reshape, because `out` is
    # whole rows of a C-contiguous array (a block's rows of the batch are consecutive). Were it not, reshape
    # would return a copy and the result would silently miss `out`.
    if not is_shaped(o, out):
        np.copyto(out.reshape(B, T, NH, HS), o.transpose(0, 2, 1, 3))
    if counting():
        record(name, "layout", 0, reads=(("activations", nbytes(o)),), writes=(("activations", nbytes(out)),))
    return out


def merge_backward(dout: np.ndarray, blk: Block, n_heads: int, name: str) -> np.ndarray:
    """(B·T, NH·HS) -> (B, NH, T, HS) for a block of B sequences of T tokens."""
    D = dout.shape[1]
    # The forward was a permutation of entries, so the gradient is the inverse permutation: no arithmetic.
    # Made contiguous here, once, because the mix backward's grouped view (_grouped) is free only on a
    # contiguous (B, NH, T, HS) array.
    d = dout.reshape(blk.b, blk.n, n_heads, D // n_heads).transpose(0, 2, 1, 3)
    d = empty(d.shape, d.dtype, like=dout) if is_shaped(dout) else np.ascontiguousarray(d)
    if counting():
        record(name, "layout", 0, reads=(("activations", nbytes(dout)),), writes=(("activations", nbytes(d)),))
    return d


def rope_tables(max_pos: int, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pos · θ^(−2j/HS) for pos < max_pos, j < HS/2: (max_pos, HS/2) each, as HF computes them
    (inverse frequencies and angles in float32, then cos/sin cast to the model's dtype)."""
    # θ_j = theta^(−2j/HS): pair 0 turns by one radian per position, the last pair ~theta times slower, so
    # together the pairs encode position at many scales. Built once per model; the split looks rows up by position.
    # The float32 steps match HF's arithmetic, so a loaded checkpoint sees the same rotation it was trained with.
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    angles = np.arange(max_pos, dtype=np.float32)[:, None] * inv_freq[None, :].astype(np.float32)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
