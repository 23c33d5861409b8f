"""The roofline model, checked against hand arithmetic written out with the published figures.

Hand arithmetic uses literals (parameter counts from docs/formulas.md, "Published parameter counts"; H100 SXM
989.4e12 FLOP/s bf16 and 3.35e12 B/s), so a change in a preset or a formula shows up here rather than cancelling
out.
"""
import math
import sys

import numpy as np
import pytest

from minitx import Config, KVCache, Transformer, count, dtypes, formulas, hardware, measured, plots, roofline, serving, units
from minitx.accounting.ledger import make

H100_BF16, H100_BW = 989.4e12, 3.35e12
LLAMA2_7B_P, LLAMA3_8B_P = 6_738_415_616, 8_030_261_248
EXACT = 1e-12


@pytest.fixture(scope="module")
def llama2():
    return Config.preset("llama-2-7b")


@pytest.fixture(scope="module")
def llama3():
    return Config.preset("llama-3-8b")


@pytest.fixture(scope="module")
def cpu():
    # A tiny budget: the numbers only need to be positive and of the right order for the loose bounds below.
    return hardware.measure(seconds_budget=0.5, sizes=(256, 512), copy_bytes=64e6)


# ---- the decode floor ------------------------------------------------------------------------------------------

def test_decode_floor_llama2_7b_every_parameter_read(llama2):
    # 6,738,415,616 params x 2 bytes / 3.35e12 B/s = 4.0229 ms
    floor = serving.decode_floor(llama2, "h100", "bf16", batch=1, context=0, embedding="read")
    assert floor.weight_bytes == LLAMA2_7B_P * 2
    assert floor.time == pytest.approx(LLAMA2_7B_P * 2 / H100_BW, rel=EXACT)
    assert round(floor.time * 1e3, 2) == 4.02


def test_decode_floor_llama2_7b_embedding_gathered(llama2):
    # untied: the 32000 x 4096 input table is gathered, one 4096-row per token; the LM head is read in full
    floor = serving.decode_floor(llama2, "h100", "bf16", batch=1, context=0, embedding="gather")
    by_hand = (LLAMA2_7B_P - 32000 * 4096 + 4096) * 2 / H100_BW
    assert floor.time == pytest.approx(by_hand, rel=EXACT)
    assert round(floor.time * 1e3, 2) == 3.94


def test_decode_floor_llama3_8b_both_conventions(llama3):
    read = serving.decode_floor(llama3, "h100", "bf16", embedding="read")
    gather = serving.decode_floor(llama3, "h100", "bf16", embedding="gather")
    assert read.time == pytest.approx(LLAMA3_8B_P * 2 / H100_BW, rel=EXACT)
    assert gather.time == pytest.approx((LLAMA3_8B_P - 128256 * 4096 + 4096) * 2 / H100_BW, rel=EXACT)
    assert (round(read.time * 1e3, 2), round(gather.time * 1e3, 2)) == (4.79, 4.48)


def test_decode_floor_tied_embedding_is_read_in_full_either_way():
    # GPT-2's wte is the LM head: every step reads it whole. Only the learned-position table is gathered.
    cfg = Config.preset("gpt2")
    read = serving.decode_floor(cfg, "h100", "bf16", embedding="read")
    gather = serving.decode_floor(cfg, "h100", "bf16", embedding="gather")
    assert read.weight_bytes - gather.weight_bytes == (1024 * 768 - 768) * 2


@pytest.mark.parametrize("batch, context", [(1, 4096), (8, 2048), (32, 1000)])
def test_kv_cache_adds_batch_times_kv_bytes_over_bandwidth(llama2, batch, context):
    # Llama-2-7B: 2 (K, V) x 32 layers x 32 heads x 128 x 2 bytes = 524,288 bytes per token
    # (docs/formulas.md, "KV cache")
    short = serving.decode_floor(llama2, "h100", "bf16", batch=batch, context=0)
    long = serving.decode_floor(llama2, "h100", "bf16", batch=batch, context=context)
    assert long.kv_bytes == batch * context * 524_288 == formulas.kv_cache_bytes(llama2, batch, context, "bf16")
    assert long.time - short.time == pytest.approx(batch * context * 524_288 / H100_BW, rel=1e-9)


