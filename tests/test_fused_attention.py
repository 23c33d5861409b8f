"""The fused attention op (minitx.core.ops.fused_attention) against two independent references, and its counts.

Values:
  * a plain NumPy reference over the *logical* keys (each sequence's key and value at each position, before any
    store put them anywhere): softmax(scale · q kᵀ) v per (query, head) over i − W < j ≤ i (or 0 ≤ j ≤ i). The
    store is filled from those logical keys in position order, as the decoder's calls would (a rolling store
    overwrites its columns in turn), and every pool entry no query may read is NaN: a kernel that touched a masked
    key, an overwritten one or one outside the block's range would put a NaN in its output;
  * the unfused path of minitx.core.ops.attention (split_forward, then per block scores, softmax, mix and merge),
    with the window applied by setting the scores of keys j ≤ i − W to −inf.
  Drawn by hypothesis: MHA, GQA and MQA, any head size, float32 and float64, several sequences in one batch at
  their own positions (ragged decode, prefill chunks after earlier keys, training-like rectangles, blocks of several
  sequences), with and without a window, through a contiguous, a rolling and a paged store, and tiles of 1, 2, 3
  keys and the conventions' own (so rows of many tiles, and the short last tile, are exercised at small sizes).
Counts:
  * FLOPs, MACs and bytes of the one record equal the conventions' formula, computed here by a separate loop;
  * a plain-Python version of the kernel's loop over `Tally` numbers (tests/test_tally.py) does exactly as many
    operations as the record says, and computes the same output: the constants are the loop's arithmetic;
  * the fused op's bytes grow linearly in T, where the unfused path's grow like T² (the score matrix).
Guards: out-of-range tables, inconsistent positions, an overwritten window, bad shapes: ValueError before the
kernel runs. Shape-only arrays (minitx.core.shaped) skip the kernel and count the same.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitx
import reference_ops as ref
from minitx.accounting import conventions as cv
from minitx.core.batch import Block, TokenBatch, pack, rectangle
from minitx.core.ops.attention import (block_queries, merge_forward, mix_forward, scores_forward, softmax_forward,
                                       split_forward)
from minitx.core.ops.fused_attention import fused_attention_forward
from minitx.core.shaped import shaped
from test_tally import count_loop, exp, tallied, values   # the counting number (Tally) and its helpers

HEADS = [(1, 1), (2, 2), (4, 4), (2, 1), (4, 2), (4, 1), (6, 3), (6, 2)]     # (NH, KV): MHA, GQA, MQA


@contextlib.contextmanager
def tile_size(tile: int | None):
    """Run with conventions.FUSED_TILE = tile (the op passes it to the kernel at each call: nothing recompiles)."""
    old = cv.FUSED_TILE
    cv.FUSED_TILE = old if tile is None else tile
    try:
        yield
    finally:
        cv.FUSED_TILE = old


# ---- building a case: sequences, a store, queries ----------------------------------------------------------

def make_batch(shapes: list[tuple[int, int]], order: list[int]) -> TokenBatch:
    """Slot s holds a sequence of shapes[s] = (p, n): n new tokens at positions p..p+n-1. They are packed in the
    given slot order; equal neighbours in consecutive slots become one block of several sequences."""
    seq = np.concatenate([np.full(shapes[s][1], s) for s in order]).astype(np.int64)
    pos = np.concatenate([np.arange(shapes[s][0], shapes[s][0] + shapes[s][1]) for s in order]).astype(np.int64)
    return pack(np.zeros(seq.size, dtype=np.int64), seq, pos)


def lows(p: int, window: int | None) -> int:
    """The first key position a query at position p sees."""
    return max(0, p - window + 1) if window else 0


def make_store(rng, kind: str, shapes, window, KV, HS, dtype):
    """-> (K, V) logical keys (slots, KV, P, HS) float64, and (k_pool, v_pool, table) holding them.

    Every sequence's keys at positions 0..p+n-1 are written in position order through the table, as the calls
    that made them would have; keys no query of the sequence may see (before its first query's window) are NaN,
    and so is every pool entry nothing was written to."""
    slots = len(shapes)
    P = max(p + n for p, n in shapes)
    maxn = max(n for _, n in shapes)
    if kind == "contiguous":
        X, width = P + int(rng.integers(0, 3)), 1
        table = np.arange(slots, dtype=np.int64)[:, None]
        R = slots
    elif kind == "rolling":        # X columns reused in turn; the window must fit: W ≤ X − n + 1
        X, width = window + maxn - 1 + int(rng.integers(0, 2)), 1
        table = np.arange(slots, dtype=np.int64)[:, None]
        R = slots
    else:                          # paged: several rows (pages) of X positions per slot, anywhere in the pool
        X = int(rng.integers(1, 4))
        width = -(-P // X) + int(rng.integers(0, 2))
        R = slots * width + 2      # two rows nobody owns
        table = rng.permutation(R)[:slots * width].reshape(slots, width).astype(np.int64)
    K = rng.standard_normal((slots, KV, P, HS))
    V = rng.standard_normal((slots, KV, P, HS))
    for s, (p, n) in enumerate(shapes):
        K[s, :, :lows(p, window)] = np.nan            # never needed: must never be read
        V[s, :, :lows(p, window)] = np.nan
        K[s, :, p + n:] = np.nan                      # not written yet
        V[s, :, p + n:] = np.nan
    k_pool = np.full((R, KV, X, HS), np.nan, dtype=dtype)
    v_pool = np.full((R, KV, X, HS), np.nan, dtype=dtype)
    for s, (p, n) in enumerate(shapes):
        for j in range(p + n):                        # in order: a rolling store overwrites as it goes
            row, col = table[s, (j // X) % width], j % X
            k_pool[row, :, col], v_pool[row, :, col] = K[s, :, j], V[s, :, j]
    return K, V, k_pool, v_pool, table


def flat_queries(Q: np.ndarray, batch: TokenBatch) -> np.ndarray:
    """Q (N, NH, HS), one row per token -> the flat buffer split_forward makes (block by block, (b, NH, n, HS))."""
    N, NH, HS = Q.shape
    q = np.empty(N * NH * HS, dtype=Q.dtype)
    for blk in batch.blocks:
        block_queries(q, blk, NH, HS)[...] = Q[blk.rows].reshape(blk.b, blk.n, NH, HS).transpose(0, 2, 1, 3)
    return q


def slots_of(batch: TokenBatch) -> np.ndarray:
    """(N,) each token's slot."""
    return np.concatenate([np.repeat(np.arange(blk.slot, blk.slot + blk.b), blk.n) for blk in batch.blocks])


def reference(Q, K, V, batch, scale, window) -> np.ndarray:
    """Plain NumPy, float64: out[r, h·HS:(h+1)·HS] = softmax(scale · K q) V over the keys token r may see."""
    N, NH, HS = Q.shape
    G = NH // K.shape[1]
    out = np.empty((N, NH * HS))
    for r, (s, i) in enumerate(zip(slots_of(batch), batch.pos)):
        lo = lows(int(i), window)
        for h in range(NH):
            k, v = K[s, h // G, lo:i + 1], V[s, h // G, lo:i + 1]          # (vis, HS)
            a = scale * (k @ Q[r, h].astype(np.float64))
            e = np.exp(a - a.max())
            out[r, h * HS:(h + 1) * HS] = (e / e.sum()) @ v
    return out


def expected_cost(batch: TokenBatch, NH, KV, HS, window, tile, q_item, kv_item) -> dict:
    """The conventions' formula, written out independently of the op's own helper."""
    flops = macs = 0
    (td, t1), (rd, r1) = cv.FUSED_PER_TILE, cv.FUSED_PER_ROW
    for i in batch.pos.tolist():
        vis = min(i + 1, window) if window else i + 1
        flops += NH * (4 * HS * vis + cv.FUSED_PER_KEY * vis + (td * HS + t1) * math.ceil(vis / tile) + rd * HS + r1)
        macs += NH * 2 * HS * vis
    kv = 0
    for blk in batch.blocks:
        first = max(0, blk.p - window + 1) if window else 0
        kv += 2 * blk.b * KV * (blk.p + blk.n - first) * HS * kv_item      # each sequence's keys and values once
    N = batch.n_tokens
    return dict(flops=flops, macs=macs, reads_act=N * NH * HS * q_item + 8 * N, reads_kv=kv,
                writes=N * NH * HS * q_item)


def check_record(c, batch, NH, KV, HS, window, tile, q_item, kv_item, category="kv_cache"):
    (rec,) = c.records
    want = expected_cost(batch, NH, KV, HS, window, tile, q_item, kv_item)
    assert rec.op == "attention"
    assert rec.flops == want["flops"]
    assert rec.macs == want["macs"]
    assert dict(rec.reads) == {"activations": want["reads_act"], category: want["reads_kv"]}
    assert dict(rec.writes) == {"activations": want["writes"]}


# ---- values: the plain reference, drawn cases -----------------------------------------------------------------

@st.composite
def cases(draw):
    NH, KV = draw(st.sampled_from(HEADS))
    HS = draw(st.integers(1, 9))                       # any head size: odd, 1, not d_model / NH
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    store = draw(st.sampled_from(["contiguous", "rolling", "paged"]))
    window = draw(st.one_of(st.none(), st.integers(1, 7)))
    if store == "rolling" and window is None:
        window = draw(st.integers(1, 6))
    slots = draw(st.integers(1, 4))
    # (p, n) per sequence: decode (n = 1), prefill (p = 0), chunks after earlier keys (p > 0, n > 1); equal
    # neighbours make multi-sequence blocks
    shapes = draw(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 5)), min_size=slots, max_size=slots))
    order = draw(st.permutations(range(slots)))
    tile = draw(st.sampled_from([1, 2, 3, None]))
    seed = draw(st.integers(0, 2**32 - 1))
    return NH, KV, HS, dtype, store, window, shapes, order, tile, seed


