"""Fused attention: the FlashAttention algorithm (forward only) in one Numba kernel, reading keys straight from
the KV store and writing each token's heads side by side.

The unfused path (minitx.core.ops.attention) runs attention as four ops per block, each a trip to memory:

    scores  s = q kᵀ          (b, NH, n, S)   written, then read back by the softmax
    softmax a = softmax(s)    (b, NH, n, S)   written, then read back by the mix
    mix     o = a v           (b, NH, n, HS)  written, then read back by the merge
    merge   o -> (b·n, NH·HS)

so its traffic grows like n·S per head: for a T-token prompt, T² scores written and read twice, where the
inputs and the output are only O(T·HS). FlashAttention (Dao et al. 2022; Milakov & Gimelshein's online softmax,
2018) never builds the score matrix. Each query walks its keys a tile at a time and keeps three things:

    m   the largest score seen so far            (a running max, for a stable exp)
    l   Σ exp(s_j − m) over the keys seen so far (the softmax's denominator, in units of exp(m))
    o   Σ exp(s_j − m) · v_j                      (HS,) the numerator, in the same units

When a tile brings a larger max m', everything accumulated so far was in units of exp(m) and must be brought to
units of exp(m'): multiply l and o by exp(m − m'). After the last tile, o / l is exactly softmax(s) · v: the
same numbers as the unfused path, up to rounding, with O(HS) state per (query, head) instead of a row of S.

    fused_attention_forward(q, k_pool, v_pool, table, batch, NH, scale, window, name) -> out (N, NH·HS)

Inputs are what the model already has after split_forward: q the flat (N·NH·HS,) buffer (block by block, each
block's queries a (b, NH, n, HS) array: see block_queries), and every token's key and value already written into
the store's pools (R, KV, X, HS), position j of slot s at row table[s, (j // X) % table.shape[1]], column j % X.
The kernel reads keys through that table itself, so a contiguous cache, a rolling one (X columns reused in turn)
and a paged one (several rows per slot, anywhere in the pool) are one code path, and no (b, KV, S, HS) copy of
the keys is ever made outside the kernel. The output is token-major with each token's NH heads side by side:
the layout the output projection reads, so no merge op is needed.

Masking. A query at position i sees keys i − W < j ≤ i with a sliding window of W keys (Mistral, Gemma 2's local
layers), else 0 ≤ j ≤ i. The loops run over each query's visible range only, so a fully masked key (or a fully
masked tile) enters no arithmetic and is not counted; there is no partly masked tile either, since each query's
tiles are cut from its own visible range. (A block's keys are copied once into the kernel's scratch, those some
query of the block sees; a key no query of the block sees is not even read.)

Work shared, arithmetic not. The G = NH/KV query heads of a token share one kv head and so the same visible keys
and tiles: they walk them together, each key and value loaded once for the G of them. Each (query, head) is still
its own row of the online softmax doing exactly a row's arithmetic, so the count is per row whatever the grouping.
Precision: the dot products and the e·v accumulation run in the model's dtype, as the unfused path's BLAS matmuls
do (float32 for a 16-bit model, whose cache the kernel reads in place, widening each key and value as it loads
it); the running max and sum in float64, as its softmax does.

Checked once per model call. Every table entry and position the kernel will read is checked before it runs
(it does no bounds checks itself); a model call makes those checks once, in a FusedPlan that all its layers
share, since they run the same batch through the same table into pools of one shape.

Counting (minitx.accounting.conventions, "Fused attention"): the FLOPs are those of the loops below, per visible
(query, key, head) entry, per tile and per (query, head) row; the bytes are those of an ideal fused kernel that
reads every operand once (q, the positions, each block's keys and values) and writes the output once. This op has
no backward: training keeps the unfused path, whose probabilities the backward needs.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..batch import TokenBatch
from ..shaped import empty, is_shaped
from .half import bits, half_kind, is_half, load, widen


@njit(cache=True, error_model="numpy")
def _gather_keys(k_pool, kind, g, rows, cols, j0, j1, kt):
    # k_pool (R, KV, X, HS) floats, or uint16 patterns of 16-bit `kind`; g the kv head, rows and cols (span,)
    # where each key lives, kt (HS, ≥ j1 − j0) out: kt[:, :j1-j0] = keys j0..j1-1 of kv head g, transposed (the key
    # index along the fast axis), widened to float32 on the way for a 16-bit pool (half.load).
    # One key at a time: its row is a view (HS contiguous numbers, one pool lookup), written down a column of kt.
    HS = k_pool.shape[3]
    for jj in range(j0, j1):
        krow = k_pool[rows[jj], g, cols[jj]]         # (HS,) the key at position j0 + (jj − j0) of the span
        c = jj - j0
        for d in range(HS):
            kt[d, c] = load(krow[d], kind)


@njit(cache=True, error_model="numpy")
def _fused_fwd(q, k_pool, v_pool, kind, table, pos, blocks, NH, scale, window, tile, kt, kt_tile, rows, cols, sc,
               o, m, l, out):
    # q (N·NH·HS,) flat, block by block (each block's queries a (b, NH, n, HS) array); k_pool, v_pool (R, KV, X, HS)
    # floats, or the uint16 patterns of a 16-bit cache in format `kind` (BF16, FP16; unused for floats), each key
    # and value widened to float32 as it is loaded (half.load): the cache is read in its 16 bits, never copied;
    # table (slots, rows/slot) int64; pos (N,) int64; blocks (n_blocks, 5) rows of (start, slot, b, n, p);
    # NH query heads; scale 1/√HS (any float); window W ≥ 1, or 0 for plain causal; tile keys per tile.
    # Scratch: kt (HS, span) one sequence's keys of one kv head, transposed (used when n > 1); kt_tile (HS, tile)
    # one tile of them (when n = 1); rows, cols (span,) int64 where each of its key positions lives; for the G =
    # NH/KV query heads of a group: sc (G, tile) one tile's scores, then weights, and o (G, HS) the running
    # numerator, both in q's dtype; m, l (G,) float64 the running max and sum.
    # out (N, NH·HS) written, every entry (the wrapper checked that the blocks cover every row).
    R, KV, X, HS = k_pool.shape
    G = NH // KV                     # query heads per key/value head (grouped-query attention)
    width = table.shape[1]           # table entries per slot: 1 for a contiguous or rolling cache, more if paged
    for blk in range(blocks.shape[0]):
        start, slot, b, n, p = blocks[blk, 0], blocks[blk, 1], blocks[blk, 2], blocks[blk, 3], blocks[blk, 4]
        # The keys this block needs, per sequence: its last query (position p + n − 1) sees up to key p + n − 1;
        # its first query (position p) sees back to key p − W + 1 with a window, to 0 without. Every query of the
        # block sees a sub-range of lo_blk..hi-1, so that is what gets gathered.
        hi = p + n
        lo_blk = max(0, p - window + 1) if window > 0 else 0
        span = hi - lo_blk
        for bi in range(b):
            s_ = slot + bi                   # the sequences of a block sit in consecutive slots
            # Where each key position lives in the pools: row table[s, (j // X) mod width], column j mod X (the
            # addressing _split_fwd wrote them with). One division per key, once per sequence, not per query.
            for jj in range(span):
                j = lo_blk + jj
                rows[jj] = table[s_, (j // X) % width]
                cols[jj] = j % X
            for g in range(KV):
                # Keys are read transposed, kt[d, jj] = k[d] of position lo_blk + jj: with keys along the fast
                # axis, a tile's scores are HS passes of s[j] += q[d]·k[j, d] over consecutive j, independent
                # multiply-adds the compiler vectorises, where a dot product per key would be one chain of dependent
                # adds. With n > 1 tokens per sequence the whole span is transposed once here and read by all G·n
                # queries of the group; with n = 1 (decode) nothing would be shared across tokens, so each tile is
                # transposed into kt_tile just before its G heads use it, while it sits in L1 (a (HS, span) buffer
                # written column by column would touch a new cache line, often a new page, per number). This copy is
                # the GPU kernel's tile in shared memory. Values need no copy: each v row is already HS contiguous
                # numbers, the axis the e·v update runs along.
                if n > 1:
                    _gather_keys(k_pool, kind, g, rows, cols, 0, span, kt)
                for ti in range(n):
                    r = start + bi * n + ti                  # the token's row in the batch
                    i = pos[r]                               # its position (= p + ti, checked)
                    lo = max(0, i - window + 1) if window > 0 else 0
                    # The G query heads g·G .. g·G + G − 1 of this token share kv head g, and so the same visible
                    # keys and the same tiles: they walk them together, each key and value row loaded once for all
                    # G (MQA's one kv head is read once per token, not NH times). Each head is still its own row
                    # of the online softmax, with its own m, l and o, doing exactly a row's arithmetic.
                    # q[bi, h, ti, :] of the block's (b, NH, n, HS) array is at q0 + hh·n·HS (see _split_fwd).
                    q0 = start * NH * HS + ((bi * NH + g * G) * n + ti) * HS
                    # The state. m starts at −inf, so the first tile's rescale factor is exp(−inf) = 0: the (empty)
                    # state is multiplied by zero, not special-cased.
                    for hh in range(G):
                        m[hh] = -np.inf
                        l[hh] = 0.0
                        for d in range(HS):
                            o[hh, d] = 0.0
                    # The visible keys lo..i, cut into tiles of `tile` keys from lo: ceil((i + 1 − lo) / tile)
                    # tiles, the last one possibly short. No key outside lo..i enters the arithmetic.
                    for t0 in range(lo, i + 1, tile):
                        nt = min(t0 + tile, i + 1) - t0
                        base = t0 - lo_blk                   # the tile's first key in rows, cols (and in kt)
                        if n > 1:
                            keys, kb = kt, base
                        else:
                            _gather_keys(k_pool, kind, g, rows, cols, base, base + nt, kt_tile)
                            keys, kb = kt_tile, 0
                        # 1. the tile's scores s_j = q·k_j: HS multiply-adds per (key, head). The rows of keys and
                        # srow are views, so the inner loop's index is a plain 0..nt-1 (the compiler then vectorises
                        # it). Four d's per pass: srow is loaded and stored a quarter as often. The arithmetic is
                        # the same, 4 multiplies and 4 adds per 4 d's (three inside the brackets, one into srow);
                        # only the order of the additions differs. HS % 4 leftover d's follow one at a time.
                        for hh in range(G):
                            for jj in range(nt):
                                sc[hh, jj] = 0.0
                        for d in range(0, HS - 3, 4):
                            k0, k1 = keys[d, kb:kb + nt], keys[d + 1, kb:kb + nt]
                            k2, k3 = keys[d + 2, kb:kb + nt], keys[d + 3, kb:kb + nt]
                            for hh in range(G):
                                qh = q0 + hh * n * HS + d
                                a0, a1, a2, a3 = q[qh], q[qh + 1], q[qh + 2], q[qh + 3]
                                srow = sc[hh]
                                for jj in range(nt):
                                    srow[jj] += (a0 * k0[jj] + a1 * k1[jj]) + (a2 * k2[jj] + a3 * k3[jj])
                        for d in range(HS - HS % 4, HS):
                            krow = keys[d, kb:kb + nt]
                            for hh in range(G):
                                qd = q[q0 + hh * n * HS + d]
                                srow = sc[hh]
                                for jj in range(nt):
                                    srow[jj] += qd * krow[jj]
                        for hh in range(G):
                            srow = sc[hh]
                            # 2. scale, and the new running max: it starts from the old max, so one compare per
                            # key and none per tile
                            m_new = m[hh]
                            for jj in range(nt):
                                srow[jj] *= scale
                                m_new = max(m_new, srow[jj])
                            # 3. bring the state into units of exp(m_new). Done on every tile, also when the max
                            # did not move (alpha = 1): the work per tile is the same whatever the data, so the
                            # FLOP count is a function of the shapes alone (and there is no branch on the data).
                            alpha = np.exp(m[hh] - m_new)
                            l[hh] *= alpha
                            for d in range(HS):
                                o[hh, d] *= alpha
                            # 4. each key's weight e_j = exp(s_j − m_new) ≤ 1 (no overflow), into the denominator.
                            # Three simple loops rather than one: each vectorises or pipelines on its own.
                            for jj in range(nt):
                                srow[jj] = srow[jj] - m_new
                            for jj in range(nt):
                                srow[jj] = np.exp(srow[jj])
                            lh = l[hh]
                            for jj in range(nt):
                                lh += srow[jj]
                            l[hh] = lh
                            m[hh] = m_new
                        # 5. and times the key's value row into the numerator: o += e_j · v_j, each value row read
                        # once for the G heads. Two keys per pass (o loaded and stored half as often), each still
                        # one multiply and one add per element; an odd last key on its own.
                        for jj in range(0, nt - 1, 2):
                            v0 = v_pool[rows[base + jj], g, cols[base + jj]]         # (HS,) views, no copy
                            v1 = v_pool[rows[base + jj + 1], g, cols[base + jj + 1]]
                            for hh in range(G):
                                e0, e1 = sc[hh, jj], sc[hh, jj + 1]
                                orow = o[hh]
                                for d in range(HS):
                                    orow[d] += e0 * load(v0[d], kind) + e1 * load(v1[d], kind)
                        if nt % 2:
                            vr = v_pool[rows[base + nt - 1], g, cols[base + nt - 1]]
                            for hh in range(G):
                                e = sc[hh, nt - 1]
                                orow = o[hh]
                                for d in range(HS):
                                    orow[d] += e * load(vr[d], kind)
                    # 6. normalise: o / l is the softmax-weighted average of the values. l ≥ 1 (the max key
                    # contributes exp(0) = 1), so the division is safe. One division per row, then multiplies.
                    for hh in range(G):
                        inv = 1.0 / l[hh]
                        h = g * G + hh
                        for d in range(HS):
                            out[r, h * HS + d] = o[hh, d] * inv


def visible_keys(pos: np.ndarray, window: int | None) -> np.ndarray:
    """pos (N,) -> (N,) int64 keys each query sees: pos + 1, or min(pos + 1, W) with a window of W."""
    return np.minimum(pos + 1, window) if window else pos + 1


def block_key_span(blocks: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """blocks (n_blocks, 5) rows (start, slot, b, n, p) -> (lo, hi) (n_blocks,) each: the key positions lo..hi-1
    a block's sequences need (its first query's first key .. its last query), the keys the kernel reads once."""
    p, n = blocks[:, 4], blocks[:, 3]
    lo = np.maximum(0, p - window + 1) if window else np.zeros_like(p)
    return lo, p + n


# The dtypes the kernel runs on (16-bit ones through float32 copies), by scalar type: a set lookup per array.
_KERNEL_TYPES = frozenset(np.dtype(t).type for t in ("float32", "float64", "bfloat16", "float16"))


class FusedPlan(NamedTuple):
    """One batch's fused attention through one store, checked and worked out once (`plan_fused_attention`).

    Every layer of a model call runs the same batch through the same block table into pools of one shape, so
    everything the checks and the counter derive from those is the same for every layer: Transformer.run makes
    one plan per call and hands it to each layer's fused_attention_forward, where confirming that the plan
    applies (the same batch and table objects, the same pool shape) is a few comparisons, not the O(N + blocks)
    checks of `_check` again. Nothing in it depends on the pools' values, only on their shape."""
    batch: TokenBatch
    table: np.ndarray                       # (slots, rows/slot) the table the checks read
    pool_shape: tuple[int, int, int, int]   # (R, KV, X, HS)
    n_heads: int
    window: int | None
    span: int                               # the most keys one sequence of a block reads: max(hi − lo)
    chunked: bool                           # some block runs n > 1 tokens per sequence (kt is then needed)
    key_positions: int                      # Σ over blocks of b·(hi − lo): keys (and values) read per kv head
    cost: tuple[int, int] | None            # (FLOPs, MACs) of the kernel (fused_attention_flops), None when
                                            # the plan was made outside a count() (worked out when needed)