def test_op_by_op_decode_reads_the_whole_kv_cache(llama3):
    # In the formulas' decode step the scores read K and the mix reads V for all t+1 positions of every layer:
    # exactly B·(t+1)·KV bytes per token, so the step time grows by at least that over the bandwidth.
    B, t1, t2 = 16, 100, 2100
    a = serving.decode_roofline(llama3, "h100", "bf16", B, t1)
    b = serving.decode_roofline(llama3, "h100", "bf16", B, t2)
    kv_read = formulas.decode_step(llama3, B, t2, "bf16").reads["kv_cache"]
    assert kv_read == B * (t2 + 1) * 131_072
    assert b.time - a.time >= B * (t2 - t1) * 131_072 / H100_BW


def test_scaling_book_step_formula_reproduces_the_cost_table(llama3):
    # docs/formulas.md, "Serving: latency and batching": step = B·KV/BW + max(W/BW, 2·B·P/peak) at 2k context
    # -> tokens/s 205, 1472, 4349, 6450, 8505
    for B, printed in [(1, 205), (8, 1472), (32, 4349), (64, 6450), (128, 8505)]:
        floor = serving.decode_floor(llama3, "h100", "bf16", batch=B, context=2048)
        by_hand = B / (B * 2048 * 131_072 / H100_BW + max(LLAMA3_8B_P * 2 / H100_BW, 2 * B * LLAMA3_8B_P / H100_BF16))
        assert floor.tokens_per_s == pytest.approx(by_hand, rel=EXACT)
        assert round(floor.tokens_per_s) == printed


def test_large_batches_turn_the_classic_step_compute_bound(llama3):
    small = serving.decode_floor(llama3, "h100", "bf16", batch=64)
    big = serving.decode_floor(llama3, "h100", "bf16", batch=1024)
    assert small.t_weights > small.t_compute and big.t_compute > big.t_weights
    assert big.t_compute == pytest.approx(2 * 1024 * LLAMA3_8B_P / H100_BF16, rel=EXACT)


# ---- prefill ---------------------------------------------------------------------------------------------------

def test_prefill_llama3_8b_1000_tokens(llama3):
    # 2 x 8,030,261,248 x 1000 = 1.606e13; causal attention 4 x 32 layers x 4096 x 1000·1001/2 = 2.624e11
    p = serving.prefill_floor(llama3, "h100", "bf16", tokens=1000)
    assert p.linear_flops == 2 * LLAMA3_8B_P * 1000
    assert p.attention_flops == 4 * 32 * 4096 * 500_500 == 262_406_144_000
    assert p.t_compute == pytest.approx((2 * LLAMA3_8B_P * 1000 + 262_406_144_000) / H100_BF16, rel=EXACT)
    assert round(p.t_compute * 1e3, 1) == 16.5
    assert p.time == p.t_compute > p.t_weights                   # compute-bound at 1,000 tokens


def test_prefill_without_embedding_flops(llama3):
    # the lookup is a gather: the 128256 x 4096 input table does no multiply-adds (minitx's convention)
    p = serving.prefill_floor(llama3, "h100", "bf16", tokens=1000, embedding_flops=False)
    by_hand = (2 * (LLAMA3_8B_P - 128256 * 4096) * 1000 + 262_406_144_000) / H100_BF16
    assert p.t_compute == pytest.approx(by_hand, rel=EXACT)
    assert round(p.t_compute * 1e3, 1) == 15.4


def test_prefill_attention_conventions(llama3):
    full = serving.prefill_floor(llama3, "h100", "bf16", tokens=1000, attention="full")
    none = serving.prefill_floor(llama3, "h100", "bf16", tokens=1000, attention="none")
    assert full.attention_flops == 4 * 32 * 4096 * 1000 * 1000 == formulas.attention_flops_palm(llama3, 1000) * 1000
    assert none.attention_flops == 0


# ---- op by op --------------------------------------------------------------------------------------------------