@settings(max_examples=20, deadline=None)
@given(cases())
def test_matches_plain_reference_and_counts(case):
    NH, KV, HS, dtype, store, window, shapes, order, tile, seed = case
    rng = np.random.default_rng(seed)
    batch = make_batch(shapes, list(order))
    K, V, k_pool, v_pool, table = make_store(rng, store, shapes, window, KV, HS, dtype)
    Q = rng.standard_normal((batch.n_tokens, NH, HS)).astype(dtype)
    scale = 1.0 / math.sqrt(HS)
    with tile_size(tile), minitx.count() as c:
        out = fused_attention_forward(flat_queries(Q, batch), k_pool, v_pool, table, batch, NH, scale, window,
                                      "attn", "kv_cache")
        used_tile = cv.FUSED_TILE
    expected = reference(Q, K.astype(dtype), V.astype(dtype), batch, scale, window)
    assert out.dtype == dtype and out.shape == (batch.n_tokens, NH * HS)
    ref.assert_close(out, expected, "fused attention", dtype, terms=HS + int(batch.pos.max()) + 1)
    check_record(c, batch, NH, KV, HS, window, used_tile, np.dtype(dtype).itemsize, np.dtype(dtype).itemsize)


# Named cases, one per situation the brief lists (the drawn test covers them too, but not by name).
NAMED = {
    "training_rectangle": ([(0, 7)] * 3, [0, 1, 2]),                  # one block b=3, n=7, p=0
    "ragged_decode": ([(5, 1), (0, 1), (12, 1), (3, 1)], [0, 1, 2, 3]),  # each sequence its own position
    "decode_same_length": ([(9, 1)] * 4, [0, 1, 2, 3]),               # one block b=4, n=1
    "prefill_chunk_after_keys": ([(6, 5)], [0]),                      # p > 0: earlier keys from earlier calls
    "mixed_blocks": ([(4, 3), (10, 1), (10, 1), (0, 6), (2, 1)], [3, 0, 1, 2, 4]),
}