def _check(k_pool, v_pool, table, batch, n_heads, window) -> tuple[np.ndarray, np.ndarray]:
    """Everything the kernel indexes, but q, checked before it runs (the kernel itself does no bounds checks).
    Cheap: O(N) on the positions and O(blocks) on the table, against the kernel's O(N·NH·S·HS); and made once
    per model call, not once per layer (FusedPlan). q is checked on every call (_check_q).
    Returns each block's key span (lo, hi) (block_key_span)."""
    if k_pool.ndim != 4 or v_pool.shape != k_pool.shape:
        raise ValueError(f"k_pool and v_pool must be one (R, KV, X, HS) shape, got {k_pool.shape}, {v_pool.shape}")
    R, KV, X, HS = k_pool.shape
    if n_heads < 1 or KV < 1 or n_heads % KV:
        raise ValueError(f"n_heads={n_heads} must be a positive multiple of the pools' KV={KV}")
    if window is not None and (isinstance(window, bool) or int(window) != window or window < 1):
        raise ValueError(f"window must be None or an integer ≥ 1, got {window!r}")
    _check_pool_dtypes(k_pool, v_pool)
    pos, blocks = batch.pos, batch.block_array
    N = pos.shape[0]
    if pos.dtype != np.int64 or table.dtype != np.int64 or table.ndim != 2 or table.shape[1] < 1:
        raise ValueError("positions and the block table must be int64, the table (slots, rows per slot)")
    if pos.ndim == 1 and blocks.ndim == 2 and blocks.shape[1] == 5 and _blocks_fit(pos, blocks, table, R, X,
                                                                                      int(window or 0)):
        return block_key_span(blocks, window)       # the usual case, in one compiled pass
    # Otherwise the same tests, vectorised, find what is wrong and say so (or pass an unusual but valid case).
    start, slot, b, n, p = blocks.T
    # The blocks must tile rows 0..N-1 in order (out is np.empty: every row must be written), with sizes ≥ 1.
    sizes = b * n
    if (blocks.shape[0] == 0 or (b < 1).any() or (n < 1).any() or (p < 0).any() or start[0] != 0
            or (start[1:] != start[:-1] + sizes[:-1]).any() or int(sizes.sum()) != N):
        raise ValueError("the batch's blocks must cover its rows 0..N-1 in order, each with b, n ≥ 1 and p ≥ 0")
    # Each token's position is its block's p plus its index in the sequence: the kernel reads keys up to pos[r].
    expected = np.repeat(p, sizes) + (np.arange(N) - np.repeat(start, sizes)) % np.repeat(n, sizes)
    if not np.array_equal(pos, expected):
        raise ValueError("batch positions disagree with its blocks: token start + bi·n + ti must be at p + ti")
    if (slot < 0).any() or (slot + b > table.shape[0]).any():
        raise ValueError(f"a block's slots fall outside the block table's {table.shape[0]} slots")
    lo, hi = block_key_span(blocks, window)
    width = table.shape[1]
    if (hi - lo > X * width).any():
        # Keys lo..hi-1 must all still be in the store: split wrote positions up to hi − 1 this call, and a
        # position shares its (row, column) with the one X·width earlier. (A rolling cache needs W ≤ X − n + 1.)
        raise ValueError(f"a block needs {int((hi - lo).max())} keys per sequence but the store keeps "
                         f"{X * width} (X={X} × {width} rows): the earliest would already be overwritten")
    # The table entries the kernel reads, (j // X) mod width for the keys j = lo..hi-1 of each block's slots: first
    # all entries of those slots at once (one vectorised test, the usual case); only if one is out of range, block
    # by block, for the entries actually read (a paged cache may mark pages it has not allocated with −1).
    slots = np.repeat(slot, b) + np.arange(int(b.sum())) - np.repeat(np.cumsum(b) - b, b)
    used = table[slots]
    if used.min() >= 0 and used.max() < R:
        return lo, hi
    for k in range(blocks.shape[0]):
        first, last = int(lo[k]) // X, (int(hi[k]) - 1) // X
        entries = (np.arange(first, last + 1) % width) if last - first + 1 < width else slice(None)
        used = table[slot[k]:slot[k] + b[k], entries]
        if used.min() < 0 or used.max() >= R:
            raise ValueError(f"block table rows {int(used.min())}..{int(used.max())} outside the pools' {R} rows")
    return lo, hi


