"""The grader, in this process: every solution passes every case, and every wrong answer of the catalogue fails
with the diagnosis that names its mistake.

The wrong answers are the solutions (lessons/solutions/) with one usual mistake written in: what a student
writes, not a transformation of the truth. They run in-process through `grade.check`, the same comparison and
diagnosis `minitx grade` runs on a spawned file (tests/test_grade_cli.py covers the sandbox), so the catalogue
costs a second, not a process per answer.

The measured exercise (decode_tokens_per_s, "run your own experiment") times a real decode on this CPU; here it
measures one small model at three batches (`FAST_EXPERIMENT`, about half a second after the machine's own
two-second measurement), once for the whole session.
"""
from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from minitx.teaching import grade
from minitx.teaching.grade import experiment, exercises, grid, truth

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "lessons" / "solutions"
EXERCISE_FILES = ROOT / "lessons" / "exercises"


FAST_EXPERIMENT = experiment.Settings(models=("small-gpt2",), batches=(1, 16, 64), machine_seconds=0.5)


@pytest.fixture(scope="module", autouse=True)
def fast_experiment():
    """The measured exercise on one small model and three batches (its default is two models, seven batches)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "SETTINGS", FAST_EXPERIMENT)
        yield


def _skip_if_too_noisy(result):
    """The measured exercise on a machine too busy to conclude: the grader says so (tested below with a forced
    noise), and so does this test, rather than pass or fail on a measurement nobody can trust."""
    if result.status == "inconclusive":
        assert "too noisy" in result.message
        pytest.skip(f"this machine was too noisy to measure: {result.message}")


@pytest.fixture(scope="module")
def sol():
    """Every solution function, by name (the solution files import each other, as a student's may)."""
    sys.path.insert(0, str(SOLUTIONS))
    try:
        names = {}
        for path in sorted(SOLUTIONS.glob("ex*.py")):
            names.update({k: v for k, v in runpy.run_path(str(path)).items() if k in exercises.BY_NAME})
        return names
    finally:
        sys.path.remove(str(SOLUTIONS))


def test_every_exercise_has_a_solution_and_a_stub(sol):
    assert set(sol) == set(exercises.BY_NAME)
    stubs = {}
    for path in sorted(EXERCISE_FILES.glob("ex*.py")):
        stubs.update({k: v for k, v in runpy.run_path(str(path)).items() if k in exercises.BY_NAME})
    assert set(stubs) == set(exercises.BY_NAME)
    for name, fn in stubs.items():
        assert fn.__doc__ and len(fn.__doc__) > 100, f"{name}'s docstring must define the graded quantity"
        result = grade.check(fn)
        assert result.status == "not attempted", name


@pytest.mark.parametrize("name", list(exercises.BY_NAME))
def test_the_solution_passes_every_case(sol, name):
    result = grade.check(sol[name])
    _skip_if_too_noisy(result)
    assert result.status == "passed", (result.message, [(c.case.label, c.expected, c.answer)
                                                         for c in result.failing[:3]])
    assert len(result.cases) >= (3 if exercises.BY_NAME[name].within else 10) and not result.diagnosis


def test_the_grid_isolates_each_feature():
    """Each sibling differs from its family's base model in the one field its name says."""
    base = {"gpt2": grid.SMALL_BY_NAME["gpt2-style"], "llama": grid.SMALL_BY_NAME["llama-style"]}
    changed = {"untied": "tie_embeddings", "no-bias": "bias", "vocab-160": "vocab_size", "gqa": "n_kv_heads",
               "mqa": "n_kv_heads", "head-dim-16": "head_dim", "tied": "tie_embeddings", "bias": "bias"}
    for cfg in grid.SMALL:
        family, _, variant = cfg.name.partition("-")
        if variant in changed:
            fields = {f for f in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "n_kv_heads",
                                  "head_dim", "d_ff", "bias", "tie_embeddings", "position", "norm", "mlp")
                      if getattr(cfg, f) != getattr(base[family], f)}
            assert fields == {changed[variant]}, (cfg.name, fields)


