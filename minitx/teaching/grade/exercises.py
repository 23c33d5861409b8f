"""The exercises: for each, the function a student writes, the cases it is called on, the truth it is compared
with (minitx.teaching.grade.truth: counts from execution) and the catalogue of usual mistakes it can diagnose.

A mistake is an *alternative truth*: what the answer would be had the student made it. Most are the same
execution on a changed model (n_kv_heads set to n_heads, head_dim set to d_model / n_heads, the embedding untied,
the biases removed) or at a neighbouring length (one position more or less); the rest are a constant factor (K
and V, 2 FLOPs per MAC, bits for bytes). The grader names a mistake when it explains every failing case
(minitx.teaching.grade.diagnose), so the hint says what went wrong without giving the formula away.

The exercise files students fill in live in lessons/exercises/ (shipped in the wheel as `minitx.exercises`);
each function's docstring there defines the graded quantity in the counter's terms, as `quantity` does here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from ...core.config import Config
from . import experiment, truth
from .grid import PRESETS, SMALL, SMALL_BY_NAME, Case, preset

SIXTEEN_BIT = "a 16-bit format"


@dataclass(frozen=True)
class Mistake:
    """A usual mistake: `alt(truth, case, expected)` is the answer it produces (None where it cannot show), given
    the exercise's truth function (a changed model is run by it) and the case's expected value."""
    key: str
    hint: str
    alt: Callable[[Callable[[Case], Any], Case, Any], Any]


@dataclass(frozen=True)
class Exercise:
    name: str                       # the function's name in the student's file
    topic: str                      # the exercise file it is in (lessons/exercises/<topic>.py)
    slide: str                      # the slide of the talk it practises (docs/notation.md, "The talk")
    quantity: str                   # what is graded, in one line
    params: tuple[str, ...]         # the function's parameters, cfg first
    unit: str
    truth: Callable[[Case], Any]
    build_cases: Callable[[], list[Case]]
    integer: bool = True            # an int is required and must match exactly; else within `tolerance`
    tolerance: float = 0.0          # relative
    mistakes: tuple[Mistake, ...] = ()
    v_table: Callable[[Case], int] | None = None    # one V×C table in this quantity's units (see diagnose)
    optional_args: dict = field(default_factory=dict)
    within: float | None = None     # a measured truth: right when truth / within ≤ answer ≤ truth · within
    noise: Callable[[Case], str | None] | None = None   # why a measured case cannot fail anyone (None: it can)
    report: Callable[[list], list[str]] | None = None    # lines shown under the verdict, passed or not

    def cases(self) -> list[Case]:
        return self.build_cases()

    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)})"


# ---- building cases --------------------------------------------------------------------------------------------

def _small(names: tuple[str, ...], *args_of: Callable[[Config], tuple], extra: frozenset = frozenset(),
           configs: tuple[Config, ...] = SMALL) -> list[Case]:
    return [Case(c, (c,) + make(c), names, True, extra) for c in configs for make in args_of]


def _presets(names: tuple[str, ...], *args_of: Callable[[Config], tuple], extra: frozenset = frozenset(),
             which: tuple[str, ...] = PRESETS) -> list[Case]:
    return [Case(preset(p), (preset(p),) + make(preset(p)), names, False, extra) for p in which for make in args_of]


def _sixteen(names, *args_of, which=("gpt2-style", "llama-gqa", "llama-head-dim-16")) -> list[Case]:
    """A few small models in a 16-bit format, run for real (bfloat16 storage, float32 arithmetic)."""
    return [Case(SMALL_BY_NAME[n], (SMALL_BY_NAME[n],) + make(SMALL_BY_NAME[n]), names, True,
                 frozenset({SIXTEEN_BIT})) for n in which for make in args_of]


# ---- the mistakes --------------------------------------------------------------------------------------------------

def factor(key: str, ratio: Fraction | int, hint: str) -> Mistake:
    """The answer is the truth times `ratio` everywhere."""
    r = Fraction(ratio)
    return Mistake(key, hint, lambda truth_of, case, expected: _times(expected, r))


def _times(expected, r: Fraction):
    if isinstance(expected, int):
        scaled = expected * r
        return int(scaled) if scaled.denominator == 1 else float(scaled)
    return None if expected is None else expected * float(r)


def changed_model(key: str, change: Callable[[Config], Config | None], hint: str) -> Mistake:
    """The answer is the truth for a changed model (None when the change does not apply to this one)."""
    def alt(truth_of, case: Case, expected):
        cfg = change(case.cfg)
        return None if cfg is None else truth_of(case.with_cfg(cfg))
    return Mistake(key, hint, alt)


def shifted(key: str, arg: str, by: int, hint: str) -> Mistake:
    """The answer is the truth with one argument (a length) `by` off."""
    def alt(truth_of, case: Case, expected):
        value = case.arg(arg) + by
        if value < 1 or (arg in ("seq_len", "prompt") and value > case.cfg.n_ctx) or \
                (arg == "context" and value + 1 > case.cfg.n_ctx):
            return None
        return truth_of(case.with_args(**{arg: value}))
    return Mistake(key, hint, alt)


def gqa(hint: str = "Right with multi-head attention, wrong with GQA/MQA: the keys and values have n_kv_heads "
        "heads, not n_heads.") -> Mistake:
    return changed_model("n_heads_for_kv", lambda c: c.replace(n_kv_heads=c.n_heads) if c.n_kv_heads < c.n_heads
                         else None, hint)


def head_dim(hint: str = "Wrong only when head_dim ≠ d_model / n_heads: use cfg.head_dim, which a model may set "
             "freely (Gemma: 256), not d_model // n_heads.") -> Mistake:
    def change(c: Config):
        if c.q_dim == c.d_model or c.d_model % c.n_heads or (c.position == "rope" and (c.d_model // c.n_heads) % 2):
            return None
        return c.replace(head_dim=c.d_model // c.n_heads)
    return changed_model("head_dim_from_d_model", change, hint)


def tied_twice(hint: str = "Off by a term that scales with V, only with tied embeddings: when "
               "cfg.tie_embeddings is True the LM head *is* the embedding table; count it once.") -> Mistake:
    return changed_model("tied_counted_twice", lambda c: c.replace(tie_embeddings=False) if c.tie_embeddings
                         else None, hint)


def untied_once(hint: str = "Off by a term that scales with V, only with an untied LM head: when "
                "cfg.tie_embeddings is False the head is a second V×C matrix of its own.") -> Mistake:
    return changed_model("untied_head_missing", lambda c: c.replace(tie_embeddings=True) if not c.tie_embeddings
                         else None, hint)


def no_bias(hint: str = "Wrong only with biases: when cfg.bias is True every linear layer has one (a LayerNorm's "
            "shift is there either way).") -> Mistake:
    return changed_model("biases_missing", lambda c: c.replace(bias=False) if c.bias else None, hint)


BITS = "Off by a factor of 8: bits where bytes belong (a bfloat16 value is 16 bits, 2 bytes)."


# ---- the exercises -------------------------------------------------------------------------------------------------

def _v_params(case: Case) -> int:
    return case.cfg.vocab_size * case.cfg.d_model


def _bytes_of(case: Case) -> int:
    if "bytes_per_value" in case.names:
        return case.arg("bytes_per_value")
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(case.arg("dtype"), 4) if "dtype" in case.names else 4


def _forward_flops(case: Case) -> int:
    return truth.matmul_flops(truth.forward_counts(case))


def _training_flops(case: Case) -> int:
    return truth.matmul_flops(truth.training_counts(case))


def _without_attention(counts_of):
    def alt(truth_of, case: Case, expected):
        counts = counts_of(case)
        return truth.matmul_flops(counts) - truth.attention_flops(counts)
    return alt


def _decode_flops(case: Case) -> int:
    return truth.matmul_flops(truth.decode_counts(case))


def _decode_bytes(case: Case) -> int:
    dtype = truth.BYTES_TO_DTYPE[case.arg("bytes_per_value")]
    return truth.decode_bytes(truth.decode_counts(case, dtype))


def _critical_batch(case: Case, ignore_kv: bool = False) -> int | None:
    """The smallest B whose decode step (bf16, `context` cached) does ≥ ridge FLOPs per byte, in the terms of
    decode_step_flops / decode_step_bytes. Both are counted at B = 1 and B = 2: the FLOPs grow by a per-sequence
    a, the bytes by a per-sequence k (the sequence's keys and values) over the weights W read once per step;
    B·a ≥ ridge·(W + B·k) then solves exactly (None when a ≤ ridge·k: the cache grows as fast as the FLOPs)."""
    from ...serving.hardware import get
    hw = get(case.arg("hardware"))
    ridge = Fraction(hw.peak("bf16")) / Fraction(hw.bandwidth)
    one, two = (Case(case.cfg, (case.cfg, b, case.arg("context"), 2), ("cfg", "batch", "context", "bytes_per_value"),
                     False) for b in (1, 2))
    f1, f2 = (truth.matmul_flops(truth.decode_counts(c, "bfloat16")) for c in (one, two))
    m1, m2 = _decode_bytes(one), _decode_bytes(two)
    a, k = f2 - f1, m2 - m1
    W = m1 - k
    if ignore_kv:
        k = 0
    if a <= ridge * k:
        return None
    B = ridge * W / (a - ridge * k)
    return max(1, int(-(-B.numerator // B.denominator)))


def _ttft(case: Case) -> float:
    counts = truth.prefill_counts(case, truth.SERVING_DTYPE, truth.SERVING_ATTENTION)
    return truth.compute_time(counts, case.arg("hardware"))


def _tpot(case: Case) -> float:
    counts = truth.decode_counts(case, truth.SERVING_DTYPE, truth.SERVING_ATTENTION)
    return truth.step_time(counts, case.arg("hardware"))


def _cost(case: Case) -> float:
    """$ per million output tokens: the GPU's price per second over the batch's decode tokens per second."""
    return case.arg("gpu_price_per_hour") / 3600 * _tpot(case) / case.arg("batch") * 1e6


def _break_even(case: Case) -> float:
    return _cost(case) / case.arg("api_price_per_million")


def _head_seconds(case: Case, tokens: int) -> float:
    """The bf16 LM head's FLOPs on `tokens` more tokens per sequence, at the chip's peak."""
    from ...serving.hardware import get
    return 2 * case.arg("batch") * tokens * _v_params(case) / get(case.arg("hardware")).peak("bf16")


SERVING_TOLERANCE = 0.15
MILLISECONDS = factor("milliseconds", 1000, "A thousand times too large: seconds, not milliseconds.")
SERVING_HINT_TOO_LOW = ("Much too fast: a step cannot beat max(FLOPs / peak, bytes / bandwidth); did you leave "
                        "out the bytes (the weights read once per step, the KV cache per sequence)?")

_P = ("cfg",)
_F = ("cfg", "batch", "seq_len")
_KV = ("cfg", "batch", "seq_len", "bytes_per_value")
_D = ("cfg", "batch", "context")
_DB = ("cfg", "batch", "context", "bytes_per_value")
_CB = ("cfg", "hardware", "context")
_TT = ("cfg", "hardware", "batch", "prompt")
_TP = ("cfg", "hardware", "batch", "context")
_CO = ("cfg", "hardware", "batch", "context", "gpu_price_per_hour")
_BE = ("cfg", "hardware", "batch", "context", "gpu_price_per_hour", "api_price_per_million")


def _serving_cases(names, *args_of) -> list[Case]:
    return _presets(names, *args_of)


_EN = ("cfg", "prompt_lens", "max_new_tokens", "block_size", "layout")
_QB = ("cfg", "weight_dtype", "group_size")
ENGINE_WORKLOADS = (((3, 5, 8), 2, 4), ((1, 7), 5, 8))      # (prompt_lens, max_new_tokens, block_size)


def _engine_cases() -> list[Case]:
    return [Case(c, (c, prompts, cap, X, layout), _EN, True) for c in SMALL
            for prompts, cap, X in ENGINE_WORKLOADS for layout in ("paged", "contiguous")]


def _other_layout(wanted: str):
    """The truth of the same requests in the other layout, for a case in layout `wanted` (else None)."""
    def alt(truth_of, case: Case, expected):
        if case.arg("layout") != wanted:
            return None
        other = {"paged": "contiguous", "contiguous": "paged"}[wanted]
        return truth_of(case.with_args(layout=other))
    return alt


def _unrounded_positions(truth_of, case: Case, expected):
    """Positions × bytes per position, not rounded up to whole blocks."""
    used = truth.engine_first_step(case)[1]           # bytes of the prompts' positions: Σ prompt · per position
    per_position = used // sum(case.arg("prompt_lens"))
    cap = case.arg("max_new_tokens") if case.arg("layout") == "contiguous" else 0
    return per_position * sum(p + cap for p in case.arg("prompt_lens"))


def _one_more_position(truth_of, case: Case, expected):
    longer = tuple(p + 1 for p in case.arg("prompt_lens"))
    if max(longer) + case.arg("max_new_tokens") > case.cfg.n_ctx:
        return None
    return truth_of(case.with_args(prompt_lens=longer))


def _group(cfg: Config) -> int:
    """The largest of 16, 8, 4, 2 inputs per scale that divides every quantized matrix's inputs (C, NH·HS, F)."""
    return next(g for g in (16, 8, 4, 2) if cfg.d_model % g == 0 and cfg.q_dim % g == 0 and cfg.d_ff % g == 0)


def _quantized_cases() -> list[Case]:
    return (_small(_QB, lambda c: ("int8", _group(c)), lambda c: ("int4", _group(c))) +
            _small(_QB, lambda c: ("bfloat16", _group(c)), configs=tuple(SMALL_BY_NAME[n] for n in (
                "gpt2-style", "llama-gqa", "llama-tied"))) +
            _presets(_QB, lambda c: ("int8", 128), lambda c: ("int4", 128)))


def _part(name: str, sign: int, only: str | None = None, scale: int = 1):
    """The truth with one part of the stored bytes added (sign 1) or removed (-1), `scale` times."""
    def alt(truth_of, case: Case, expected):
        if only and case.arg("weight_dtype") != only or case.arg("weight_dtype") == "bfloat16":
            return None
        return expected + sign * scale * truth.quantized_parts(case)[name]
    return alt


def _values_as(name: str):
    def alt(truth_of, case: Case, expected):
        parts = truth.quantized_parts(case)
        if case.arg("weight_dtype") != "int4" or parts[name] == parts["values"]:
            return None
        return expected - parts["values"] + parts[name]
    return alt


def _everything_quantized(truth_of, case: Case, expected):
    """The embeddings, head, norms and biases at the integer width too (1 byte, or half of one)."""
    fmt = case.arg("weight_dtype")
    if fmt == "bfloat16":
        return None
    rest = truth.quantized_parts(case)["rest"]
    return expected - rest + (rest // 2 if fmt == "int8" else rest // 4)


def _constant_step(truth_of, case: Case, expected):
    return case.arg("batch") / case.arg("step_s_at_1")


def _bare_roofline(truth_of, case: Case, expected):
    return experiment.roofline_tokens_per_s(case)


EXERCISES: tuple[Exercise, ...] = (
    Exercise("count_params", "ex01_parameters", "slides 5 and 8",
             "every parameter of the model, each stored tensor once", _P, "parameters", truth.params,
             lambda: _small(_P, lambda c: ()) + _presets(_P, lambda c: ()),
             mistakes=(tied_twice(), untied_once(), gqa(), head_dim(), no_bias()),
             v_table=_v_params),
    Exercise("inference_weights_bytes", "ex02_memory", "slides 5 and 7",
             "bytes of the stored parameters in `dtype` (float32: 4 bytes a value, bfloat16: 2)", ("cfg", "dtype"),
             "bytes", truth.weights_bytes,
             lambda: _small(("cfg", "dtype"), lambda c: ("float32",)) +
             _sixteen(("cfg", "dtype"), lambda c: ("bfloat16",)) +
             _presets(("cfg", "dtype"), lambda c: ("bfloat16",), extra=frozenset({SIXTEEN_BIT})),
             mistakes=(factor("bits_for_bytes", 8, BITS), tied_twice(), untied_once(), gqa(), head_dim(),
                       no_bias()),
             v_table=lambda case: _v_params(case) * _bytes_of(case)),
    Exercise("training_memory_bytes", "ex02_memory", "slide 7",
             "bytes of the weights, their gradients and AdamW's two moments, all float32 (no activations)", _P,
             "bytes", truth.training_state_bytes,
             lambda: _small(_P, lambda c: ()) + _presets(_P, lambda c: ()),
             mistakes=(factor("adam_moments_missing", Fraction(1, 2), "Half the truth: the gradients and the "
                              "optimizer state are missing, or Adam keeps two moments (m and v) and you counted "
                              "none."),
                       factor("one_adam_moment", Fraction(3, 4), "Three quarters of the truth: Adam keeps *two* "
                              "moments per parameter, m and v."),
                       factor("gradients_missing", Fraction(3, 4), "Three quarters of the truth: a gradient per "
                              "parameter, or one of Adam's two moments, is missing."),
                       factor("bits_for_bytes", 8, BITS), tied_twice(), untied_once(), gqa(), head_dim(),
                       no_bias()),
             v_table=lambda case: 16 * _v_params(case)),
    Exercise("forward_matmul_flops", "ex03_compute", "slide 6",
             "2 × the MACs of every matmul of one inference forward (linear layers, LM head, QKᵀ and A·V over the "
             "full T×T), bias additions excluded", _F, "FLOPs", _forward_flops,
             lambda: _small(_F, lambda c: (2, 7), lambda c: (3, 16)) + _presets(_F, lambda c: (1, 1024)),
             mistakes=(factor("one_flop_per_mac", Fraction(1, 2), "Half the truth: a multiply-add is 2 FLOPs "
                              "(one multiply, one add): FLOPs = 2 × MACs."),
                       Mistake("attention_missing", "Short by a term that grows with seq_len²: attention's QKᵀ and "
                               "A·V are matmuls too (T×HS by HS×T, and T×T by T×HS, per head).",
                               _without_attention(truth.forward_counts)),
                       Mistake("lm_head_missing", "Short by 2·B·T·V·C: the LM head is a C×V matmul on every "
                               "token, even when its weights are the embedding table's.",
                               lambda truth_of, case, e: e - 2 * case.arg("batch") * case.arg("seq_len")
                               * _v_params(case)),
                       gqa("Right with multi-head attention, wrong with GQA/MQA: the k and v projections are "
                           "C × (n_kv_heads·head_dim), smaller than q's."), head_dim()),
             v_table=lambda case: 2 * case.arg("batch") * case.arg("seq_len") * _v_params(case)),
    Exercise("training_matmul_flops", "ex03_compute", "slide 6",
             "2 × the MACs of every matmul of a training step's forward and backward (no optimizer)", _F, "FLOPs",
             _training_flops,
             lambda: _small(_F, lambda c: (2, 7)) + _presets(_F, lambda c: (1, 1024)),
             mistakes=(factor("backward_one_matmul", Fraction(2, 3), "Two thirds of the truth: the backward of "
                              "every matmul is two matmuls, one for the gradient of the weights (dW) and one for "
                              "the gradient of the inputs (dX)."),
                       factor("forward_only", Fraction(1, 3), "A third of the truth: that is the forward; the "
                              "backward costs twice as much again."),
                       factor("one_flop_per_mac", Fraction(1, 2), "Half the truth: a multiply-add is 2 FLOPs."),
                       Mistake("attention_missing", "Short by a term that grows with seq_len²: attention's QKᵀ and "
                               "A·V, forward and backward, are matmuls too.",
                               _without_attention(truth.training_counts)),
                       gqa(), head_dim()),
             v_table=lambda case: 6 * case.arg("batch") * case.arg("seq_len") * _v_params(case)),
    Exercise("kv_cache_bytes", "ex04_kv_cache", "slide 11",
             "bytes of a full KV cache holding seq_len positions for each of `batch` sequences", _KV, "bytes",
             truth.kv_cache_bytes,
             lambda: _small(_KV, lambda c: (2, 20, 4)) + _sixteen(_KV, lambda c: (3, 17, 2)) +
             _presets(_KV, lambda c: (8, min(4096, c.n_ctx), 2), extra=frozenset({SIXTEEN_BIT})),
             mistakes=(factor("k_or_v_missing", Fraction(1, 2), "Half the truth: the cache keeps keys *and* "
                              "values, two tensors per layer."),
                       factor("bits_for_bytes", 8, BITS),
                       gqa("Right with multi-head attention, wrong with GQA/MQA: the cache stores n_kv_heads "
                           "heads, not n_heads: that is what grouped-query attention saves."),
                       head_dim("Wrong only when head_dim ≠ d_model / n_heads: a head holds cfg.head_dim numbers "
                                "per position, which a model may set freely (Gemma: 256)."),
                       shifted("one_position_more", "seq_len", 1, "Off by one position: the cache holds exactly "
                               "seq_len positions per sequence."),
                       shifted("one_position_less", "seq_len", -1, "Off by one position: the cache holds exactly "
                               "seq_len positions per sequence."))),
    Exercise("decode_step_flops", "ex05_decode", "slide 14",
             "2 × the MACs of one cached decode step, `context` tokens already cached per sequence", _D, "FLOPs",
             _decode_flops,
             lambda: _small(_D, lambda c: (2, 9)) + _presets(_D, lambda c: (4, 1000)),
             mistakes=(factor("one_flop_per_mac", Fraction(1, 2), "Half the truth: a multiply-add is 2 FLOPs."),
                       shifted("keys_without_new_token", "context", -1, "Off by one position: the new token "
                               "attends to the `context` cached keys *and* its own (context + 1 keys)."),
                       shifted("one_key_too_many", "context", 1, "Off by one position: the new token attends to "
                               "context + 1 keys, not context + 2."),
                       Mistake("attention_missing", "Short by a term that grows with context: the new token's "
                               "q·Kᵀ and A·V over the cached keys are matmuls too.",
                               _without_attention(truth.decode_counts)),
                       gqa(), head_dim()),
             v_table=lambda case: 2 * case.arg("batch") * _v_params(case)),
    Exercise("decode_step_bytes", "ex05_decode", "slides 13 and 14",
             "bytes one cached decode step reads from the weights of its matmuls and from the KV cache", _DB,
             "bytes", _decode_bytes,
             lambda: _small(_DB, lambda c: (2, 9, 4)) + _presets(_DB, lambda c: (4, 1000, 2),
                                                                 extra=frozenset({SIXTEEN_BIT})),
             mistakes=(factor("bits_for_bytes", 8, BITS),
                       shifted("keys_without_new_token", "context", -1, "Off by one position: attention reads the "
                               "context cached positions *and* the new token's, context + 1 per sequence."),
                       shifted("one_key_too_many", "context", 1, "Off by one position: context + 1 positions per "
                               "sequence, not context + 2."),
                       gqa("Right with multi-head attention, wrong with GQA/MQA: the k and v projections and the "
                           "cache have n_kv_heads heads."), head_dim(), no_bias(),
                       Mistake("embedding_table_read", "One V×C table too many: the embedding lookup gathers one "
                               "row per sequence, it is not a matmul that reads the table (the LM head does, "
                               "tied or not).", lambda truth_of, case, e: e + _v_params(case) * case.arg(
                                   "bytes_per_value")),
                       Mistake("lm_head_missing", "One V×C table too few: the LM head is a C × V matmul whose "
                               "weights are read every step, even when they are the embedding table.",
                               lambda truth_of, case, e: e - _v_params(case) * case.arg("bytes_per_value"))),
             v_table=lambda case: _v_params(case) * case.arg("bytes_per_value")),
    Exercise("critical_batch", "ex05_decode", "slides 15 and 16",
             "the smallest batch whose bf16 decode step does at least the chip's ridge point in FLOPs per byte "
             "(decode_step_flops / decode_step_bytes), or None", _CB, "sequences", _critical_batch,
             lambda: _presets(_CB, lambda c: ("h100-sxm", 100), lambda c: ("a100-80gb", 100)) +
             _presets(_CB, lambda c: ("l4", min(2000, c.n_ctx - 1)), which=("llama-3-8b", "gemma-2b")),
             mistakes=(Mistake("kv_cache_ignored", "Too small: every sequence in the batch reads its own keys and "
                               "values, so the bytes grow with the batch too, not only the FLOPs.",
                               lambda truth_of, case, e: _critical_batch(case, ignore_kv=True)),
                       Mistake("rounded_down", "One sequence short: the smallest *whole* batch at or above the ridge "
                               "point: round up.", lambda truth_of, case, e: e - 1 if e and e > 1 else None))),
    Exercise("ttft_seconds", "ex06_serving", "slides 14 and 15",
             "seconds to the first token: the FLOPs of the bf16 prefill of `batch` prompts of `prompt` tokens at "
             "the chip's peak (prefill is compute-bound)", _TT, "s", _ttft,
             lambda: _serving_cases(_TT, lambda c: ("h100-sxm", 1, 1000), lambda c: ("h100-sxm", 16, 1000),
                                    lambda c: ("l4", 4, 500)),
             integer=False, tolerance=SERVING_TOLERANCE,
             mistakes=(factor("one_flop_per_mac", Fraction(1, 2), "Half the truth: a multiply-add is 2 FLOPs."),
                       Mistake("lm_head_on_every_token", "Too slow by the LM head: a prefill needs the logits of each "
                               "prompt's last token only (it predicts the first new token), not of every token.",
                               lambda truth_of, case, e: e + _head_seconds(case, case.arg("prompt") - 1)),
                       Mistake("batch_ignored", "One prompt's time: the whole batch's prompts go through the "
                               "prefill together.", lambda truth_of, case, e: e / case.arg("batch")),
                       MILLISECONDS)),
    Exercise("tpot_seconds", "ex06_serving", "slides 14 and 15",
             "seconds per output token: one bf16 decode step of `batch` sequences with `context` tokens cached",
             _TP, "s", _tpot,
             lambda: _serving_cases(_TP, lambda c: ("h100-sxm", 1, 1000), lambda c: ("h100-sxm", 64, 1000),
                                    lambda c: ("l4", 8, 500)),
             integer=False, tolerance=SERVING_TOLERANCE,
             mistakes=(Mistake("memory_ignored", SERVING_HINT_TOO_LOW, lambda truth_of, case, e: truth.compute_time(
                 truth.decode_counts(case, truth.SERVING_DTYPE, truth.SERVING_ATTENTION), case.arg("hardware"))),
                       Mistake("per_sequence", "The time per token *of the batch* (the step over the batch): a user "
                               "waits a whole step for each of their tokens.",
                               lambda truth_of, case, e: e / case.arg("batch")),
                       MILLISECONDS)),
    Exercise("cost_per_million_output_tokens", "ex06_serving", "slide 17",
             "dollars per million output tokens at 100% utilization: the GPU's price per second over the batch's "
             "tokens per second", _CO, "$", _cost,
             lambda: _serving_cases(_CO, lambda c: ("h100-sxm", 1, 1000, 2.5), lambda c: ("h100-sxm", 64, 1000, 2.5),
                                    lambda c: ("l4", 8, 500, 0.5)),
             integer=False, tolerance=SERVING_TOLERANCE,
             mistakes=(factor("per_hour_not_second", 3600, "3600 times too much: the price is per hour, "
                              "the throughput per second."),
                       Mistake("batch_ignored", "One sequence's tokens: a step makes a token for every sequence of "
                               "the batch, which shares the GPU's price.",
                               lambda truth_of, case, e: e * case.arg("batch")),
                       factor("per_thousand", Fraction(1, 1000), "A thousand times too little: per million tokens, "
                              "not per thousand."))),
    Exercise("break_even_utilization", "ex06_serving", "slide 17",
             "the fraction of paid hours the GPU must be busy for its output tokens to cost what the API charges",
             _BE, "", _break_even,
             lambda: _serving_cases(_BE, lambda c: ("h100-sxm", 64, 1000, 2.5, 1.5),
                                    lambda c: ("l4", 8, 500, 0.5, 0.6)),
             integer=False, tolerance=SERVING_TOLERANCE,
             mistakes=(Mistake("inverted", "Upside down: the break-even utilization is the self-hosted cost at "
                               "100% utilization divided by the API's price.",
                               lambda truth_of, case, e: 1 / e if e else None),
                       factor("percent", 100, "A hundred times too large: a fraction of the hours (0.25), not a "
                              "percentage (25)."),
                       Mistake("batch_ignored", "As if one sequence paid for the GPU: a step makes a token for every "
                               "sequence of the batch.", lambda truth_of, case, e: e * case.arg("batch")))),
    Exercise("decode_tokens_per_s", "ex07_experiment", "slide 17",
             "this machine's float32 decode tokens/s (the whole batch's) at `batch`, measured: within 2× either way",
             experiment.NAMES, "tokens/s", experiment.tokens_per_s, experiment.cases, integer=False,
             within=2.0, noise=experiment.noise, report=experiment.report,
             mistakes=(Mistake("one_user", "The tokens/s of one user: a step makes one token for *every* sequence "
                               "of the batch, so the batch makes B tokens per step.",
                               lambda truth_of, case, e: e / case.arg("batch")),
                       Mistake("step_fixed", "Right at small batches, too fast at large ones: as if a step took as "
                               "long at every batch as at B = 1. The fixed overhead is shared, but every sequence "
                               "adds its own rows to every matmul: the second measurement tells you how much.",
                               _constant_step),
                       Mistake("bare_roofline", "The bare roofline: a floor, which this machine misses by several "
                               "times (a fixed cost per step: ~60 op calls of Python and dispatch). Build on the "
                               "two measured steps.", _bare_roofline),
                       Mistake("milliseconds", "A thousand times too small: tokens per millisecond; the steps "
                               "are given in seconds.", lambda truth_of, case, e: e / 1000),
                       Mistake("seconds_per_token", "Upside down: seconds per token; the exercise asks for tokens "
                               "per second.", lambda truth_of, case, e: 1 / e if e else None))),
    Exercise("kv_reserved_bytes", "ex08_serving_engine", "slide 16",
             "KV bytes the serving engine's blocks hold after its first step (all prompts prefilled together), "
             "float32, paged or contiguous", _EN, "bytes", truth.kv_reserved_bytes, _engine_cases,
             mistakes=(Mistake("paged_reserves_the_cap", "Paged: a sequence takes blocks as it grows, for the "
                               "positions it holds now; it reserves nothing for tokens it has not made yet.",
                               _other_layout("paged")),
                       Mistake("contiguous_reserves_only_the_prompt", "Contiguous: each sequence reserves room for "
                               "its prompt *and* its cap on new tokens the moment it is admitted: that is the "
                               "waste paging removes.", _other_layout("contiguous")),
                       Mistake("not_whole_blocks", "Memory comes in whole blocks: n positions take ceil(n / "
                               "block_size) blocks of block_size positions each.", _unrounded_positions),
                       Mistake("first_new_token_counted", "One position too many per sequence: after the prefill "
                               "a sequence's cache holds its prompt; the token just sampled is written by the next "
                               "step.", _one_more_position),
                       factor("k_or_v_missing", Fraction(1, 2), "Half the truth: a position holds a key *and* a "
                              "value in every layer."),
                       gqa("Right with multi-head attention, wrong with GQA/MQA: a position holds n_kv_heads "
                           "heads of keys and values, not n_heads."),
                       head_dim("Wrong only when head_dim ≠ d_model / n_heads: a head holds cfg.head_dim numbers "
                                "per position."))),
    Exercise("quantized_weights_bytes", "ex09_precision", "slides 5 and 7",
             "bytes of the weights stored with bfloat16 floats and the layer matrices in `weight_dtype` (int8, int4 "
             "packed two to a byte, or bfloat16), one float16 scale per `group_size` inputs of each output", _QB,
             "bytes", truth.quantized_bytes, _quantized_cases,
             mistakes=(Mistake("scales_missing", "Short by the scales: every group of group_size inputs of every "
                               "output column carries a float16 scale, 2 bytes.", _part("scales", -1)),
                       Mistake("scales_in_float32", "The scales are float16, 2 bytes each, not 4.",
                               _part("scales", 1)),
                       Mistake("int4_one_per_byte", "int4 values are packed two to a byte.",
                               _values_as("values_one_per_byte")),
                       Mistake("int4_rows_rounded_down", "A row of M int4 values takes ceil(M / 2) bytes: with an "
                               "odd M the last byte holds one value.", _values_as("values_rounded_down")),
                       Mistake("everything_quantized", "Only the layers' matrices are quantized; the embedding (so a "
                               "tied head too), an untied head, the norms and the biases stay in bfloat16.",
                               _everything_quantized),
                       Mistake("rest_in_float32", "What is not quantized is bfloat16, 2 bytes a value, not float32.",
                               _part("rest", 1)),
                       factor("bits_for_bytes", 8, "Off by a factor of 8: bits where bytes belong."),
                       tied_twice(), untied_once(), gqa(), head_dim(), no_bias())),
)

BY_NAME = {e.name: e for e in EXERCISES}
TOPICS = tuple(dict.fromkeys(e.topic for e in EXERCISES))