@njit(cache=True, error_model="numpy")
def _blocks_fit(pos, blocks, table, R, X, window):
    # pos (N,), blocks (n_blocks, 5) rows of (start, slot, b, n, p), table (slots, width), all int64; R, X the
    # pools' rows and positions per row; window W or 0. True when every test of _check below holds: the blocks
    # tile rows 0..N-1 in order, each token sits at its block's p plus its index, the slots are table rows, no
    # block needs more keys than the store keeps, and every table entry the kernel will read is a pool row.
    # One pass and no temporaries: the model runs it once per call, where the vectorised tests cost dozens of
    # NumPy calls. Conservative: anything unusual (a huge size or position) answers False, and the vectorised
    # tests decide. It reads nothing before checking that it is in range: it runs on unchecked input.
    N = pos.shape[0]
    slots, width = table.shape
    if blocks.shape[0] == 0:
        return False
    row = 0                                         # the first row the next block must start at
    for k in range(blocks.shape[0]):
        start, slot, b, n, p = blocks[k, 0], blocks[k, 1], blocks[k, 2], blocks[k, 3], blocks[k, 4]
        if start != row or b < 1 or n < 1 or b > N or n > N or p < 0 or p > 1 << 40:
            return False
        row = start + b * n
        if row > N or slot < 0 or slot + b > slots:
            return False
        for r in range(start, row):                 # token r is its sequence's token (r − start) mod n
            if pos[r] != p + (r - start) % n:
                return False
        hi = p + n
        lo = max(0, p - window + 1) if window > 0 else 0
        if hi - lo > X * width:
            return False
        # the entries (j // X) mod width of keys j = lo..hi-1: a run of them, or all when the run wraps around
        first, last = lo // X, (hi - 1) // X
        count = min(last - first + 1, width)
        for s in range(slot, slot + b):
            for e in range(count):
                entry = table[s, (first + e) % width]
                if entry < 0 or entry >= R:
                    return False
    return row == N