def test_analyze_takes_the_max_per_op_and_sums():
    def cost(name, op, flops, read, written):
        return make(name, op, flops, reads=(("activations", read),), writes=(("activations", written),),
                    phase="decode")
    hw = hardware.custom("toy", {"fp32": 100.0}, bandwidth=10.0, memory=1e9)      # ridge 10 FLOP/B
    rl = roofline.analyze([cost("a", "matmul", 1000, 50, 50), cost("b", "norm", 100, 100, 100)], hw, "fp32")
    a, b = rl.ops
    assert (a.t_compute, a.t_memory, a.time, a.bound, a.intensity) == (10.0, 10.0, 10.0, "memory", 10.0)
    assert (b.time, b.bound) == (20.0, "memory")
    assert rl.time == 30.0 and rl.phases()["decode"].time == 30.0
    assert rl.by_op()["matmul"].flops == 1000
    with pytest.raises(TypeError, match="Records"):
        roofline.analyze([object()], hw, "fp32")


def test_counted_ops_and_formulas_give_the_same_roofline():
    # The counter's records of a real prefill + decode step and the formulas' records are the same numbers,
    # so their rooflines agree to rounding: one path for executed models, one for models too big to run.
    cfg = Config.preset("small-llama")
    model = Transformer(cfg)
    B, T = 2, 12
    cache = KVCache(cfg, B, T + 1)
    with count() as c:
        model.prefill(np.ones((B, T), dtype=np.int64), cache)
        model.decode(np.ones(B, dtype=np.int64), cache)
    counted = roofline.analyze(c, "h100", "fp32")
    assert set(counted.phases()) == {"prefill", "decode"}
    pre = roofline.analyze(formulas.prefill(cfg, B, T), "h100", "fp32")
    dec = roofline.analyze(formulas.decode_step(cfg, B, T), "h100", "fp32")
    assert counted.phases()["prefill"].time == pytest.approx(pre.time, rel=1e-12)
    assert counted.phases()["decode"].time == pytest.approx(dec.time, rel=1e-12)


def test_mean_decode_step_is_exact(llama3):
    # decode_steps interpolates the affine per-op costs; brute force over every step must agree
    small = Config.preset("small-gpt2")
    for cfg, hw in ((small, "h100"), (small, "l4")):
        mean, _ = serving.decode_steps(cfg, hw, "bf16", batch=4, first=10, steps=30)
        brute = np.mean([serving.decode_roofline(cfg, hw, "bf16", 4, t).time for t in range(10, 40)])
        assert mean == pytest.approx(brute, rel=1e-12)


def test_seventy_billion_answers_quickly():
    import time
    start = time.perf_counter()
    serving.sweep(Config.preset("llama-3-70b"), "h100", "int8", [1, 8, 32], prompt=1000, gen=200)
    assert time.perf_counter() - start < 1.5


# ---- batching --------------------------------------------------------------------------------------------------

def test_critical_batch_is_the_ridge_in_bf16(llama3):
    crit = serving.critical_batch(llama3, "h100", "bf16")
    assert crit.analytic == pytest.approx(H100_BF16 / H100_BW, rel=EXACT)          # ridge · 2 / 2
    # With the activations every unfused matmul also moves, Σ2BKM/peak >= Σ s(KM + BK + BM)/BW gives
    #   B >= (s/2)·ridge / (1 − (s/2)·ridge·Σ(K+M)/ΣKM)
    C, V, L, F = 4096, 128256, 32, 14336
    qkv = (32 + 2 * 8) * 128
    sum_km = L * (C * qkv + C * C + C * 2 * F + F * C) + C * V
    sum_k_plus_m = L * ((C + qkv) + (C + C) + (C + 2 * F) + (F + C)) + (C + V)
    assert sum_km == formulas.matmul_params(llama3)
    ridge = H100_BF16 / H100_BW
    assert crit.from_ops == math.ceil(ridge / (1 - ridge * sum_k_plus_m / sum_km))
    assert 1.0 < crit.from_ops / crit.analytic < 1.15
    step = lambda b: serving.decode_roofline(llama3, "h100", "bf16", b, 0).by_op()["matmul"]
    below, at = step(crit.from_ops - 1), step(crit.from_ops)
    assert below.t_compute < below.t_memory and at.t_compute >= at.t_memory