def test_truth_comes_from_execution_not_formulas():
    """The grader's package never imports the closed forms (minitx.formulas), directly or through a module."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_architecture import import_graph, reachable
    graph = import_graph()
    for module in (m for m in graph if m.startswith("teaching.grade")):
        assert "accounting.formulas" not in reachable(graph, module) | {module}, module


def test_truth_by_hand_on_one_small_model():
    """One case worked by hand, so the truth itself is checked against arithmetic, not only against solutions:
    llama-gqa (V=96, C=48, L=2, NH=4, KV=2, HS=12, F=128, untied, no biases)."""
    case = grid.Case(grid.SMALL_BY_NAME["llama-gqa"], (grid.SMALL_BY_NAME["llama-gqa"],), ("cfg",), True)
    per_layer = 48 * (48 + 2 * 24) + 48 * 48 + 48 * 256 + 128 * 48 + 2 * 48   # qkv, proj, gate|up, down, 2 norms
    assert truth.params(case) == 96 * 48 + 2 * per_layer + 48 + 96 * 48      # wte, layers, ln_f, lm_head
    kv = grid.Case(case.cfg, (case.cfg, 2, 20, 4), ("cfg", "batch", "seq_len", "bytes_per_value"), True)
    assert truth.kv_cache_bytes(kv) == 2 * 2 * 2 * 12 * 20 * 2 * 4            # K and V · L · KV · HS · S · B · 4
    # the engine: prompts of 3, 5 and 8 tokens, 2 new tokens each, blocks of 4 positions
    per_position = 2 * 2 * 2 * 12 * 4                                          # K and V · L · KV · HS · 4 bytes
    names = ("cfg", "prompt_lens", "max_new_tokens", "block_size", "layout")
    paged = grid.Case(case.cfg, (case.cfg, (3, 5, 8), 2, 4, "paged"), names, True)
    assert truth.kv_reserved_bytes(paged) == (1 + 2 + 2) * 4 * per_position   # ceil(3/4), ceil(5/4), ceil(8/4)
    contiguous = grid.Case(case.cfg, (case.cfg, (3, 5, 8), 2, 4, "contiguous"), names, True)
    assert truth.kv_reserved_bytes(contiguous) == (2 + 2 + 3) * 4 * per_position   # ceil((p + 2) / 4) blocks
    # int4, groups of 16: the four matrices (K, M) = (48, 96), (48, 48), (48, 256), (128, 48), values K·M/2 and
    # 2·(K/16)·M bytes of scales; the rest in bf16: wte and lm_head 96·48 each, 2 RMSNorm scales per layer + 1
    q4 = grid.Case(case.cfg, (case.cfg, "int4", 16), ("cfg", "weight_dtype", "group_size"), True)
    matrices = [(48, 96), (48, 48), (48, 256), (128, 48)]
    per_layer = sum(K * M // 2 + 2 * (K // 16) * M for K, M in matrices)
    assert truth.quantized_bytes(q4) == 2 * per_layer + 2 * (2 * 96 * 48 + 2 * 2 * 48 + 48)


# ---- the catalogue of wrong answers ---------------------------------------------------------------------------

def _mha(cfg):
    return cfg.replace(n_kv_heads=cfg.n_heads)


def _catalogue(s):
    """exercise -> [(what the student did, their function, a phrase the diagnosis must contain)]."""
    V_C = lambda c: c.vocab_size * c.d_model
    HS_from_d = lambda c: c.d_model // c.n_heads

    def params_gqa(c):            # n_heads where n_kv_heads belongs
        return s["count_params"](c) + c.n_layers * 2 * (c.n_heads - c.n_kv_heads) * c.head_dim * (c.d_model + c.bias)

    def params_head_dim(c):       # head_dim taken as d_model // n_heads
        q = c.n_heads * HS_from_d(c)
        kv = c.n_kv_heads * HS_from_d(c)
        q0, kv0 = c.q_dim, c.kv_dim
        return s["count_params"](c) + c.n_layers * ((c.d_model + c.bias) * (q + 2 * kv - q0 - 2 * kv0)
                                                    + (q - q0) * c.d_model)

    def kv(c, B, S, s_):
        return 2 * c.n_layers * c.n_kv_heads * c.head_dim * S * B * s_

    def fwd_no_attention(c, B, T):
        return s["forward_matmul_flops"](c, B, T) - c.n_layers * B * c.n_heads * 4 * T * T * c.head_dim

    def dec_attention(c, B, t):
        return c.n_layers * B * c.n_heads * 4 * (t + 1) * c.head_dim

    return {
        "count_params": [
            ("tied head counted twice", lambda c: s["count_params"](c) + (V_C(c) if c.tie_embeddings else 0),
             "tied_counted_twice"),
            ("n_heads for the k and v projections", params_gqa, "n_heads_for_kv"),
            ("head_dim = d_model / n_heads", params_head_dim, "head_dim_from_d_model"),
            ("no biases", lambda c: s["count_params"](c) - (c.n_layers * (c.q_dim + 2 * c.kv_dim + c.d_model + (
                2 if c.mlp == "gated" else 1) * c.d_ff + c.d_model) if c.bias else 0), "biases_missing"),
        ],
        "inference_weights_bytes": [
            ("bits", lambda c, d: s["count_params"](c) * {"float32": 32, "bfloat16": 16}[d], "bits_for_bytes"),
            ("4 bytes whatever the dtype", lambda c, d: 4 * s["count_params"](c), "16-bit"),
            ("tied head counted twice", lambda c, d: s["inference_weights_bytes"](c, d) + (
                V_C(c) * (4 if d == "float32" else 2) if c.tie_embeddings else 0), "tied_counted_twice"),
        ],
        "training_memory_bytes": [
            ("weights and gradients only", lambda c: 2 * 4 * s["count_params"](c), "adam_moments_missing"),
            ("one Adam moment", lambda c: 3 * 4 * s["count_params"](c), "one_adam_moment"),
            ("the untied head forgotten", lambda c: 16 * (s["count_params"](c) - (0 if c.tie_embeddings else V_C(c))),
             "untied_head_missing"),
        ],
        "forward_matmul_flops": [
            ("1 FLOP per MAC", lambda c, B, T: s["forward_matmul_flops"](c, B, T) // 2, "one_flop_per_mac"),
            ("attention left out", fwd_no_attention, "attention_missing"),
            ("no LM head", lambda c, B, T: s["forward_matmul_flops"](c, B, T) - 2 * B * T * V_C(c), "lm_head_missing"),
            ("multi-head k and v", lambda c, B, T: s["forward_matmul_flops"](_mha(c), B, T), "n_heads_for_kv"),
        ],
        "training_matmul_flops": [
            ("backward = forward", lambda c, B, T: 2 * s["forward_matmul_flops"](c, B, T), "backward_one_matmul"),
            ("the forward only", lambda c, B, T: s["forward_matmul_flops"](c, B, T), "forward_only"),
            ("attention left out", lambda c, B, T: 3 * fwd_no_attention(c, B, T), "attention_missing"),
        ],
        "kv_cache_bytes": [
            ("keys only", lambda c, B, S, s_: kv(c, B, S, s_) // 2, "k_or_v_missing"),
            ("n_heads", lambda c, B, S, s_: kv(_mha(c), B, S, s_), "n_heads_for_kv"),
            ("head_dim = d_model / n_heads", lambda c, B, S, s_: kv(c, B, S, s_) // c.head_dim * HS_from_d(c),
             "head_dim_from_d_model"),
            ("one position more", lambda c, B, S, s_: kv(c, B, S + 1, s_), "one_position_more"),
            ("bits", lambda c, B, S, s_: kv(c, B, S, 8 * s_), "bits_for_bytes"),
        ],
        "decode_step_flops": [
            ("the new token's key forgotten", lambda c, B, t: s["decode_step_flops"](c, B, t - 1),
             "keys_without_new_token"),
            ("1 FLOP per MAC", lambda c, B, t: s["decode_step_flops"](c, B, t) // 2, "one_flop_per_mac"),
            ("attention left out", lambda c, B, t: s["decode_step_flops"](c, B, t) - dec_attention(c, B, t),
             "attention_missing"),
        ],
        "decode_step_bytes": [
            ("the new token's key forgotten", lambda c, B, t, b: s["decode_step_bytes"](c, B, t - 1, b),
             "keys_without_new_token"),
            ("the tied table read twice", lambda c, B, t, b: s["decode_step_bytes"](c, B, t, b) + (
                V_C(c) * b if c.tie_embeddings else 0), "embedding_table_read"),
            ("a multi-head cache", lambda c, B, t, b: s["decode_step_bytes"](c, B, t, b) + 2 * c.n_layers * (
                c.n_heads - c.n_kv_heads) * c.head_dim * (B * (t + 1) + c.d_model) * b, "n_heads_for_kv"),
            ("bits", lambda c, B, t, b: 8 * s["decode_step_bytes"](c, B, t, b), "bits_for_bytes"),
        ],
        "critical_batch": [
            ("the KV cache ignored", lambda c, hw, t: _critical_without_kv(s, c, hw, t), "kv_cache_ignored"),
            ("rounded down", lambda c, hw, t: _rounded_down(s, c, hw, t), "rounded_down"),
            ("a float", lambda c, hw, t: None if s["critical_batch"](c, hw, t) is None else
             float(s["critical_batch"](c, hw, t)), "float"),
        ],
        "ttft_seconds": [
            ("1 FLOP per MAC", lambda c, hw, B, T: s["ttft_seconds"](c, hw, B, T) / 2, "one_flop_per_mac"),
            ("one prompt", lambda c, hw, B, T: s["ttft_seconds"](c, hw, 1, T), "batch_ignored"),
            ("milliseconds", lambda c, hw, B, T: 1000 * s["ttft_seconds"](c, hw, B, T), "milliseconds"),
        ],
        "tpot_seconds": [
            ("the bytes ignored", lambda c, hw, B, t: s["decode_step_flops"](c, B, t) / _peak(hw), "memory_ignored"),
            ("per token of the batch", lambda c, hw, B, t: s["tpot_seconds"](c, hw, B, t) / B, "per_sequence"),
            ("milliseconds", lambda c, hw, B, t: 1000 * s["tpot_seconds"](c, hw, B, t), "milliseconds"),
        ],
        "cost_per_million_output_tokens": [
            ("price per hour as per second", lambda c, hw, B, t, p: 3600 * s["cost_per_million_output_tokens"](
                c, hw, B, t, p), "per_hour_not_second"),
            ("one sequence's tokens", lambda c, hw, B, t, p: B * s["cost_per_million_output_tokens"](c, hw, B, t, p),
             "batch_ignored"),
            ("per thousand tokens", lambda c, hw, B, t, p: s["cost_per_million_output_tokens"](c, hw, B, t, p) / 1000,
             "per_thousand"),
        ],
        "decode_tokens_per_s": [
            ("one user's tokens/s", lambda c, B, t1, t16: s["decode_tokens_per_s"](c, B, t1, t16) / B, "one_user"),
            ("the step at B = 1 for every batch", lambda c, B, t1, t16: B / t1, "step_fixed"),
            ("the bare roofline from `minitx hw --measure`", _bare_roofline(s), "bare_roofline"),
            ("tokens per millisecond", lambda c, B, t1, t16: s["decode_tokens_per_s"](c, B, t1, t16) / 1000,
             "milliseconds"),
        ],
        "kv_reserved_bytes": [
            ("paged reserves the cap too", lambda c, P, cap, X, layout: s["kv_reserved_bytes"](c, P, cap, X,
                                                                                             "contiguous"),
             "paged_reserves_the_cap"),
            ("contiguous reserves the prompt only", lambda c, P, cap, X, layout: s["kv_reserved_bytes"](
                c, P, cap, X, "paged"), "contiguous_reserves_only_the_prompt"),
            ("positions, not whole blocks", lambda c, P, cap, X, layout: kv(c, 1, sum(
                p + (cap if layout == "contiguous" else 0) for p in P), 4), "not_whole_blocks"),
            ("the sampled token already cached", lambda c, P, cap, X, layout: s["kv_reserved_bytes"](
                c, tuple(p + 1 for p in P), cap, X, layout), "first_new_token_counted"),
            ("n_heads", lambda c, P, cap, X, layout: s["kv_reserved_bytes"](_mha(c), P, cap, X, layout),
             "n_heads_for_kv"),
        ],
        "quantized_weights_bytes": [
            ("no scales", lambda c, f, g: s["quantized_weights_bytes"](c, f, 10 ** 9) if f != "bfloat16" else
             s["quantized_weights_bytes"](c, f, g), "scales_missing"),      # K // 10⁹ = 0 groups: no scale
            ("int4 one value per byte", lambda c, f, g: s["quantized_weights_bytes"](c, "int8" if f == "int4" else f,
                                                                                     g), "int4_one_per_byte"),
            ("the embeddings and norms quantized too", _everything_quantized(s), "everything_quantized"),
            ("bits", lambda c, f, g: 8 * s["quantized_weights_bytes"](c, f, g), "bits_for_bytes"),
        ],
        "break_even_utilization": [
            ("upside down", lambda *a: 1 / s["break_even_utilization"](*a), "inverted"),
            ("a percentage", lambda *a: 100 * s["break_even_utilization"](*a), "percent"),
            ("one sequence's tokens", lambda c, hw, B, *a: B * s["break_even_utilization"](c, hw, B, *a),
             "batch_ignored"),
        ],
    }


def _everything_quantized(s):
    """Every parameter outside the matrices at the integer width too (1 byte for int8, half of one for int4)."""
    def wrong(c, f, g):
        right = s["quantized_weights_bytes"](c, f, g)
        if f == "bfloat16":
            return right
        matrices = c.n_layers * sum(K * M for K, M in ((c.d_model, c.q_dim + 2 * c.kv_dim), (c.q_dim, c.d_model), (
            c.d_model, (2 if c.mlp == "gated" else 1) * c.d_ff), (c.d_ff, c.d_model)))
        rest = s["count_params"](c) - matrices
        return right - 2 * rest + (rest if f == "int8" else rest // 2)
    return wrong


def _bare_roofline(s):
    """What a student computes from `minitx hw --measure` alone: the whole step's max(FLOPs / peak, weight bytes /
    bandwidth), 2·P·B FLOPs and the 4·P bytes of the float32 weights, with no overhead at all. The peak and
    bandwidth are the ones the grader measured beside the decode (the report prints them): measured again here,
    on a busy machine, they could be anything."""
    def tokens_per_s(c, B, t1, t16):
        cpu, P = experiment.machine(c), s["count_params"](c)
        return B / max(2 * P * B / cpu.peak("fp32"), 4 * P / cpu.bandwidth)
    return tokens_per_s


def _peak(hw):
    import minitx
    return minitx.hardware.get(hw).peak("bf16")


def _critical_without_kv(s, c, hw, t):
    import minitx
    chip = minitx.hardware.get(hw)
    ridge = chip.peak("bf16") / chip.bandwidth
    one, two = s["decode_step_bytes"](c, 1, t, 2), s["decode_step_bytes"](c, 2, t, 2)
    weights = one - (two - one)
    return max(1, math.ceil(ridge * weights / s["decode_step_flops"](c, 1, t)))


def _rounded_down(s, c, hw, t):
    b = s["critical_batch"](c, hw, t)
    return None if b is None else max(b - 1, 1)


CATALOGUE_IDS = [(name, i) for name, n in (("count_params", 4), ("inference_weights_bytes", 3),
                                           ("training_memory_bytes", 3), ("forward_matmul_flops", 4),
                                           ("training_matmul_flops", 3), ("kv_cache_bytes", 5),
                                           ("decode_step_flops", 3), ("decode_step_bytes", 4),
                                           ("critical_batch", 3), ("ttft_seconds", 3), ("tpot_seconds", 3),
                                           ("cost_per_million_output_tokens", 3), ("break_even_utilization", 3),
                                           ("decode_tokens_per_s", 4), ("kv_reserved_bytes", 5),
                                           ("quantized_weights_bytes", 4))
                 for i in range(n)]


def test_the_catalogue_covers_every_exercise_three_times(sol):
    catalogue = _catalogue(sol)
    assert set(catalogue) == set(exercises.BY_NAME)
    assert all(len(wrong) >= 3 for wrong in catalogue.values())
    assert sorted(CATALOGUE_IDS) == sorted((n, i) for n, w in catalogue.items() for i in range(len(w)))


@pytest.mark.parametrize("name, i", CATALOGUE_IDS, ids=[f"{n}-{i}" for n, i in CATALOGUE_IDS])
def test_a_wrong_answer_fails_with_its_diagnosis(sol, name, i):
    what, fn, phrase = _catalogue(sol)[name][i]
    result = grade.check(fn, name)
    _skip_if_too_noisy(result)
    assert result.status == "failed", (what, result.status, result.message)
    said = " ".join(result.diagnosis) + " " + " ".join(c.hint for c in result.failing)
    assert phrase in said, f"{name}, {what}: {phrase!r} not in {said[:600]!r}"


def test_a_float_where_an_int_belongs_is_named_even_when_the_value_is_right(sol):
    result = grade.check(lambda c, B, S, b: float(sol["kv_cache_bytes"](c, B, S, b)), "kv_cache_bytes")
    assert result.status == "failed" and all("the value is right, the type is not" in c.hint for c in result.failing)


def test_numpy_integers_count_as_integers(sol):
    import numpy as np
    assert grade.check(lambda c: np.int64(sol["count_params"](c)), "count_params").passed


def test_an_exception_in_student_code_is_an_error_verdict():
    def count_params(cfg):
        return cfg.no_such_field
    result = grade.check(count_params)
    assert result.status == "error" and "AttributeError" in result.message


def test_check_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="is not an exercise"):
        grade.check(lambda cfg: 1, "count_parameters")
    with pytest.raises(TypeError, match="fn must be your exercise function"):
        grade.check("count_params")                   # the name, not the function


# ---- hostile answers ----------------------------------------------------------------------------------------------

ANSWERS = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.none(), st.booleans(),
                    st.text(max_size=50), st.lists(st.integers(), max_size=5), st.just(10 ** 5000),
                    st.complex_numbers(), st.binary(max_size=20))


@settings(max_examples=40, deadline=None)
@given(answer=ANSWERS, name=st.sampled_from(sorted(exercises.BY_NAME)))
def test_any_answer_gets_a_verdict_never_a_crash(answer, name):
    result = grade.check(lambda *args: answer, name)
    assert result.status in ("failed", "passed", "inconclusive")
    assert result.status == "failed" or answer is None      # None is right only where no batch gets there
    assert result.to_dict()["failing"] is not None


# ---- the measured exercise ---------------------------------------------------------------------------------------

def test_the_experiment_hands_over_the_measured_anchors_and_grades_against_the_median(sol):
    cases = exercises.BY_NAME["decode_tokens_per_s"].cases()
    cfg = grid.preset("small-gpt2")
    points = experiment.sweep(cfg)
    assert [c.arg("batch") for c in cases] == [1, 16, 64]
    for case in cases:
        p = points[case.arg("batch")]
        assert case.args[2:] == (points[1].measured, points[16].measured)
        assert len(p.timing.samples) == FAST_EXPERIMENT.repeats and p.measured == p.timing.median
        assert experiment.tokens_per_s(case) == case.arg("batch") / p.measured
    result = grade.check(sol["decode_tokens_per_s"])
    table = "\n".join(result.details)
    assert result.passed and "measured tok/s" in table and "roofline tok/s" in table
    assert "BLAS on one thread: fp32 peak" in result.details[0] and len(result.details) == 2 + len(cases)


def test_a_noisy_batch_is_measured_again_and_the_quietest_run_kept(monkeypatch):
    from minitx.measure.inference import MeasuredPoint
    from minitx.measure.timing import Timing
    runs = []

    def fake_sweep(cfg, machine, batches, prompt, steps, repeats):
        runs.append(tuple(batches))
        noisy = len(runs) == 1               # the first measurement of every batch is noisy, the second quiet
        spread = (1.0, 2.0, 1.0, 2.0, 1.5) if noisy else (1.0, 1.01, 1.0, 1.02, 1.0)
        return [MeasuredPoint(b, b * 1e-3, 1e-4, 1.0, "memory", Timing(tuple(x * b * 1e-3 for x in spread)))
                for b in batches]
    monkeypatch.setattr(experiment, "measure_decode_sweep", fake_sweep)
    points = experiment.measure(grid.preset("tiny-gpt2"), (1, 4, 16), experiment.Settings(), machine=None)
    assert runs == [(1, 4, 16), (1, 4, 16)] and not any(p.timing.noisy for p in points.values())


def test_a_miss_on_a_noisy_measurement_is_inconclusive_not_a_failure(sol):
    import dataclasses
    noisy = dataclasses.replace(exercises.BY_NAME["decode_tokens_per_s"], noise=lambda case: "runs spread by 90%")
    answers = [grade._call(lambda c, B, t1, t16: B / t1, case.args) for case in noisy.cases()]
    result = grade.grade_answers(noisy, answers)
    assert result.status == "inconclusive" and not result.passed and "too noisy" in result.message
    right = [grade._call(sol["decode_tokens_per_s"], case.args) for case in noisy.cases()]
    assert grade.grade_answers(noisy, right).status == "passed"      # noise never fails a right answer


def test_a_measurement_that_cannot_finish_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(experiment, "MEASURE_TIMEOUT", 0.01)
    with pytest.raises(OSError, match="could not measure this machine's decode"):
        experiment.measure_pinned([grid.preset("small-gpt2")], (1, 16), FAST_EXPERIMENT)