def _check_pool_dtypes(k_pool, v_pool) -> None:
    # The kernel computes in float32 or float64; it reads 16-bit pools as uint16 patterns it widens (_run_kernel),
    # and shape-only arrays (any dtype) never reach it.
    if not is_shaped(k_pool, v_pool) and not (k_pool.dtype.type in _KERNEL_TYPES
                                               and v_pool.dtype.type in _KERNEL_TYPES):
        raise ValueError(f"the fused kernel runs on float64/float32/bfloat16/float16 arrays, got pools "
                         f"{k_pool.dtype}, {v_pool.dtype}")


def _check_q(q, N: int, n_heads: int, HS: int) -> None:
    """q, the one argument that differs from layer to layer: a flat (N·NH·HS,) buffer the kernel can run on."""
    if q.ndim != 1 or q.size != N * n_heads * HS:
        raise ValueError(f"q must be a flat (N·NH·HS,) = ({N * n_heads * HS},) buffer, got {q.shape}")
    if not is_shaped(q) and q.dtype.type not in _KERNEL_TYPES:
        raise ValueError(f"the fused kernel runs on float64/float32/bfloat16/float16 arrays, got q {q.dtype}")


def plan_fused_attention(k_pool: np.ndarray, v_pool: np.ndarray, table: np.ndarray, batch: TokenBatch,
                         n_heads: int, window: int | None) -> FusedPlan:
    """Check the store, the table and the batch for the kernel (`_check`) and work out what every layer's call
    shares: see FusedPlan. k_pool and v_pool (R, KV, X, HS) are any layer's pools (only their shape and dtype
    are read), table (slots, rows/slot) int64."""
    lo, hi = _check(k_pool, v_pool, table, batch, n_heads, window)
    blocks = batch.block_array
    cost = fused_attention_flops(batch.pos, n_heads, k_pool.shape[3], window) if counting() else None
    return FusedPlan(batch, table, tuple(k_pool.shape), n_heads, window, int((hi - lo).max()),
                     bool((blocks[:, 3] > 1).any()), int((blocks[:, 2] * (hi - lo)).sum()), cost)