def test_critical_batch_in_other_dtypes(llama3):
    # "int8" is weight-only int8 (W8A16): the matmuls compute in bf16, so the bf16 ridge applies, and a weight is
    # b bytes: the 32 layers' matrices in int8 plus a float16 scale per 128 inputs, the embedding and head in bf16
    C, V, L, F, qkv = 4096, 128256, 32, 14336, (32 + 2 * 8) * 128
    shapes = ((C, qkv), (C, C), (C, 2 * F), (F, C))
    matrices = L * sum(K * M for K, M in shapes)
    stored = matrices + L * sum(K // 128 * M * 2 for K, M in shapes) + (LLAMA3_8B_P - matrices) * 2
    int8 = serving.critical_batch(llama3, "h100", "int8")
    assert int8.bytes_per_weight == stored / LLAMA3_8B_P
    assert int8.analytic == pytest.approx(H100_BF16 / H100_BW * stored / LLAMA3_8B_P / 2, rel=EXACT)
    # the same batch as bf16 would need twice the bytes per weight: int8 weights halve the critical batch,
    # nearly (the bf16 tables keep it above half)
    assert 0.5 < int8.analytic / serving.critical_batch(llama3, "h100", "bf16").analytic < 0.6
    # and int4: ~half a byte per weight
    int4 = serving.critical_batch(llama3, "h100", "int4")
    assert int4.bytes_per_weight < int8.bytes_per_weight and int4.from_ops < int8.from_ops
    # fp32: intensity B/2 -> twice the fp32 ridge
    fp32 = serving.critical_batch(llama3, "h100", "fp32")
    assert fp32.analytic == pytest.approx(2 * 66.9e12 / H100_BW, rel=EXACT)


def test_max_batch_is_consistent_with_the_memory_formula(llama3, llama2):
    # docs/formulas.md, "Serving: latency and batching": 16.06 GB of weights + B·2048·131,072 bytes; B = 256
    # needs 84.8 GB > 80 GB
    assert serving.memory_needed(llama3, "bf16", 256, 2048) == LLAMA3_8B_P * 2 + 256 * 2048 * 131_072
    assert round(serving.memory_needed(llama3, "bf16", 256, 2048) / 1e9, 1) == 84.8
    most = serving.max_batch(llama3, "h100", "bf16", 2048)
    assert most == (80e9 - LLAMA3_8B_P * 2) // (2048 * 131_072) == 238
    need = lambda b: serving.memory_needed(llama3, "bf16", b, 2048)
    assert need(most) <= 80e9 < need(most + 1)
    # Baseten: Llama-2-7B on an A10 (24 GB) at 4096 tokens -> batch 4
    assert serving.max_batch(llama2, "a10", "bf16", 4096) == 4
    # weights that do not fit at all
    assert serving.max_batch(Config.preset("llama-3-70b"), "h100", "bf16", 1000) == 0


def test_sweep_latency_and_throughput(llama3):
    points = serving.sweep(llama3, "h100", "bf16", [1, 8, 64], prompt=1000, gen=200)
    one, eight, many = points
    for p in points:
        assert p.latency == pytest.approx(p.ttft + p.tpot * 199, rel=EXACT)
        assert p.tokens_per_s == pytest.approx(p.batch / p.tpot, rel=EXACT)
        assert p.fits
    # batching: throughput up, per-user speed down, TTFT up (prompts prefilled together)
    assert one.tokens_per_s < eight.tokens_per_s < many.tokens_per_s
    assert one.tokens_per_s_per_user > eight.tokens_per_s_per_user > many.tokens_per_s_per_user
    assert one.ttft < eight.ttft < many.ttft
    assert eight.ttft == pytest.approx(8 * one.ttft, rel=0.02)   # compute-bound: ~linear in the batch
    assert one.decode_bound == "memory" and one.prefill_bound == "compute"
    # batch 1 decode: within a few % of the weight-bytes floor (the rest: activations, KV, small ops)
    assert 1.0 < one.tpot / serving.decode_floor(llama3, "h100", "bf16", embedding="gather").memory_time < 1.05


# ---- predicted vs measured, here -------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["reference", "small-gpt2"])
def test_decode_step_against_the_measured_roofline(cpu, preset):
    m = measured.measure_inference(preset, cpu, batch=1, prompt=16, steps=8, repeats=2)
    decode = m.phases["decode"]
    print(f"\nthis CPU: {cpu.peak('fp32') / 1e9:.1f} GFLOP/s fp32, {cpu.bandwidth / 1e9:.2f} GB/s; {preset} "
          f"decode step measured {decode.measured * 1e3:.3f} ms vs roofline {decode.predicted * 1e3:.3f} ms: "
          f"factor {decode.factor:.2f} (prefill factor {m.phases['prefill'].factor:.2f})")
    print(m.table())
    assert 0.02 < decode.factor < 50
    # the predicted decode step reads every weight once: at least the weight bytes over the bandwidth
    assert decode.predicted >= formulas.param_bytes(Config.preset(preset)) / cpu.bandwidth * 0.999
    assert set(k[0] for k in m.ops) == {"prefill", "decode"}
    assert all(c.measured > 0 and c.predicted >= 0 for c in m.ops.values())


def test_measured_decode_sweep_small_model(cpu):
    points = measured.measure_decode_sweep("small-gpt2", cpu, batches=(1, 8), prompt=8, steps=4, repeats=1)
    assert [p.batch for p in points] == [1, 8]
    # more tokens per step for at most proportionally more time (equal once compute-bound)
    assert points[1].predicted_tokens_per_s >= points[0].predicted_tokens_per_s * (1 - 1e-9)
    assert points[1].intensity > points[0].intensity
    assert all(p.measured > 0 for p in points)


# ---- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda c: serving.decode_floor(c, "h100", "bf17"), "dtype"),
    (lambda c: serving.decode_floor(c, "h100", "bf16", batch=0), "batch"),
    (lambda c: serving.decode_floor(c, "h100", "bf16", batch=-3), "batch"),
    (lambda c: serving.decode_floor(c, "h100", "bf16", embedding="maybe"), "embedding"),
    (lambda c: serving.prefill_floor(c, "h100", "bf16", tokens=0), "tokens"),
    (lambda c: serving.sweep(c, "h100", "bf16", [1], prompt=8000, gen=500), "n_ctx"),
    (lambda c: serving.decode_floor(c, "h1000", "bf16"), "unknown hardware"),
    (lambda c: serving.decode_floor(c, "t4", "bf16"), "no peak"),
    (lambda c: serving.max_batch(c, "h100", "bf16", context=0), "context"),
])
def test_bad_input_is_refused(llama3, call, message):
    with pytest.raises(ValueError, match=message):
        call(llama3)


