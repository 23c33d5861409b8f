"""The inference hot path's shortcuts change no result and no count, and keep every guard.

A decode or serving step is dozens of small op calls, so what each call does besides its kernel matters. These
tests pin the shortcuts that remove that work (benchmarks/serving.py and benchmarks/decode_precision.py measure
what they save):

  * fused attention is checked once per model call (a FusedPlan), not once per layer: the same logits and the
    same records as checking at every layer, and a plan made for other arguments is refused;
  * fused attention reads a 16-bit KV cache in place, widening each key and value as it loads it: bit for bit
    the kernel run on float32 copies of the pools (every 16-bit value is exactly a float32), rounded once;
  * the 16-bit split finds each token's slot without a Python loop over the blocks: bit for bit the float32
    split, rounded to 16 bits;
  * int4 nibbles are sign-extended on 8-bit integers (so the kernels convert 8 per instruction, not 4): every
    byte value, both nibbles, through the decode kernel and the dequantizer, against the integer formula;
  * the decode kernels (bf16, fp16, int8, int4) take eight weight rows per pass as two groups of four added in
    turn: bit for bit the batched path's sums, which take four rows at a time;
  * the decode kernels split the rows among the threads when the matrix is narrow (split-K: partial sums added
    at the end): the same sums in another order, within the float32 rounding bound of the unsplit kernel, and
    still bit for bit what the batched path gives under the same split; the rule never makes more blocks than
    threads, nor ranges and strips shorter than its minimums;
  * the one-pass compiled checks (fused attention's, the paged cache's) say yes exactly when the vectorised
    checks they stand in front of pass;
  * dtype kinds are one dict lookup: the same answers as by name, for every way a dtype can be given.
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitx
import minitx.core.model as model_module
import minitx.core.ops.fused_attention as fa
import minitx.core.paged_cache as paged_module
from minitx.core.batch import Block, TokenBatch
from minitx.core.ops.attention import split_forward
from minitx.core.ops.fused_attention import fused_attention_forward, plan_fused_attention
from minitx.core.ops.half import BF16, FP16, half_kind, is_half
from minitx.core.paged_cache import PagedKVCache
import minitx.core.ops.half_linear as half_linear
import minitx.core.ops.quantized_linear as quantized_linear
from minitx.core.ops.half_linear import MIN_SPLIT_ROWS, WIDE_STRIP, decode_split, half_matmul
from minitx.core.quantize import dequantize_columns, quantize_matrix, quantized_gemm
from minitx.core.shaped import shaped
from strategies import TINY_GEMMA, TINY_LLAMA
from test_fused_attention import cases, flat_queries, make_batch, make_store, tile_size

HALF = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}


def same_bits(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Equal to the bit (NaN included): the shortcut computes exactly what the long way does."""
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    differ = np.flatnonzero(a.reshape(-1).view(np.uint8) != b.reshape(-1).view(np.uint8))
    assert differ.size == 0, f"{what}: {differ.size} bytes differ, first at byte {differ[:1]}"


# ---- fused attention: checked once per model call --------------------------------------------------------------

WINDOWED = TINY_LLAMA.replace(name="test-window", sliding_window=3)      # a rolling cache, read by fused attention


@pytest.mark.parametrize("cfg", [TINY_LLAMA, TINY_GEMMA, WINDOWED], ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_model_call_checks_fused_attention_once_with_the_same_results(monkeypatch, cfg, dtype):
    """Prefill and three decode steps: one _check per call with the plan, one per layer without it (the plan
    disabled), and the same logits and the same records both ways."""
    calls = []
    real_check = fa._check

    def counted_check(*args):
        calls.append(1)
        return real_check(*args)

    monkeypatch.setattr(fa, "_check", counted_check)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 5))

    def run() -> tuple[list[np.ndarray], list, int]:
        calls.clear()
        model = minitx.Transformer(cfg, seed=3, dtype=dtype, attention="fused")
        cache = model.new_cache(2, 9, chunk=5)         # chunk: a rolling cache's room for the 5-token prefill
        with minitx.count() as c:
            logits = [model.prefill(tokens, cache, [5, 3])]
            for t in range(3):
                logits.append(model.decode([t, t + 1], cache))
        return logits, c.records, len(calls)

    planned, planned_records, planned_checks = run()
    monkeypatch.setattr(model_module, "plan_fused_attention", lambda *args: None)    # every layer checks again
    per_layer, per_layer_records, per_layer_checks = run()
    assert planned_checks == 4 and per_layer_checks == 4 * cfg.n_layers        # 4 calls: a prefill, 3 decodes
    for i, (a, b) in enumerate(zip(planned, per_layer)):
        same_bits(a, b, f"call {i}")
    assert planned_records == per_layer_records


