"""The simulator's step cost (minitx.serving.step_cost) against the formulas' Ledger of the same step.

StepCost computes a serving step's FLOPs, bytes and roofline time from a handful of sums over the step's
sequences (N, R, the visible pairs, the key tiles, the keys read; per sequence for unfused attention), with
coefficients read off formulas.step. Here, on hypothesis-drawn mixes of prefill chunks and decode tokens, for
models of every family, fused and unfused attention, with and without a sliding window, in several precisions:

  * FLOPs and bytes equal formulas.step(...)'s totals exactly (integers);
  * the time equals roofline.analyze(formulas.step(...)).time within the rounding of summing its records;
  * mfu and mbu divide the compute and memory times: the same as the roofline of a chip with peak·mfu and
    bandwidth·mbu.

formulas.step is itself proven equal to shape-only counts of Transformer.run (tests/test_shape_only.py,
tests/test_formulas.py), so StepCost equals what the model records when it runs that step.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx import Config, formulas, hardware, roofline
from minitx.serving.step_cost import StepCost, key_tiles, keys_read, visible_pairs
from strategies import configs

H100 = hardware.get("h100-sxm")
# A small Llama with a sliding window shorter than a tile (W=5) and a context long enough for several 64-key
# tiles, so every branch of the window and tile sums is reached cheaply.
WINDOWED = Config.preset("tiny-llama").replace(name="windowed", n_ctx=300, sliding_window=5)
REAL = ["llama-3-8b", "mistral-7b", "gpt2", "gemma-2b", "llama-2-70b"]
EPS = np.finfo(np.float64).eps


def rounding(records: int) -> float:
    """Relative tolerance for comparing two float sums of `records` positive terms summed in different orders:
    each addition rounds by at most eps/2 relative, so two sums differ by at most records·eps; times 4 for the
    divisions and the max before the sums."""
    return 4 * records * EPS


@st.composite
def mixes(draw, cfg: Config, max_sequences: int = 6):
    """(n, p, logits_rows): up to max_sequences sequences, each n new tokens at position p (decode tokens n = 1,
    prefill chunks longer, some sequences repeated so that equal chunks can share a block), and how many rows
    want logits (None = all)."""
    m = draw(st.integers(1, max_sequences))
    n, p = [], []
    for _ in range(m):
        if n and draw(st.booleans()) and draw(st.booleans()):
            n.append(n[-1]); p.append(p[-1])                       # a twin: same shape, a block of b = 2
            continue
        length = draw(st.sampled_from([1, 1, 2, 3, 7, 64, 65, 130]))
        length = min(length, cfg.n_ctx)
        n.append(length)
        p.append(draw(st.integers(0, cfg.n_ctx - length)))
    total = sum(n)
    rows = draw(st.one_of(st.none(), st.integers(0, total)))
    return n, p, rows


def merged_blocks(n, p) -> list[tuple[int, int, int]]:
    """The sequences as formulas.step's blocks, neighbours with equal (n, p) merged into one block of b > 1: the
    way minitx.core.batch.pack groups them."""
    blocks: list[list[int]] = []
    for a, b in zip(n, p):
        if blocks and blocks[-1][1:] == [a, b]:
            blocks[-1][0] += 1
        else:
            blocks.append([1, a, b])
    return [tuple(b) for b in blocks]


def check_step(cost: StepCost, n, p, rows) -> None:
    ledger = formulas.step(cost.chip_cfg, merged_blocks(n, p), cost.precision, cost.attention, logits_rows=rows)
    got = cost.costs(n, p, rows)
    assert (got.flops, got.bytes) == (ledger.flops, ledger.bytes), (n, p, rows)
    expected = roofline.analyze(ledger, cost.hardware, cost.precision).time
    assert cost.compute_time(n, p, rows) == pytest.approx(expected, rel=rounding(len(ledger)))


_COSTS: dict[tuple, StepCost] = {}


def step_cost(cfg: Config, dtype: str, attention: str, tp: int = 1) -> StepCost:
    """One StepCost per setting, built once (building it probes formulas.step a dozen times)."""
    key = (cfg, dtype, attention, tp)
    if key not in _COSTS:
        _COSTS[key] = StepCost(cfg, H100, dtype, attention, tp=tp)
    return _COSTS[key]


@settings(max_examples=25, deadline=None)
@given(st.data(), st.sampled_from(["fused", "unfused"]))
def test_tiny_drawn_models_equal_the_formulas(data, attention):
    cfg = data.draw(configs())
    cost = StepCost(cfg, H100, "float32", attention)
    n, p, rows = data.draw(mixes(cfg))
    check_step(cost, n, p, rows)


@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from(REAL), st.sampled_from(["bf16", "int8", "fp32"]),
       st.sampled_from(["fused", "unfused"]))
def test_real_models_equal_the_formulas(data, name, dtype, attention):
    cfg = Config.preset(name)
    cost = step_cost(cfg, dtype, attention)
    n, p, rows = data.draw(mixes(cfg))
    check_step(cost, n, p, rows)


@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from(["fused", "unfused"]))
def test_a_sliding_window_shorter_than_a_tile(data, attention):
    cost = step_cost(WINDOWED, "float32", attention)
    n, p, rows = data.draw(mixes(WINDOWED))
    check_step(cost, n, p, rows)


@settings(max_examples=15, deadline=None)
@given(st.data(), st.sampled_from([("llama-2-70b", 8), ("llama-3-8b", 2), ("gpt2", 3)]),
       st.sampled_from(["fused", "unfused"]))
def test_tensor_parallel_chips_equal_the_formulas_of_their_shard(data, name_tp, attention):
    name, tp = name_tp
    cost = step_cost(Config.preset(name), "bf16", attention, tp)
    n, p, rows = data.draw(mixes(cost.cfg))
    check_step(cost, n, p, rows)


def test_efficiencies_divide_compute_and_memory_times():
    cfg = Config.preset("llama-3-8b")
    n, p = [512, 1, 1, 1], [0, 700, 93, 4000]
    slow = StepCost(cfg, H100, "bf16", "fused", mfu=0.5, mbu=0.8)
    # the same step on a chip whose peak and bandwidth are the fractions reached
    derated = hardware.custom("derated", {"bf16": 989.4e12 * 0.5}, 3.35e12 * 0.8, 80e9)
    ledger = formulas.step(cfg, slow.blocks(n, p), "bf16", "fused", logits_rows=4)
    expected = roofline.analyze(ledger, derated, "bf16").time
    assert slow.time(n, p, 4) == pytest.approx(expected, rel=rounding(len(ledger)))
    assert slow.time(n, p, 4) > StepCost(cfg, H100, "bf16", "fused").time(n, p, 4)


def test_decode_step_of_a_whole_batch_matches_the_serving_roofline():
    # formulas.decode_step(B, t) is B sequences of one token at position t: the same numbers through StepCost
    cfg = Config.preset("llama-3-8b")
    cost = step_cost(cfg, "bf16", "fused")
    B, t = 64, 1000
    ledger = formulas.decode_step(cfg, B, t, "bf16", "fused")
    assert cost.costs([1] * B, [t] * B, B).flops == ledger.flops
    assert cost.costs([1] * B, [t] * B, None).bytes == ledger.bytes        # decode: no select_last
    rl = roofline.analyze(ledger, H100, "bf16").time
    assert cost.compute_time([1] * B, [t] * B) == pytest.approx(rl, rel=rounding(len(ledger)))


# ---- the sums, against brute force ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 400), st.one_of(st.none(), st.integers(1, 200)),
       st.sampled_from([1, 7, 64]))
def test_the_sums_equal_their_loops(n, p, W, tile):
    positions = range(p + 1, p + n + 1)                   # v: a query at position v − 1 sees v keys
    seen = [v if W is None else min(v, W) for v in positions]
    arr_n, arr_p = np.array([n]), np.array([p])
    assert visible_pairs(arr_n, arr_p, W)[0] == sum(seen)
    assert key_tiles(arr_n, arr_p, W, tile)[0] == sum(-(-s // tile) for s in seen)
    first_key = 0 if W is None else max(0, p - W + 1)      # the first query's window start
    assert keys_read(arr_n, arr_p, W)[0] == p + n - first_key


# ---- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(mfu=0), "mfu"), (dict(mfu=1.5), "mfu"), (dict(mbu=float("nan")), "mbu"),
    (dict(attention="flash"), "attention"), (dict(tp=3), "tp=3"), (dict(tp=0), "tp"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StepCost(Config.preset("llama-3-8b"), H100, "bf16", **kwargs)


@pytest.mark.parametrize("n, p, rows, message", [
    ([], [], None, "non-empty"), ([1, 2], [0], None, "one length"), ([0], [0], None, "n ≥ 1"),
    ([1], [-1], None, "p ≥ 0"), ([10], [8190], None, "n_ctx=8192"), ([3], [0], 4, "logits_rows"),
    ([1.5], [0], None, "n must be a sequence of integers"), ([True], [0], None, "n must be"),
    ([1], ["0"], None, "p must be"), ([1], [2 ** 70], None, "p must be"),
])
def test_bad_steps_are_refused(n, p, rows, message):
    with pytest.raises(ValueError, match=message):
        step_cost(Config.preset("llama-3-8b"), "bf16", "fused").time(n, p, rows)


def test_a_config_is_required():
    with pytest.raises(TypeError, match="cfg"):
        StepCost("llama-3-8b", H100)


def test_tp_needs_a_chip_link():
    with pytest.raises(ValueError, match="tpu-v5e has none"):
        StepCost(Config.preset("llama-3-8b"), "tpu-v5e", "bf16", tp=2)