def fused_attention_forward(q: np.ndarray, k_pool: np.ndarray, v_pool: np.ndarray, table: np.ndarray,
                            batch: TokenBatch, n_heads: int, scale: float, window: int | None, name: str,
                            kv_category: str = "activations", plan: FusedPlan | None = None) -> np.ndarray:
    """q (N·NH·HS,) from split_forward, k_pool and v_pool (R, KV, X, HS) holding every key the batch needs,
    table (slots, rows/slot) int64 -> out (N, NH·HS): softmax(scale · q kᵀ) v over each query's visible keys
    (i − W < j ≤ i with window W, else 0 ≤ j ≤ i), each token's heads side by side. Forward only.
    `plan`: plan_fused_attention(...) of this batch, table and pool shape, made once for all the layers of a
    model call (checked here to be that plan, else a ValueError); None checks everything now."""
    if plan is None:
        plan = plan_fused_attention(k_pool, v_pool, table, batch, n_heads, window)
    elif not (plan.batch is batch and plan.table is table and plan.n_heads == n_heads and plan.window == window
              and k_pool.shape == plan.pool_shape and v_pool.shape == plan.pool_shape):
        raise ValueError("plan was made for another batch, block table, head count, window or pool shape: make "
                         "one with plan_fused_attention for these arguments (or pass plan=None)")
    else:
        _check_pool_dtypes(k_pool, v_pool)       # a layer's pools, of the planned shape: any dtype it can read
    KV, HS = plan.pool_shape[1], plan.pool_shape[3]
    N = batch.pos.shape[0]
    _check_q(q, N, n_heads, HS)
    out = empty((N, n_heads * HS), q.dtype, like=q)
    if not is_shaped(q, k_pool, v_pool):
        _run_kernel(q, k_pool, v_pool, table, batch, n_heads, scale, window, plan, out)
    if counting():
        # each block's keys and values, once per sequence: positions lo..hi-1 (minitx.conventions)
        kv_read = 2 * KV * HS * k_pool.itemsize * plan.key_positions
        flops, macs = plan.cost or fused_attention_flops(batch.pos, n_heads, HS, window)
        record(name, "attention", flops, macs,
               reads=(("activations", nbytes(q, batch.pos)), (kv_category, kv_read)),
               writes=(("activations", nbytes(out)),))
    return out