def _plan_case():
    """Two sequences (3 tokens at 2..4, one at 5) in a contiguous store of 2 slots × X = 6, NH = 2, KV = 1."""
    batch = make_batch([(2, 3), (5, 1)], [0, 1])
    rng = np.random.default_rng(9)
    k_pool, v_pool = rng.standard_normal((2, 1, 6, 4)), rng.standard_normal((2, 1, 6, 4))
    table = np.arange(2, dtype=np.int64)[:, None]
    return batch, rng.standard_normal(batch.n_tokens * 2 * 4), k_pool, v_pool, table


def test_a_plan_gives_what_no_plan_gives():
    batch, q, k_pool, v_pool, table = _plan_case()
    plan = plan_fused_attention(k_pool, v_pool, table, batch, 2, None)
    with minitx.count() as planned:
        out = fused_attention_forward(q, k_pool, v_pool, table, batch, 2, 0.5, None, "a", plan=plan)
    with minitx.count() as checked:
        again = fused_attention_forward(q, k_pool, v_pool, table, batch, 2, 0.5, None, "a")
    same_bits(out, again, "planned vs checked")
    assert planned == checked
    # a plan made outside any count() has no FLOPs in it: worked out when a count() needs them
    assert plan.cost is None
    with minitx.count() as late:
        fused_attention_forward(q, k_pool, v_pool, table, batch, 2, 0.5, None, "a", plan=plan)
    assert late == checked


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["batch", "table", "pool shape", "heads", "window", "dtype"]))
def test_a_plan_made_for_other_arguments_is_refused(what):
    """Any argument the plan's checks depend on, changed: a ValueError naming the plan (or, for pools the kernel
    cannot read, their dtype), before the kernel runs."""
    batch, q, k_pool, v_pool, table = _plan_case()
    plan = plan_fused_attention(k_pool, v_pool, table, batch, 2, None)
    args = dict(q=q, k_pool=k_pool, v_pool=v_pool, table=table, batch=batch, n_heads=2, window=None)
    if what == "batch":                       # an equal batch, but another object: its arrays may differ
        args["batch"] = make_batch([(2, 3), (5, 1)], [0, 1])
    elif what == "table":
        args["table"] = table.copy()
    elif what == "pool shape":
        args["k_pool"] = args["v_pool"] = np.zeros((1, 1, 6, 4))
    elif what == "heads":
        args.update(n_heads=1, q=q[:q.size // 2])
    elif what == "window":
        args["window"] = 2
    else:
        args["k_pool"] = args["v_pool"] = k_pool.astype(np.int16)
    with pytest.raises(ValueError, match="float32/bfloat16" if what == "dtype" else "plan"):
        fused_attention_forward(scale=0.5, name="x", plan=plan, **args)


@st.composite
def block_layouts(draw):
    """A batch's blocks, positions and a block table, valid or nearly so: a valid tiling of the rows, then perhaps
    one field of one block, one position or one table entry changed (to anything, negative and huge included)."""
    nb = draw(st.integers(1, 4))
    rows, start = [], 0
    for _ in range(nb):
        b, n, p = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 8))
        rows.append([start, draw(st.integers(0, 3)), b, n, p])
        start += b * n
    blocks = np.array(rows, dtype=np.int64)
    pos = np.concatenate([np.tile(np.arange(p, p + n), b) for _, _, b, n, p in rows]).astype(np.int64)
    # mostly a table that fits (rows for every slot, room for every key), sometimes one that does not
    need_slots, need_keys = int((blocks[:, 1] + blocks[:, 2]).max()), int((blocks[:, 3] + blocks[:, 4]).max())
    slots, width = need_slots + draw(st.integers(-1, 1)), draw(st.integers(1, 3))
    R, X = draw(st.integers(1, 6)), -(-need_keys // width) + draw(st.integers(-1, 2))
    slots, X = max(slots, 1), max(X, 1)
    table = np.array(draw(st.lists(st.integers(0, R - 1), min_size=slots * width, max_size=slots * width)),
                     dtype=np.int64).reshape(slots, width)
    anything = st.integers(-2**62, 2**62) | st.integers(-3, 12)
    change = draw(st.sampled_from(["none", "block", "pos", "table"]))
    if change == "block":
        blocks[draw(st.integers(0, nb - 1)), draw(st.integers(0, 4))] = draw(anything)
    elif change == "pos":
        pos[draw(st.integers(0, pos.size - 1))] = draw(anything)
    elif change == "table":
        table[draw(st.integers(0, slots - 1)), draw(st.integers(0, width - 1))] = draw(anything)
    return blocks, pos, table, R, X, draw(st.one_of(st.none(), st.integers(1, 6)))


@settings(max_examples=300, deadline=None)
@given(block_layouts())
def test_the_one_pass_check_agrees_with_the_vectorised_checks(layout):
    """The compiled one-pass check (_blocks_fit, the model's usual path) says yes exactly when the vectorised
    checks pass: never yes to a layout they refuse (the kernel would read outside the pools), and yes to the
    valid ones (else every call would pay for the slow path)."""
    blocks, pos, table, R, X, window = layout
    fit = fa._blocks_fit(pos, blocks, table, R, X, window or 0)
    batch = TokenBatch(np.zeros(pos.size, dtype=np.int64), pos, tuple(Block(*map(int, row)) for row in blocks))
    pools = np.zeros((R, 1, X, 2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fa, "_blocks_fit", lambda *args: False)              # the vectorised checks alone
        try:
            fa._check(pools, pools, table, batch, 1, window)
            passes = True
        except ValueError:
            passes = False
    assert passes or not fit, "the one-pass check let through what the vectorised checks refuse"
    if well_formed(blocks):
        assert fit == passes, "the one-pass check refused a valid layout"


def well_formed(blocks: np.ndarray) -> bool:
    """Blocks as TokenBatch makes them: b, n ≥ 1, p ≥ 0, no number beyond 2^40. On others the one-pass checks
    may say no where the slower checks would accept (a conservative no: those then decide)."""
    return bool((blocks[:, 2:4] >= 1).all() and (blocks[:, 4] >= 0).all() and np.abs(blocks).max() <= 2**40)


@settings(max_examples=300, deadline=None)
@given(block_layouts(), st.integers(1, 4))
def test_the_paged_cache_one_pass_check_agrees_with_its_block_by_block_checks(layout, block_size):
    """PagedKVCache.check_batch: its compiled pass (_blocks_in_pool) says yes exactly when every block passes
    _check_block, the checks that name the slot at fault."""
    blocks, pos, table, R, _, _ = layout
    max_len = min(TINY_LLAMA.n_ctx, block_size * table.shape[1])
    cache = PagedKVCache(TINY_LLAMA, R, block_size, table.shape[0], max_len)
    cache.table = table[:, :cache.table.shape[1]].copy()
    batch = TokenBatch(np.zeros(pos.size, dtype=np.int64), pos, tuple(Block(*map(int, row)) for row in blocks))
    fit = paged_module._blocks_in_pool(batch.block_array, cache.table, cache.num_blocks, cache.block_size)
    try:
        for blk in batch.blocks:
            cache._check_block(blk)
        passes = True
    except ValueError:
        passes = False
    assert passes or not fit, "the one-pass check let through what the block-by-block checks refuse"
    if well_formed(blocks):
        assert fit == passes, "the one-pass check refused a valid layout"


def test_q_is_still_checked_with_a_plan():
    batch, q, k_pool, v_pool, table = _plan_case()
    plan = plan_fused_attention(k_pool, v_pool, table, batch, 2, None)
    with pytest.raises(ValueError, match="flat"):
        fused_attention_forward(q[:-1], k_pool, v_pool, table, batch, 2, 0.5, None, "x", plan=plan)
    with pytest.raises(ValueError, match="float32/bfloat16"):
        fused_attention_forward(q.astype(np.int32), k_pool, v_pool, table, batch, 2, 0.5, None, "x", plan=plan)


# ---- fused attention: a 16-bit cache read in place -------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(cases(), st.sampled_from(sorted(HALF)))
def test_16_bit_pools_read_in_place_equal_the_kernel_on_float32_copies(case, half):
    """Every store (contiguous, rolling, paged), window, head layout and tile: the 16-bit op's output is the
    float32 kernel's output on exact float32 copies of q and the pools, rounded to 16 bits once."""
    NH, KV, HS, _, store, window, shapes, order, tile, seed = case
    rng = np.random.default_rng(seed)
    batch = make_batch(shapes, list(order))
    _, _, k_pool, v_pool, table = make_store(rng, store, shapes, window, KV, HS, np.float32)
    k16, v16 = k_pool.astype(HALF[half]), v_pool.astype(HALF[half])
    q16 = flat_queries(rng.standard_normal((batch.n_tokens, NH, HS)), batch).astype(HALF[half])
    scale = 1.0 / math.sqrt(HS)
    with tile_size(tile), minitx.count() as c16:
        out16 = fused_attention_forward(q16, k16, v16, table, batch, NH, scale, window, "a", "kv_cache")
    with tile_size(tile):
        out32 = fused_attention_forward(q16.astype(np.float32), k16.astype(np.float32), v16.astype(np.float32),
                                        table, batch, NH, scale, window, "a", "kv_cache")
    same_bits(out16, out32.astype(HALF[half]), f"{half} fused attention")
    with tile_size(tile), minitx.count() as by_shape:       # counted as the arrays handed in: 2 bytes a value
        fused_attention_forward(shaped(q16.shape, q16.dtype), shaped(k16.shape, k16.dtype),
                                shaped(v16.shape, v16.dtype), table, batch, NH, scale, window, "a", "kv_cache")
    assert c16 == by_shape


# ---- the 16-bit split ------------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(st.sampled_from(sorted(HALF)), st.sampled_from(["contiguous", "paged"]), st.booleans(),
       st.lists(st.tuples(st.integers(0, 9), st.integers(1, 4)), min_size=1, max_size=4), st.data())
def test_16_bit_split_equals_the_float32_split_rounded(half, store, rope, shapes, data):
    """q and every K/V entry the split writes: the float32 split on exact float32 copies, rounded to 16 bits."""
    order = data.draw(st.permutations(range(len(shapes))))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    NH, KV, HS = 4, 2, 6
    batch = make_batch(shapes, list(order))
    P = max(p + n for p, n in shapes)
    if store == "contiguous":
        X, table = P, np.arange(len(shapes), dtype=np.int64)[:, None]
    else:
        X, width = 2, -(-P // 2)
        table = rng.permutation(len(shapes) * width + 1)[:len(shapes) * width].reshape(-1, width).astype(np.int64)
    R = int(table.max()) + 1
    qkv = rng.standard_normal((batch.n_tokens, (NH + 2 * KV) * HS)).astype(HALF[half])
    angles = rng.standard_normal((P, HS // 2))
    cos, sin = (np.cos(angles).astype(HALF[half]), np.sin(angles).astype(HALF[half])) if rope else (None, None)
    pools16 = [np.zeros((R, KV, X, HS), HALF[half]) for _ in range(2)]
    pools32 = [np.zeros((R, KV, X, HS), np.float32) for _ in range(2)]
    q16, _ = split_forward(qkv, batch, NH, cos, sin, *pools16, table, "s")
    wide = [None if a is None else a.astype(np.float32) for a in (cos, sin)]
    q32, _ = split_forward(qkv.astype(np.float32), batch, NH, *wide, *pools32, table, "s")
    same_bits(q16, q32.astype(HALF[half]), "q")
    for p16, p32, what in zip(pools16, pools32, "kv"):
        same_bits(p16, p32.astype(HALF[half]), what)


# ---- int4 nibbles ------------------------------------------------------------------------------------------------

def test_int4_nibbles_of_every_byte_through_the_decode_kernel_and_the_dequantizer():
    """Byte j of every row is j (all 256 values): its low nibble is column 2j, its high one 2j + 1, each the
    two's-complement ((b >> shift) & 15) ^ 8) − 8. Rows are rotated so each of the 4 rows of a decode pass holds
    other bytes, and x = (1, 16, 256, 4096) keeps every row's term apart in the exact float32 sum."""
    K, g = 4, 4
    values = np.stack([np.roll(np.arange(256, dtype=np.uint8), 37 * k) for k in range(K)])      # (K, 256)
    scales = np.ones((K // g, 512), np.float16)
    b = values.astype(np.int64)
    nibbles = np.empty((K, 512), np.int64)
    nibbles[:, 0::2] = ((b & 15) ^ 8) - 8
    nibbles[:, 1::2] = ((b >> 4) ^ 8) - 8
    assert nibbles.min() == -8 and nibbles.max() == 7
    np.testing.assert_array_equal(dequantize_columns(values, scales, "int4", 0, 512), nibbles.astype(np.float32))
    x = np.array([[1.0, 16.0, 256.0, 4096.0]], np.float32)
    out = np.empty((1, 512), np.float32)
    quantized_gemm(x, values, scales, "int4", out)                  # one row of x: the decode (4-row) path
    np.testing.assert_array_equal(out[0], (x[0].astype(np.int64) @ nibbles).astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["bfloat16", "float16", "int8", "int4"]), st.integers(1, 40), st.integers(1, 70),
       st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_the_decode_kernels_sum_exactly_as_the_batched_path(fmt, K_groups, M, g4, seed):
    """One row of x (the decode kernels: eight rows of weights per pass, then four, then the rest) gives, bit for
    bit, the output that row gets among three (the batched path: a widened tile of four rows at a time): the two
    paths make the same products and add them in the same order, whatever K, M and the group size."""
    rng = np.random.default_rng(seed)
    g = 4 * g4 if fmt.startswith("int") else 1
    K = K_groups * g if fmt.startswith("int") else K_groups
    w = rng.standard_normal((K, M)).astype(np.float32)
    x = rng.standard_normal((3, K)).astype(np.float32)
    out1, out3 = np.empty((1, M), np.float32), np.empty((3, M), np.float32)
    if fmt in HALF:
        wh = w.astype(HALF[fmt])
        half_matmul(x[1:2], wh, None, out1)
        half_matmul(x, wh, None, out3)
    else:
        qw = quantize_matrix(w, fmt, g)
        quantized_gemm(x[1:2], qw.values, qw.scales, fmt, out1)
        quantized_gemm(x, qw.values, qw.scales, fmt, out3)
    same_bits(out1[0], out3[1], f"{fmt} decode row vs batched row")


# ---- split-K: the rows of a narrow matrix shared among the threads -------------------------------------------

def _decode_outputs(fmt, x, w, g, split):
    """out (N, M) float32 of the decode kernel of `fmt` on x (N, K) and the float32 matrix w rounded to `fmt`,
    and the matrix the kernel multiplies, as exact float64 values (16-bit weights widened, or q · scale). The
    kernels cut the matrix into `split` = (PK, PM) blocks, whatever the thread count."""
    out = np.empty((x.shape[0], w.shape[1]), np.float32)
    with pytest.MonkeyPatch.context() as mp:
        for module in (half_linear, quantized_linear):
            mp.setattr(module, "decode_split", lambda *args: split)
        if fmt in HALF:
            wh = w.astype(HALF[fmt])
            half_matmul(x, wh, None, out)
            return out, wh.astype(np.float64)
        qw = quantize_matrix(w, fmt, g)
        quantized_gemm(x, qw.values, qw.scales, fmt, out)
    return out, dequantize_columns(qw.values, qw.scales, fmt, 0, w.shape[1]).astype(np.float64)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["bfloat16", "float16", "int8", "int4"]), st.integers(1, 40), st.integers(1, 70),
       st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_split_k_sums_within_the_rounding_bound_and_decode_equals_batched(fmt, K_groups, M, g4, PK, PM, seed):
    """Any cut (PK row ranges × PM column strips, some of them empty when PK·8 or PM exceeds the matrix) against
    the unsplit kernel (1 × 1): both add the same float32 products x[k]·w[k, m], each rounded once, in two
    different orders. A sum of K terms added in any order is within γ(K − 1)·Σ|terms| of the exact sum, with
    γ(n) = n·u / (1 − n·u) and u = eps32 / 2 the unit roundoff (Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., ch. 4), so the two are within 2·γ(K − 1)·Σ|x·w| of each other: at most
    K·eps32·Σ_k |x[k]|·|w[k, m]|, the step from K − 1 to K covering the γ's denominator and each product's own
    rounding (a relative u). Under the same cut, one row of x (eight-row passes) gives bit for bit what it gets
    among three (four-row tiles): every range starts a pass."""
    rng = np.random.default_rng(seed)
    g = 4 * g4 if fmt.startswith("int") else 1
    K = K_groups * g if fmt.startswith("int") else K_groups
    w = rng.standard_normal((K, M)).astype(np.float32)
    x = rng.standard_normal((3, K)).astype(np.float32)
    whole, wd = _decode_outputs(fmt, x[1:2], w, g, (1, 1))
    split1, _ = _decode_outputs(fmt, x[1:2], w, g, (PK, PM))
    split3, _ = _decode_outputs(fmt, x, w, g, (PK, PM))
    bound = K * np.finfo(np.float32).eps * (np.abs(x[1:2].astype(np.float64)) @ np.abs(wd))
    err = np.abs(split1.astype(np.float64) - whole)
    assert np.all(err <= bound), f"{fmt} split {PK}×{PM}: error {err.max():.3e} over the bound at {err.argmax()}"
    same_bits(split1[0], split3[1], f"{fmt} split {PK}×{PM}: decode row vs batched row")


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 64), st.integers(0, 20000), st.integers(0, 20000), st.sampled_from([(8, 1), (128, 1),
                                                                                         (32, 2)]))
def test_the_split_rule_fits_the_threads_and_its_minimums(threads, K, M, units):
    """PK·PM blocks, never more than the threads; column strips of WIDE_STRIP columns or more and row ranges
    of MIN_SPLIT_ROWS rows (and one unit) or more whenever there are more than one."""
    k_unit, m_unit = units
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(half_linear, "get_num_threads", lambda: threads)
        PK, PM = decode_split(K, M, k_unit, m_unit)
    assert PK >= 1 and PM >= 1 and PK * PM <= threads
    assert PM == 1 or M * m_unit // PM >= WIDE_STRIP
    assert PK == 1 or K // PK >= max(MIN_SPLIT_ROWS, k_unit)


# ---- dtype kinds -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given_as, kind", [
    (np.dtype(ml_dtypes.bfloat16), BF16), (ml_dtypes.bfloat16, BF16), ("bfloat16", BF16),
    (np.dtype(np.float16), FP16), (np.float16, FP16), ("float16", FP16), ("f2", FP16), (np.dtype(">f2"), FP16),
    (np.float32, None), ("float64", None), (np.dtype(np.int16), None), (np.dtype(np.uint16), None)])
def test_half_kind_by_type_answers_as_by_name(given_as, kind):
    assert half_kind(given_as) == kind
    assert half_kind(given_as) == {"bfloat16": BF16, "float16": FP16}.get(np.dtype(given_as).name)


def test_is_half_only_for_16_bit_float_arrays():
    assert is_half(np.zeros(2, ml_dtypes.bfloat16)) and is_half(np.zeros(2, np.float16))
    assert is_half(shaped((3,), np.float16))
    assert not any(is_half(a) for a in (np.zeros(2, np.float32), np.zeros(2, np.uint16), np.float16(1.0), 1.0,
                                        [np.float16(1.0)], None))