@pytest.mark.parametrize("name", list(NAMED))
@pytest.mark.parametrize("store, window", [("contiguous", None), ("contiguous", 4), ("rolling", 3), ("paged", None),
                                           ("paged", 5)])
@pytest.mark.parametrize("NH, KV", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("tile", [2, None])
def test_named_cases(name, store, window, NH, KV, tile):
    shapes, order = NAMED[name]
    rng = np.random.default_rng(7)
    HS, dtype = 5, np.float64
    batch = make_batch(shapes, order)
    K, V, k_pool, v_pool, table = make_store(rng, store, shapes, window, KV, HS, dtype)
    Q = rng.standard_normal((batch.n_tokens, NH, HS))
    with tile_size(tile), minitx.count() as c:
        out = fused_attention_forward(flat_queries(Q, batch), k_pool, v_pool, table, batch, NH, 0.4, window, "a",
                                      "kv_cache")
        used_tile = cv.FUSED_TILE
    ref.assert_close(out, reference(Q, K, V, batch, 0.4, window), name, dtype, terms=HS + 16)
    check_record(c, batch, NH, KV, HS, window, used_tile, 8, 8)


def test_named_cases_cover_what_they_say():
    blocks = {name: make_batch(*NAMED[name]).blocks for name in NAMED}
    assert blocks["training_rectangle"] == (Block(0, 0, 3, 7, 0),)
    assert len(blocks["ragged_decode"]) == 4 and all(b.n == 1 for b in blocks["ragged_decode"])
    assert blocks["decode_same_length"] == (Block(0, 0, 4, 1, 9),)
    assert blocks["prefill_chunk_after_keys"] == (Block(0, 0, 1, 5, 6),)
    mixed = blocks["mixed_blocks"]
    assert {(b.b, b.n) for b in mixed} >= {(1, 6), (2, 1), (1, 3)}          # a chunk, a 2-sequence decode block


# ---- values: the unfused path -------------------------------------------------------------------------------

def unfused(qkv, batch, NH, KV, HS, scale, window, X, name="u"):
    """split_forward into a contiguous store, then per block scores, softmax (window as −inf scores), mix, merge."""
    slots = batch.n_slots
    k_pool = np.zeros((slots, KV, X, HS), dtype=qkv.dtype)
    v_pool = np.zeros_like(k_pool)
    table = np.arange(slots, dtype=np.int64)[:, None]
    q, _ = split_forward(qkv, batch, NH, None, None, k_pool, v_pool, table, f"{name}.split")
    heads = np.empty((batch.n_tokens, NH * HS), dtype=qkv.dtype)
    for blk in batch.blocks:
        k, v = k_pool[blk.slot:blk.slot + blk.b, :, :blk.keys], v_pool[blk.slot:blk.slot + blk.b, :, :blk.keys]
        s, _ = scores_forward(block_queries(q, blk, NH, HS), k, f"{name}.scores")
        if window:
            i = batch.block_pos(blk)[:, None, :, None]                       # (b, 1, n, 1) query positions
            j = np.arange(blk.keys)[None, None, None, :]
            s = np.where(j <= i - window, -np.inf, s).astype(s.dtype)
        p, _ = softmax_forward(s, batch.block_pos(blk), scale, f"{name}.softmax")
        o, _ = mix_forward(p, v, f"{name}.mix")
        merge_forward(o, f"{name}.merge", heads[blk.rows])
    return heads, q, k_pool, v_pool, table


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", [None, 1, 3])
@pytest.mark.parametrize("NH, KV, HS", [(3, 3, 4), (4, 2, 3), (4, 1, 6), (2, 1, 7)])
def test_matches_unfused_ops(dtype, window, NH, KV, HS):
    rng = np.random.default_rng(NH * 100 + HS)
    for batch in (rectangle(np.zeros((2, 9), dtype=np.int64)),                       # training-like
                  make_batch([(0, 4), (0, 4), (0, 2), (0, 6)], [0, 1, 2, 3])):         # ragged prefill
        qkv = rng.standard_normal((batch.n_tokens, (NH + 2 * KV) * HS)).astype(dtype)
        X = int(batch.pos.max()) + 1
        expected, q, k_pool, v_pool, table = unfused(qkv, batch, NH, KV, HS, 0.3, window, X)
        out = fused_attention_forward(q, k_pool, v_pool, table, batch, NH, 0.3, window, "f")
        ref.assert_close(out, expected, "fused vs unfused", dtype, terms=HS + X)


def test_decode_steps_match_unfused_with_a_growing_cache():
    """Prefill a chunk, then decode token by token into the same contiguous cache: the fused op reads the keys
    earlier calls wrote, as the unfused path does."""
    rng = np.random.default_rng(3)
    NH, KV, HS, X = 4, 2, 8, 12
    k_pool, v_pool = np.zeros((2, KV, X, HS)), np.zeros((2, KV, X, HS))
    table = np.arange(2, dtype=np.int64)[:, None]
    lengths = [5, 2]
    prompt = make_batch([(0, 5), (0, 2)], [0, 1])
    calls = [prompt] + [make_batch([(lengths[0] + t, 1), (lengths[1] + t, 1)], [0, 1]) for t in range(4)]
    for batch in calls:
        qkv = rng.standard_normal((batch.n_tokens, (NH + 2 * KV) * HS))
        q, _ = split_forward(qkv, batch, NH, None, None, k_pool, v_pool, table, "split")
        out = fused_attention_forward(q, k_pool, v_pool, table, batch, NH, 0.35, None, "f")
        heads = np.empty_like(out)
        for blk in batch.blocks:
            k, v = k_pool[blk.slot:blk.slot + blk.b, :, :blk.keys], v_pool[blk.slot:blk.slot + blk.b, :, :blk.keys]
            s, _ = scores_forward(block_queries(q, blk, NH, HS), k, "s")
            p, _ = softmax_forward(s, batch.block_pos(blk), 0.35, "sm")
            o, _ = mix_forward(p, v, "m")
            merge_forward(o, "mg", heads[blk.rows])
        ref.assert_close(out, heads, "decode step", np.float64, terms=HS + X)


def test_large_scores_do_not_overflow():
    """Scores far past exp's float32 range: the running max keeps every exponent ≤ 0."""
    rng = np.random.default_rng(4)
    shapes = [(0, 70)]                                # 70 keys: two tiles of the default 64, rescaled mid-row
    K, V, k_pool, v_pool, table = make_store(rng, "contiguous", shapes, None, 1, 4, np.float32)
    K *= 30.0
    k_pool *= 30.0
    batch = make_batch(shapes, [0])
    Q = (30.0 * rng.standard_normal((70, 2, 4))).astype(np.float32)
    out = fused_attention_forward(flat_queries(Q, batch), k_pool, v_pool, table, batch, 2, 1.0, None, "a")
    ref.assert_close(out, reference(Q, K.astype(np.float32), V.astype(np.float32), batch, 1.0, None),
                     "large scores", np.float32, terms=4 + 70)


# ---- counts: the tally of a plain loop ------------------------------------------------------------------------

def fused_loop(Q, K, V, pos, slots, scale, window, tile):
    """The kernel's loop for one token per (query, head) row, over Tally numbers: tiles of `tile` visible keys,
    the online softmax with its rescale on every tile. Q (N, NH, HS), K and V (slots, KV, P, HS)."""
    N, NH, HS = Q.shape
    G = NH // K.shape[1]
    out = np.empty((N, NH * HS), dtype=object)
    for r in range(N):
        i, s = int(pos[r]), int(slots[r])
        lo = max(0, i - window + 1) if window else 0
        for h in range(NH):
            k, v, q = K[s, h // G], V[s, h // G], Q[r, h]
            m, l, o = -math.inf, 0.0, [0.0] * HS
            for t0 in range(lo, i + 1, tile):
                t1 = min(t0 + tile, i + 1)
                sc = []
                for j in range(t0, t1):
                    acc = 0.0
                    for d in range(0, HS - 3, 4):                  # four d's a pass, as the kernel groups them
                        acc = acc + ((q[d] * k[j, d] + q[d + 1] * k[j, d + 1])
                                     + (q[d + 2] * k[j, d + 2] + q[d + 3] * k[j, d + 3]))   # 8 per 4 d's
                    for d in range(HS - HS % 4, HS):
                        acc = acc + q[d] * k[j, d]                 # 2 per leftover d: 2·HS in all
                    sc.append(acc * scale)                         # 1
                m_new = m
                for x in sc:
                    m_new = max(m_new, x)                          # 1
                alpha = exp(m - m_new)                             # 2 per tile
                l = l * alpha                                      # 1 per tile
                o = [od * alpha for od in o]                       # HS per tile
                e = [exp(x - m_new) for x in sc]                   # 2
                for x in e:
                    l = l + x                                      # 1
                for jj in range(0, t1 - t0 - 1, 2):                # two keys a pass, as the kernel pairs them
                    j = t0 + jj
                    o = [o[d] + (e[jj] * v[j, d] + e[jj + 1] * v[j + 1, d]) for d in range(HS)]   # 4·HS per 2
                if (t1 - t0) % 2:
                    o = [o[d] + e[-1] * v[t1 - 1, d] for d in range(HS)]                         # 2·HS
                m = m_new
            inv = 1.0 / l                                          # 1 per row
            for d in range(HS):
                out[r, h * HS + d] = o[d] * inv                    # HS per row
    return out


@pytest.mark.parametrize("tile", [None, 3])
@pytest.mark.parametrize("window", [None, 5])
def test_tally_equals_the_conventions(tile, window):
    """Decode at 70 keys (two tiles of the default 64), a prefill chunk after earlier keys, a short decode."""
    rng = np.random.default_rng(11)
    NH, KV, HS = 4, 2, 6                              # one group of four d's and two left over
    shapes = [(69, 1), (3, 4), (1, 1)]
    batch = make_batch(shapes, [0, 1, 2])
    K, V, k_pool, v_pool, table = make_store(rng, "contiguous", shapes, window, KV, HS, np.float64)
    Q = rng.standard_normal((batch.n_tokens, NH, HS))
    with tile_size(tile), minitx.count() as c:
        out = fused_attention_forward(flat_queries(Q, batch), k_pool, v_pool, table, batch, NH, 0.5, window, "a")
        used_tile = cv.FUSED_TILE
    flops = c.flops
    t, ops = count_loop(fused_loop, tallied(Q), tallied(np.nan_to_num(K)), tallied(np.nan_to_num(V)), batch.pos,
                        slots_of(batch), 0.5, window, used_tile)
    np.testing.assert_allclose(values(t), out, rtol=1e-12, atol=1e-12)
    assert ops == flops == expected_cost(batch, NH, KV, HS, window, used_tile, 8, 8)["flops"]


def test_flops_do_not_depend_on_the_data():
    """Same shapes, different values (one with the max in the first key, one with it last): same record."""
    batch = make_batch([(0, 9)], [0])
    NH, KV, HS = 2, 1, 4
    counts = []
    for keys in (np.linspace(5, -5, 9), np.linspace(-5, 5, 9)):
        k_pool = np.repeat(keys[None, None, :, None], HS, axis=3)
        v_pool = np.ones((1, KV, 9, HS))
        q = np.ones(9 * NH * HS)
        with tile_size(2), minitx.count() as c:
            fused_attention_forward(q, k_pool, v_pool, np.zeros((1, 1), np.int64), batch, NH, 1.0, None, "a")
        counts.append(c.records[0])
    assert counts[0] == counts[1]


# ---- counts: bytes grow like T, not T² -----------------------------------------------------------------------

def test_bytes_grow_linearly_where_the_unfused_path_grows_quadratically():
    NH, KV, HS = 4, 2, 8
    fused, unfused_bytes = {}, {}
    rng = np.random.default_rng(5)
    for T in (16, 32, 64, 128):
        batch = rectangle(np.zeros((1, T), dtype=np.int64))
        qkv = rng.standard_normal((T, (NH + 2 * KV) * HS)).astype(np.float32)
        with minitx.count() as c:
            _, q, k_pool, v_pool, table = unfused(qkv, batch, NH, KV, HS, 0.3, None, T)
        unfused_bytes[T] = sum(r.bytes_read + r.bytes_written for r in c.records if not r.name.endswith("split"))
        with minitx.count() as c:
            fused_attention_forward(q, k_pool, v_pool, table, batch, NH, 0.3, None, "f")
        fused[T] = c.bytes_read + c.bytes_written
    # fused: q, positions, keys, values and the output, each read or written once: exactly linear in T
    assert all(fused[T] * 16 == fused[16] * T for T in fused)
    assert fused[16] == 16 * (NH * HS * 4 + 8 + 2 * KV * HS * 4 + NH * HS * 4)
    # unfused: the (NH, T, T) scores and probabilities written and read back: per query, bytes grow with T
    per_query = [unfused_bytes[T] / T for T in (16, 32, 64, 128)]
    assert all(b > a for a, b in zip(per_query, per_query[1:])) and per_query[-1] > 4 * per_query[0]
    assert unfused_bytes[128] > 10 * fused[128]


def test_decode_reads_each_key_once_per_sequence():
    """A decode step at 40 cached keys in a block of 3 sequences: 2·b·KV·41·HS·itemsize of keys and values."""
    NH, KV, HS = 4, 1, 8
    shapes = [(40, 1)] * 3
    K, V, k_pool, v_pool, table = make_store(np.random.default_rng(6), "contiguous", shapes, None, KV, HS,
                                             np.float32)
    k_pool, v_pool = np.nan_to_num(k_pool), np.nan_to_num(v_pool)
    batch = make_batch(shapes, [0, 1, 2])
    q = np.ones(3 * NH * HS, dtype=np.float32)
    with minitx.count() as c:
        fused_attention_forward(q, k_pool, v_pool, table, batch, NH, 0.3, None, "f", "kv_cache")
    assert c.records[0].reads["kv_cache"] == 2 * 3 * KV * 41 * HS * 4


# ---- shape-only arrays ----------------------------------------------------------------------------------------

def test_shape_only_arrays_skip_the_kernel_and_count_the_same():
    shapes = [(3, 4), (7, 1)]
    batch = make_batch(shapes, [0, 1])
    NH, KV, HS = 4, 2, 6
    K, V, k_pool, v_pool, table = make_store(np.random.default_rng(8), "paged", shapes, 3, KV, HS, np.float32)
    q = np.ones(batch.n_tokens * NH * HS, dtype=np.float32)
    with minitx.count() as real:
        fused_attention_forward(q, k_pool, v_pool, table, batch, NH, 0.3, 3, "f", "kv_cache")
    with minitx.count() as by_shape:
        out = fused_attention_forward(shaped(q.shape, q.dtype), shaped(k_pool.shape, k_pool.dtype),
                                      shaped(v_pool.shape, v_pool.dtype), table, batch, NH, 0.3, 3, "f",
                                      "kv_cache")
    assert out.shape == (batch.n_tokens, NH * HS)
    assert real == by_shape
    # by shape, any dtype: a half-precision model is counted at 2 bytes an entry (no kernel to run it)
    with minitx.count() as half:
        fused_attention_forward(shaped(q.shape, np.float16), shaped(k_pool.shape, np.float16),
                                shaped(v_pool.shape, np.float16), table, batch, NH, 0.3, 3, "f", "kv_cache")
    check_record(half, batch, NH, KV, HS, 3, cv.FUSED_TILE, 2, 2)


# ---- guards ---------------------------------------------------------------------------------------------------

def _guard_case():
    """Two sequences (3 tokens at 2..4, one at 5) in a contiguous store of 2 slots × X = 6 positions, NH=2, KV=1."""
    batch = make_batch([(2, 3), (5, 1)], [0, 1])
    rng = np.random.default_rng(9)
    k_pool, v_pool = rng.standard_normal((2, 1, 6, 4)), rng.standard_normal((2, 1, 6, 4))
    return batch, np.ones(batch.n_tokens * 2 * 4), k_pool, v_pool, np.arange(2, dtype=np.int64)[:, None]


def test_guards_reject_what_the_kernel_would_misread():
    batch, q, k_pool, v_pool, table = _guard_case()
    f = fused_attention_forward
    f(q, k_pool, v_pool, table, batch, 2, 0.5, None, "ok")                      # the valid case runs
    with pytest.raises(ValueError, match="rows"):
        f(q, k_pool, v_pool, np.array([[0], [7]], dtype=np.int64), batch, 2, 0.5, None, "x")   # row 7 of 2
    with pytest.raises(ValueError, match="rows"):
        f(q, k_pool, v_pool, np.array([[-1], [1]], dtype=np.int64), batch, 2, 0.5, None, "x")
    with pytest.raises(ValueError, match="slots"):
        f(q, k_pool, v_pool, table[:1], batch, 2, 0.5, None, "x")               # slot 1 has no table row
    bad_pos = TokenBatch(batch.ids, batch.pos + 1, batch.blocks)
    with pytest.raises(ValueError, match="positions"):
        f(q, k_pool, v_pool, table, bad_pos, 2, 0.5, None, "x")
    short = TokenBatch(batch.ids, batch.pos, batch.blocks[:1])
    with pytest.raises(ValueError, match="cover"):
        f(q, k_pool, v_pool, table, short, 2, 0.5, None, "x")                   # a row no block writes
    with pytest.raises(ValueError, match="flat"):
        f(q[:-1], k_pool, v_pool, table, batch, 2, 0.5, None, "x")
    with pytest.raises(ValueError, match="float32/bfloat16"):
        f(q.astype(np.int32), k_pool, v_pool, table, batch, 2, 0.5, None, "x")
    with pytest.raises(ValueError, match="float32/bfloat16"):
        f(q, k_pool.astype(np.int16), v_pool.astype(np.int16), table, batch, 2, 0.5, None, "x")
    with pytest.raises(ValueError, match="multiple"):
        f(np.ones(4 * 3 * 4), np.zeros((2, 2, 6, 4)), np.zeros((2, 2, 6, 4)), table, batch, 3, 0.5, None, "x")
    for w in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="window"):
            f(q, k_pool, v_pool, table, batch, 2, 0.5, w, "x")
    # a contiguous store of X = 6 positions cannot hold a query at position 6: its key would wrap onto column 0
    late = make_batch([(6, 1), (0, 1)], [0, 1])
    with pytest.raises(ValueError, match="overwritten"):
        f(np.ones(2 * 2 * 4), k_pool, v_pool, table, late, 2, 0.5, None, "x")


def test_rolling_store_rejects_a_window_it_cannot_hold():
    """X = 4 columns, a chunk of n = 3 at p = 5: the window may reach back W − 1 keys, so W ≤ X − n + 1 = 2."""
    batch = make_batch([(5, 3)], [0])
    k_pool = np.zeros((1, 1, 4, 2))
    table = np.zeros((1, 1), dtype=np.int64)
    q = np.ones(3 * 2)
    fused_attention_forward(q, k_pool, k_pool, table, batch, 1, 1.0, 2, "ok")
    with pytest.raises(ValueError, match="overwritten"):
        fused_attention_forward(q, k_pool, k_pool, table, batch, 1, 1.0, 3, "x")


def test_a_cache_in_another_dtype_counts_its_own_itemsize():
    """A float64 model over a float32 KV cache: the keys are read (and counted) at 4 bytes, q and out at 8."""
    shapes = [(4, 3), (9, 1)]
    batch = make_batch(shapes, [0, 1])
    NH, KV, HS = 4, 2, 5
    K, V, k_pool, v_pool, table = make_store(np.random.default_rng(12), "paged", shapes, None, KV, HS, np.float32)
    Q = np.random.default_rng(13).standard_normal((batch.n_tokens, NH, HS))
    with minitx.count() as c:
        out = fused_attention_forward(flat_queries(Q, batch), k_pool, v_pool, table, batch, NH, 0.4, None, "a",
                                      "kv_cache")
    assert out.dtype == np.float64
    ref.assert_close(out, reference(Q, K.astype(np.float32), V.astype(np.float32), batch, 0.4, None),
                     "mixed dtypes", np.float32, terms=HS + 10)
    check_record(c, batch, NH, KV, HS, None, cv.FUSED_TILE, 8, 4)


def test_unallocated_pages_are_fine_until_read():
    """A paged table may mark pages a sequence has not reached with −1: only the entries read must be rows."""
    shapes = [(2, 2)]                                  # positions 0..3: pages 0 and 1 of X = 2
    batch = make_batch(shapes, [0])
    K, V, k_pool, v_pool, _ = make_store(np.random.default_rng(14), "contiguous", shapes, None, 1, 3, np.float64)
    pools = [np.zeros((3, 1, 2, 3)) for _ in range(2)]
    for j in range(4):
        pools[0][[2, 0][j // 2], :, j % 2], pools[1][[2, 0][j // 2], :, j % 2] = K[0, :, j], V[0, :, j]
    table = np.array([[2, 0, -1, -1]], dtype=np.int64)
    Q = np.random.default_rng(15).standard_normal((2, 2, 3))
    out = fused_attention_forward(flat_queries(Q, batch), *pools, table, batch, 2, 0.5, None, "a")
    ref.assert_close(out, reference(Q, K, V, batch, 0.5, None), "paged", np.float64, terms=8)
    with pytest.raises(ValueError, match="rows"):
        fused_attention_forward(flat_queries(Q, batch), *pools, np.array([[2, -1, 1, 1]], dtype=np.int64), batch,
                                2, 0.5, None, "a")