def _run_kernel(q, k_pool, v_pool, table, batch, n_heads, scale, window, plan, out) -> None:
    """_fused_fwd over arrays the plan's checks hold for, with its scratch, writing `out`."""
    blocks, KV, HS = batch.block_array, k_pool.shape[1], k_pool.shape[3]
    # 16-bit (minitx.core.ops.half): q (a few rows at decode) is widened to float32, and the kernel computes in
    # float32 and reads the pools in place, as uint16 patterns it widens key by key: the KV cache crosses the
    # memory bus in its 16 bits, as on a GPU, with no float32 copy of it. The output is rounded to 16 bits once.
    # (Pools in two different formats, which no model makes, are both widened to float32 copies instead.)
    kind = -1                        # "the pools are floats": never read by the kernel then
    if is_half(k_pool) and k_pool.dtype == v_pool.dtype:
        kind, k_pool, v_pool = half_kind(k_pool.dtype), bits(k_pool), bits(v_pool)
    elif is_half(k_pool) or is_half(v_pool):
        k_pool, v_pool = widen(k_pool), widen(v_pool)
    q_run = widen(q)
    out_run = out if out.dtype == q_run.dtype else np.empty(out.shape, q_run.dtype)
    # Scratch, allocated once per call and reused by every block: one sequence's keys of one kv head,
    # transposed (kt, in the pools' dtype, float32 for 16-bit ones; only blocks of n > 1 tokens use it), one tile
    # of them (kt_tile, for n = 1), where each of its positions lives (rows, cols), and the online softmax's state
    # for the G query heads of one token. Like the unfused path's BLAS matmuls, the dot
    # products and the e·v accumulation run in the model's dtype (sc, o); like its softmax, the running max
    # and sum are float64 (m, l).
    key_dtype = np.float32 if kind >= 0 else k_pool.dtype
    span, tile, G = plan.span, cv.FUSED_TILE, n_heads // KV
    kt = np.empty((HS, span if plan.chunked else 0), dtype=key_dtype)
    kt_tile = np.empty((HS, tile), dtype=key_dtype)
    rows, cols = np.empty(span, dtype=np.int64), np.empty(span, dtype=np.int64)
    sc, o = np.empty((G, tile), dtype=q_run.dtype), np.empty((G, HS), dtype=q_run.dtype)
    m, l = np.empty(G, dtype=np.float64), np.empty(G, dtype=np.float64)
    # Numba compiles a kernel per argument type and None is a type of its own: "no window" arrives as 0.
    _fused_fwd(q_run, k_pool, v_pool, kind, table, batch.pos, blocks, n_heads, float(scale), int(window or 0), tile,
               kt, kt_tile, rows, cols, sc, o, m, l, out_run)
    if out_run is not out:
        out[...] = out_run                 # one rounding per output, to nearest even


def fused_attention_flops(pos: np.ndarray, n_heads: int, head_dim: int, window: int | None) -> tuple[int, int]:
    """(FLOPs, MACs) of the kernel for queries at positions pos (N,), from the conventions' constants:
    per (query, head) with vis visible keys, 4·HS·vis + PER_KEY·vis + PER_TILE·ceil(vis / TILE) + PER_ROW."""
    vis = visible_keys(pos, window)
    tiles = -(-vis // cv.FUSED_TILE)                                  # ceil(vis / TILE)
    HS = head_dim
    (tile_d, tile_1), (row_d, row_1) = cv.FUSED_PER_TILE, cv.FUSED_PER_ROW
    per_row = ((4 * HS + cv.FUSED_PER_KEY) * vis + (tile_d * HS + tile_1) * tiles + row_d * HS + row_1)
    return n_heads * int(per_row.sum()), n_heads * 2 * HS * int(vis.sum())


__all__ = ["fused_attention_forward", "plan_fused_attention", "FusedPlan", "fused_attention_flops", "visible_keys",
           "block_key_span"]