# ---- plots -----------------------------------------------------------------------------------------------------

def test_plots_are_written(tmp_path, llama3):
    pytest.importorskip("matplotlib")
    rls = {"prefill B=1": serving.prefill_roofline(llama3, "h100", "bf16", 1, 500),
           "decode B=8": serving.decode_roofline(llama3, "h100", "bf16", 8, 500)}
    plots.roofline_chart(rls, tmp_path / "r.png")
    plots.batch_sweep_chart(serving.sweep(llama3, "h100", "bf16", [1, 8], 500, 50), tmp_path / "s.png")
    fake = measured.Measurement("m", 1, 8, 4, hardware.get("h100"), "bf16",
                                {"decode": measured.Compared("decode", 2e-3, 1e-3)},
                                {("decode", "matmul"): measured.Compared("matmul", 1e-3, 5e-4)})
    plots.predicted_vs_measured_chart(fake, tmp_path / "m.png")
    for name in ("r.png", "s.png", "m.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_plots_without_matplotlib_say_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # `import matplotlib...` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plots.PlotUnavailable, match=r"pip install 'minitx\[plot\]'"):
        plots.require_matplotlib()


# ---- number formatting of the text tables ----------------------------------------------------------------------

SCIENTIFIC = r"\d[eE][+-]\d"


def test_fixed_decimals_with_thousands_separators():
    assert units.fixed(12_950.1234) == "12,950.123"
    assert units.fixed(0.0049) == "0.005"
    assert units.fixed(4.893e-06) == "<0.001" and units.fixed(0) == "0"
    assert units.fixed(1_234_567.891, 0) == "1,234,568" and units.fixed(math.inf) == "inf"
    assert units.pick_unit(19.07e-3, units.TIME_UNITS[1:]) == ("ms", 1e-3)
    assert units.pick_unit(4.5e-6, units.TIME_UNITS[1:]) == ("µs", 1e-6)


def test_tables_never_print_scientific_notation(llama3):
    import re
    pre = serving.prefill_roofline(llama3, "h100", "bf16", 1, 1000)
    dec = serving.decode_roofline(llama3, "h100", "bf16", 1, 1000)
    sweep = serving.sweep_table(serving.sweep(llama3, "h100", "bf16", [1, 8, 64], 1000, 200))
    for text in (pre.table("op"), dec.table("op"), pre.table("name"), sweep):
        assert not re.search(SCIENTIFIC, text), text
    assert "TFLOP" in pre.table("op") and "roofline ms" in pre.table("op")
    matmul = next(line for line in pre.table("op").splitlines() if line.startswith("matmul"))
    assert matmul.split()[1:3] == ["13.960", "19.466"]         # TFLOP, GB moved
    assert "1,641" in sweep                                     # batch 8: decode tokens/s over the batch
    fake = measured.Measurement("m", 1, 8, 4, hardware.get("h100"), "bf16",
                                {"decode": measured.Compared("decode", 2e-3, 1.234e-7)},
                                {("decode", "matmul"): measured.Compared("matmul", 1e-3, 4.893e-9)})
    table = fake.table()
    rows = table.splitlines()[2:]                                  # below the title and the units line
    assert not re.search(SCIENTIFIC, "\n".join(rows)), table
    assert "2,000.00" in table and "16,207.46" in table and "204,373.59" in table and "measured µs" in table


# ---- precisions, attention kernels and sliding windows in the serving figures ----------------------------------

def test_sliding_window_bounds_what_a_decode_step_and_a_prefill_read():
    mistral = Config.preset("mistral-7b")          # W = 4096; KV bytes per token 2·32·8·128·2 = 131,072
    assert mistral.sliding_window == 4096
    near, far = (serving.decode_floor(mistral, "h100", "bf16", batch=2, context=S) for S in (4000, 20000))
    assert near.kv_bytes == 2 * 4000 * 131_072
    assert far.kv_bytes == 2 * 4096 * 131_072     # only the window's keys are read, however long the context
    # the prefill's causal pairs: query i sees min(i + 1, W) keys; summed one query at a time here
    T = 5000
    pairs = sum(min(i + 1, 4096) for i in range(T))
    floor = serving.prefill_floor(mistral, "h100", "bf16", tokens=T)
    assert floor.attention_flops == 4 * 32 * 4096 * pairs


def test_a_precision_is_served_with_its_own_bytes_and_its_activations_peak(llama3):
    from minitx.dtypes import Precision
    w4 = Precision("bfloat16", weights="int4", kv="int8")
    # the bf16 peak (the matmuls compute in bf16), the weights' and the cache's own bytes
    floor = serving.decode_floor(llama3, "h100", w4, batch=1, context=1000)
    assert floor.t_compute == 2 * LLAMA3_8B_P / H100_BF16
    assert floor.kv_bytes == 1000 * 2 * 32 * 8 * 128 * 1
    assert floor.weight_bytes == formulas.param_bytes(llama3, w4) < LLAMA3_8B_P
    # int4 weights make decode faster and batch-1 memory smaller than bf16's
    p16, p4 = (serving.serving_point(llama3, "h100", d, batch=1, prompt=1000, gen=100) for d in ("bf16", w4))
    assert p4.tpot < p16.tpot / 2 and p4.memory_bytes < p16.memory_bytes / 2


def test_fused_attention_serves_a_long_prompt_faster(llama3):
    unfused = serving.serving_point(llama3, "h100", "bf16", batch=1, prompt=8000, gen=50)
    fused = serving.serving_point(llama3, "h100", "bf16", batch=1, prompt=8000, gen=50, attention="fused")
    assert fused.ttft < unfused.ttft and fused.tpot <= unfused.tpot
    assert fused.memory_bytes == unfused.memory_bytes       # weights + KV cache: the kernel changes neither
    with pytest.raises(ValueError, match="attention"):
        serving.serving_point(llama3, "h100", "bf16", attention="flash")
