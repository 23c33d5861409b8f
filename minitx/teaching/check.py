"""`minitx check`: run two small models for real and check the talk's claims against what the counters saw.

Every claim of the talk (and of the sources it rests on: docs/formulas.md) becomes one row:

    the claim in plain words | the formula's value | the count from execution | the verdict

The counts come from `minitx.count()` around real work: a training step (forward, backward, AdamW), an inference
forward, a prefill and a run of cached decode steps, and the same steps recomputed without a cache, and many
requests served by `minitx.Engine` with each step's counts timed on an H100's roofline; the memory rows come from
the allocated buffers and from `minitx.memory`'s measurements. The formulas come from
`minitx.formulas`, which never runs anything. Two kinds of verdict:

    exact    the formula predicts the count to the last FLOP or byte: it spells out what the code does, every
             matmul, norm, softmax entry and byte moved, per the conventions in `minitx.conventions`
    approx   the claim is a rule of thumb (forward ≈ 2·P·tokens, training ≈ 3 × inference); the row shows the
             relative error, the tolerance the rule is held to at these sizes, and, under it, why it is off
    at_most  a bound: the count must not exceed the formula's value

One more kind of row is not a claim and is left out of the tally: an "illustration" compares a formula with a
rule of thumb, for a setting nothing here runs in. There are none today: a 16-bit decode step is executed, and
the real models, too large to run here, are run by shape, their ops recording what they were handed.

`run_checks()` returns the rows as `Claim`s (tests and lessons use it); `format_table` prints them; the command
(`minitx check`, minitx/cli/check.py) prints the table or JSON and exits 1 if any claim fails. Two families run:
a GPT-2-style model (learned positions, LayerNorm, GELU MLP, biases, tied head) and a Llama-style one (RoPE,
RMSNorm, SwiGLU, grouped-query attention, untied head).
"""
from __future__ import annotations

import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..accounting import formulas as F
from ..accounting import memory
from ..accounting.counting import Counter, count, phase
from ..accounting.ledger import Ledger
from ..core.config import Config
from ..core.kv_cache import KVCache
from ..core.model import Transformer
from ..core.optim import AdamW
from ..dtypes import Precision
from ..serving.engine import Engine
from ..serving.hardware import get as get_hardware
from ..serving.roofline import analyze
from ..serving.simulator import simulate
from ..serving.workload import Job

# The two families, as presets small enough to run every check in seconds on a laptop CPU.
MODELS = ("small-gpt2", "small-llama")
DTYPE = "float32"            # what the models run in; the formulas get the same name
BATCH, SEQ = 4, 64           # the training step and the inference forward: B sequences of T tokens
PROMPT = 16                  # prefill length before the decode steps
DECODE_AT = (16, 64, 127)    # positions t (tokens already cached) where a decode step is compared with recompute
DECODE_BATCHES = (1, 4, 16)  # batch sizes for decode's FLOPs per weight byte
DEPTHS = (2, 4)              # layer counts for "training memory grows with depth, inference memory does not"
PARALLEL = 16                # tokens per sequence for slide 9: one parallel pass vs one step per token

PUBLISHED = {  # figures a formula is compared with (docs/formulas.md, "Published parameter counts")
    "gemma-2b total": (2_506_172_416, "HF safetensors metadata"),
    "gemma-2b non-embedding": (1_981_884_416, "Gemma report, Table 2"),
}


@dataclass
class Claim:
    """One checked claim. `counted` is what execution produced (or, where `source` says so, an allocation, a
    measurement or a published figure); `expected` is the formula's value for the same quantity."""
    section: str
    model: str
    claim: str
    expected: float
    counted: float
    kind: str = "exact"          # "exact" (counted == expected), "approx" (|counted/expected − 1| ≤ tolerance),
                                 # "at_most" (counted ≤ expected: a bound, not an estimate), or "illustration"
                                 # (formula vs formula: shown, never failed, left out of the tally)
    tolerance: float = 0.0
    unit: str = ""               # "" (a count), "B" (bytes), "FLOPs", "MACs", "x" (a ratio), "%", "FLOP/B", or
                                 # "parts" / "ops": how many of `expected` items match (shown as "4/4 parts")
    source: str = "counted"      # counted | allocated | measured | published | formula only
    formula: str = ""            # the formula in symbols
    note: str = ""               # why an approximation is off by what it is off by
    slide: str = ""              # the slide(s) of the talk the row demonstrates (docs/notation.md, "The talk")

    @property
    def error(self) -> float:
        """counted / expected − 1."""
        if self.expected == 0:
            return 0.0 if self.counted == 0 else float("inf")
        return self.counted / self.expected - 1.0

    @property
    def counts(self) -> bool:
        """Whether the row is a claim checked against execution (everything but an illustration)."""
        return self.kind != "illustration"

    @property
    def ok(self) -> bool:
        if self.kind == "illustration":
            return True
        if self.kind == "exact":
            return self.counted == self.expected
        if self.kind == "at_most":
            return self.counted <= self.expected
        return abs(self.error) <= self.tolerance

    @property
    def verdict(self) -> str:
        if self.kind == "exact":
            return "exact" if self.ok else f"MISMATCH ({_signed_pct(self.error)})"
        if self.kind == "at_most":
            return "within the bound" if self.ok else "ABOVE THE BOUND"
        if self.kind == "illustration":
            return f"{_signed_pct(self.error)}: an illustration, not counted"
        err, tol = _signed_pct(self.error), _pct(self.tolerance)
        return f"{err}, within ±{tol}" if self.ok else f"{err}: OUTSIDE ±{tol}"

    def to_dict(self) -> dict:
        return {"section": self.section, "model": self.model, "claim": self.claim, "formula": self.formula,
                "kind": self.kind, "expected": _jsonable(self.expected), "counted": _jsonable(self.counted),
                "unit": self.unit, "source": self.source, "tolerance": self.tolerance,
                "error": _jsonable(self.error), "ok": self.ok, "verdict": self.verdict, "note": self.note,
                "slide": self.slide}


# ---- running the models --------------------------------------------------------------------------------------

@dataclass
class Run:
    """What one model did under the counters, and what was measured of its memory."""
    cfg: Config
    model: Transformer
    opt: AdamW
    train: Counter                       # loss_and_grads + AdamW.step on (BATCH, SEQ)
    infer: Counter                       # model.forward on the same tokens
    prefill: Counter                     # PROMPT tokens per sequence into an empty cache
    decode: dict[int, Counter]           # t -> the cached decode step with t tokens already cached
    recompute: dict[int, Counter]        # t -> model.forward over the t + 1 tokens (no cache)
    cache: KVCache
    kv_written: int                      # kv_cache bytes written by the prefill and every decode step
    positions: int                       # positions written per sequence (prompt + decode steps)
    decode_by_batch: dict[int, Counter]  # batch -> one decode step with PROMPT tokens cached
    parallel: Counter | None = None      # one forward over PARALLEL tokens per sequence (slide 9)
    serial: Counter | None = None        # the same tokens generated one step at a time: prefill 1, decode the rest
    saved_activations: int = 0           # memory.measure_saved_activations at (BATCH, SEQ)
    largest_activation: int = 0          # memory.largest_activation
    by_depth: dict[int, tuple[int, int]] = field(default_factory=dict)  # L -> (saved, inference peak)


def _run(name: str, say: Callable[[str], None]) -> Run:
    cfg = Config.preset(name)
    model = Transformer(cfg, seed=0, dtype=DTYPE)
    opt = AdamW(model, lr=1e-3)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(BATCH, SEQ))
    targets = np.roll(tokens, -1, axis=1)

    say(f"{name}: a training step (B={BATCH}, T={SEQ}) and an inference forward")
    with count() as train:
        _, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
    with count() as infer:
        model.forward(tokens)

    at = ", ".join(map(str, DECODE_AT))
    say(f"{name}: prefill {PROMPT} tokens, decode to t={max(DECODE_AT)}, recompute at t={at}")
    max_len = max(DECODE_AT) + 1
    ids = rng.integers(0, cfg.vocab_size, size=(BATCH, max_len))
    cache = KVCache(cfg, BATCH, max_len, DTYPE)
    steps: dict[int, Counter] = {}
    with count() as everything:
        with count() as pre:
            model.prefill(ids[:, :PROMPT], cache)
        for t in range(PROMPT, max_len):
            with count() as step:
                model.decode(ids[:, t], cache)   # teacher-forced, so the recompute below sees the same ids
            if t in DECODE_AT:
                steps[t] = step
    recompute: dict[int, Counter] = {}
    for t in DECODE_AT:
        with count() as again, phase("decode"):
            model.forward(ids[:, :t + 1])
        recompute[t] = again
    by_batch: dict[int, Counter] = {}
    for b in DECODE_BATCHES:
        small = KVCache(cfg, b, PROMPT + 1, DTYPE)
        model.prefill(np.repeat(ids[:1, :PROMPT], b, axis=0), small)
        with count() as step:
            model.decode(np.repeat(ids[:1, PROMPT], b), small)
        by_batch[b] = step
    run = Run(cfg, model, opt, train, infer, pre, steps, recompute, cache,
              everything.writes.get("kv_cache", 0), max_len, by_batch)
    # Slide 9: training knows the whole sequence, so one pass predicts every next token; generating the same
    # tokens takes one pass per token (teacher-forced here, so both runs see the same ids).
    with count() as run.parallel:
        model.forward(ids[:, :PARALLEL])
    serial_cache = KVCache(cfg, BATCH, PARALLEL, DTYPE)
    with count() as run.serial:
        model.prefill(ids[:, :1], serial_cache)
        for t in range(1, PARALLEL):
            model.decode(ids[:, t], serial_cache)

    say(f"{name}: measuring saved activations and the inference peak at {' and '.join(map(str, DEPTHS))} "
        f"layer{'s' if max(DEPTHS) > 1 else ''}")
    run.saved_activations = memory.measure_saved_activations(model, tokens)
    run.largest_activation = memory.largest_activation(model, tokens)
    for depth in DEPTHS:
        if depth == cfg.n_layers:
            run.by_depth[depth] = (run.saved_activations, memory.measure_inference_peak(model, tokens))
            continue
        other = Transformer(cfg.replace(n_layers=depth, name=f"{name}-{depth}L"), seed=0, dtype=DTYPE)
        run.by_depth[depth] = (memory.measure_saved_activations(other, tokens),
                               memory.measure_inference_peak(other, tokens))
    return run


def _warm_up(say: Callable[[str], None]) -> float:
    """Run every kernel once on a tiny model of each family, so Numba compiles them (or loads them from its
    cache) before anything is timed. When that takes more than a second, kernels are being compiled: say so."""
    start = time.perf_counter()
    timer = threading.Timer(1.0, say, args=("compiling kernels (first run only)...",))
    timer.daemon = True
    timer.start()
    try:
        for name in ("tiny-gpt2", "tiny-llama"):
            cfg = Config.preset(name)
            model = Transformer(cfg, dtype=DTYPE)
            tokens = np.arange(8, dtype=np.int64).reshape(2, 4) % cfg.vocab_size
            _, grads = model.loss_and_grads(tokens, tokens)
            AdamW(model).step(grads)
            cache = KVCache(cfg, 2, 5, DTYPE)
            model.prefill(tokens, cache)
            model.decode(tokens[:, 0], cache)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    if seconds > 1.0:
        say(f"kernels ready after {seconds:.1f} s")
    return seconds


def run_checks(models: tuple[str, ...] = MODELS, progress: Callable[[str], None] | None = None) -> list[Claim]:
    """Run each model for real under the counters; return every claim, checked (see `Claim.ok`).
    `progress`, if given, receives one-line status messages (the CLI prints them on stderr)."""
    for name in models:
        cfg = Config.preset(name)
        if cfg.n_ctx < max(max(DECODE_AT) + 1, SEQ):
            raise ValueError(f"minitx check needs n_ctx >= {max(max(DECODE_AT) + 1, SEQ)}; {name} has "
                             f"n_ctx={cfg.n_ctx}")
    say = progress or (lambda message: None)
    _warm_up(say)
    runs = [_run(name, say) for name in models]
    claims: list[Claim] = []
    for section in (_parameter_claims, _exact_claims, _compute_claims, _memory_claims, _parallel_claims,
                    _kv_claims, _serving_claims, _many_users_claims):
        for run in runs:
            claims += section(run)
        if section is _parameter_claims:
            claims += _published_claims()
    return _cite_slides(claims + real_model_claims(say))


# The slide of the talk each section demonstrates (docs/notation.md, "The talk"), and the rows that show a
# more specific one (matched by a phrase of the claim).
SECTION_SLIDES = {"parameters": "5, 8", "exact": "6", "compute": "6", "memory": "7", "parallel": "9",
                  "kv cache": "11", "serving": "14", "many users": "12, 15, 16",
                  "real models": "5, 14"}
ROW_SLIDES = (("Gemma", "1, 5"), ("Adam", "7"), ("recompute", "10, 11"), ("decode, batch", "15"),
              ("16-bit, batch", "15"), ("prefill matmuls", "14"), ("decode matmuls", "14"),
              ("largest single activation", "7"), ("inference peak", "7"))


def _cite_slides(claims: list[Claim]) -> list[Claim]:
    for c in claims:
        if not c.slide:
            c.slide = next((slide for phrase, slide in ROW_SLIDES if phrase in c.claim),
                           SECTION_SLIDES.get(c.section, ""))
    return claims


def _parallel_claims(run: Run) -> list[Claim]:
    """Slide 9: a training-style forward over T known tokens makes T next-token predictions per sequence in one
    pass; generating T tokens takes T passes, one after another, for the same linear-layer work."""
    cfg, name, T = run.cfg, run.cfg.name, PARALLEL
    head_rows = run.parallel.filter("lm_head").macs // (cfg.d_model * cfg.vocab_size)
    passes = sum(1 for r in run.serial if r.name == "lm_head")
    linear = F.forward_pass(cfg, BATCH, T, DTYPE).filter(op="matmul").flops
    return [
        Claim("parallel", name, f"one forward over T={T} known tokens: next-token predictions", BATCH * T,
              head_rows, formula="B·T (logits rows of the one lm_head call)",
              note="every position's next token is predicted at once: the whole sequence is known"),
        Claim("parallel", name, f"generating T={T} tokens: passes through the model, one after another", T,
              passes, formula="T (prefill 1 token, then T − 1 decode steps: one lm_head call each)"),
        Claim("parallel", name, "  for the same linear-layer FLOPs as the one forward",
              linear, run.serial.filter(op="matmul").flops, unit="FLOPs",
              formula=f"forward_pass(cfg, {BATCH}, {T}) matmuls",
              note="each token meets every weight once either way; the parallel pass does it in one go"),
    ]


# ---- the claims ----------------------------------------------------------------------------------------------

def _parameter_claims(run: Run) -> list[Claim]:
    cfg, m = run.cfg, run.model
    parts: dict[str, int] = {}
    for spec in m.table:
        parts[spec.part] = parts.get(spec.part, 0) + spec.size
    breakdown = F.param_breakdown(cfg)
    formula = {k: v for k, v in breakdown.items() if k != "total" and v}
    return [
        Claim("parameters", cfg.name, "parameters allocated = the closed-form count", F.num_params(cfg),
              m.num_params(), source="allocated",
              formula="V·C + n_ctx·C + L·(12C² + 13C) + 2C" if cfg.position == "learned" else
              "2·V·C + L·(C·(NH+2KV)·HS + NH·HS·C + 3·C·F + 2C) + C"),
        Claim("parameters", cfg.name, "per part (embedding, attention, mlp, ...) = formula", len(formula),
              sum(parts.get(k) == v for k, v in formula.items()) if set(parts) == set(formula) else 0,
              unit="parts", source="allocated", formula="param_breakdown(cfg)"),
        Claim("parameters", cfg.name, "share of the parameters in the vocabulary tables (embeddings"
              + (", untied head)" if not cfg.tie_embeddings else ")"),
              round(100 * (breakdown["embedding"] + breakdown["lm_head"]) / F.num_params(cfg), 6),
              round(100 * (parts["embedding"] + parts.get("lm_head", 0)) / m.num_params(), 6), unit="%",
              source="allocated",
              formula={(True, True): "(V·C + n_ctx·C) / P", (True, False): "V·C / P",
                       (False, True): "(2·V·C + n_ctx·C) / P", (False, False): "2·V·C / P (wte + lm_head)"}[
                  (cfg.tie_embeddings, cfg.position == "learned")]),
    ]


def _published_claims() -> list[Claim]:
    gemma = Config.preset("gemma-2b")
    non_emb, non_emb_src = PUBLISHED["gemma-2b non-embedding"]
    total, total_src = PUBLISHED["gemma-2b total"]
    return [
        Claim("parameters", "gemma-2b", "'Gemma 2B' is named by its non-embedding count",
              F.non_embedding_params(gemma), non_emb, source=f"published: {non_emb_src}",
              formula="P − V·C"),
        Claim("parameters", "gemma-2b", "... but holds 2.5B: a 256k vocabulary adds 0.52B",
              F.num_params(gemma), total, source=f"published: {total_src}", formula="P",
              note=f"V·C = 256,000 · 2048 = 524,288,000 (tied), {100 * 524_288_000 / total:.1f}% of the total"),
    ]


def _ops_matching(pairs: list[tuple[Ledger, Ledger]]) -> tuple[int, int]:
    """Over (counted, formula) pairs: (ops whose FLOPs, MACs, bytes per category and phase all equal the
    formula's, ops named by either side)."""
    good = total = 0
    for counter, costs in pairs:
        counted, predicted = counter.summary_by("name"), costs.summary_by("name")
        names = set(counted) | set(predicted)
        total += len(names)
        good += sum(counted.get(n) == predicted.get(n) for n in names)
    return good, total


def _exact_claims(run: Run) -> list[Claim]:
    """Counted == formula, to the FLOP and the byte, for every phase of training and of inference."""
    cfg, name = run.cfg, run.cfg.name
    out: list[Claim] = []
    step = F.training_step(cfg, BATCH, SEQ, DTYPE)
    pairs = []
    for ph in ("forward", "backward", "optimizer"):
        counter, costs = run.train.filter(phase=ph), step.filter(phase=ph)
        out.append(Claim("exact", name, f"training {ph}: FLOPs", costs.flops, counter.flops, unit="FLOPs",
                         formula=f"training_step(cfg, {BATCH}, {SEQ}), {ph}"))
        out.append(Claim("exact", name, f"training {ph}: bytes read + written", costs.bytes, counter.bytes,
                         unit="B", formula=f"training_step(cfg, {BATCH}, {SEQ}), {ph}"))
        pairs.append((counter, costs))
    fwd = F.forward_pass(cfg, BATCH, SEQ, DTYPE)
    pre = F.prefill(cfg, BATCH, PROMPT, DTYPE)
    for label, counter, costs, formula in (
            ("inference forward", run.infer, fwd, f"forward_pass(cfg, {BATCH}, {SEQ})"),
            (f"prefill of {PROMPT} tokens", run.prefill, pre, f"prefill(cfg, {BATCH}, {PROMPT})")):
        out.append(Claim("exact", name, f"{label}: FLOPs", costs.flops, counter.flops, unit="FLOPs",
                         formula=formula))
        out.append(Claim("exact", name, f"{label}: bytes read + written", costs.bytes, counter.bytes, unit="B",
                         formula=formula))
        pairs.append((counter, costs))
    for t in DECODE_AT:
        costs = F.decode_step(cfg, BATCH, t, DTYPE)
        out.append(Claim("exact", name, f"decode step, {t} tokens cached: FLOPs", costs.flops, run.decode[t].flops,
                         unit="FLOPs", formula=f"decode_step(cfg, {BATCH}, {t})"))
        pairs.append((run.decode[t], costs))
    good, total = _ops_matching(pairs)
    out.append(Claim("exact", name, "ops matching in FLOPs, MACs and bytes per category", total, good,
                     unit="ops", formula="one formula Record per recorded op name"))
    return out


def _compute_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    tokens = BATCH * SEQ
    fwd = run.infer.flops
    attention = F.attention_flops_palm(cfg, SEQ) * tokens
    train = run.train.filter(phase="forward").flops + run.train.filter(phase="backward").flops

    def matmul_macs(ph: str) -> int:
        return run.train.filter(phase=ph, op="matmul").macs + run.train.filter(phase=ph, op="attention").macs

    lookups = "the embedding lookup" if cfg.tie_embeddings else "the wte lookup"
    return [
        Claim("compute", name, "inference forward FLOPs ≈ 2·P·tokens", F.approx_forward_flops_2P(cfg, tokens),
              fwd, kind="approx", tolerance=0.10, unit="FLOPs", formula="2·P·B·T",
              note="leaves out attention's T-dependent scores and mix (4·L·T·NH·HS per token, "
                   f"{100 * attention / fwd:.1f}% here) and the O(C) norms, softmax and activations; "
                   f"it also charges {lookups}, which costs no FLOPs, as a matmul"),
        Claim("compute", name, "  ≈ 2·P·tokens + attention 4·L·T·(NH·HS)·tokens",
              F.approx_forward_flops_2P(cfg, tokens) + attention, fwd, kind="approx", tolerance=0.05,
              unit="FLOPs", formula="2·P·B·T + 4·L·T·NH·HS·B·T (PaLM's attention term)",
              note="left over: norms, softmax, activations and the lookups"),
        Claim("compute", name, "backward matmul MACs = 2 × forward (dX and dW)", 2 * matmul_macs("forward"),
              matmul_macs("backward"), unit="MACs", formula="2 × forward MACs (linear layers, scores, mix)"),
        Claim("compute", name, "training (fwd + bwd) ≈ 3 × inference forward", 3 * fwd, train, kind="approx",
              tolerance=0.02, unit="FLOPs", formula="3 × counted inference forward",
              note="exact for every matmul; the loss and the norms', softmax's and activations' backward "
                   "are not exactly twice their forward"),
        Claim("compute", name, "training (fwd + bwd) ≈ 6·P·tokens", F.approx_training_flops_6P(cfg, tokens),
              train, kind="approx", tolerance=0.10, unit="FLOPs", formula="6·P·B·T",
              note="the same omissions as 2·P·tokens, three times over"),
    ]


def _memory_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    lo, hi = DEPTHS
    (saved_lo, peak_lo), (saved_hi, peak_hi) = run.by_depth[lo], run.by_depth[hi]
    formula_lo = F.saved_activation_bytes(cfg.replace(n_layers=lo), BATCH, SEQ, DTYPE, include_loss=True)
    formula_hi = F.saved_activation_bytes(cfg.replace(n_layers=hi), BATCH, SEQ, DTYPE, include_loss=True)
    return [
        Claim("memory", name, "Adam's m and v: 2 extra copies of the weights", F.adam_state_bytes(cfg, DTYPE),
              run.opt.m.nbytes + run.opt.v.nbytes, unit="B", source="allocated", formula="2·P·bytes"),
        Claim("memory", name, f"training keeps every activation (L={cfg.n_layers})",
              F.saved_activation_bytes(cfg, BATCH, SEQ, DTYPE, include_loss=True), run.saved_activations,
              unit="B", source="measured", formula=f"saved_activation_bytes(cfg, {BATCH}, {SEQ})",
              note="memory.measure_saved_activations: the distinct arrays the caches hold for the backward"),
        Claim("memory", name, f"  so it grows with depth: L={hi} / L={lo}", round(formula_hi / formula_lo, 6),
              round(saved_hi / saved_lo, 6), unit="x", source="measured", formula="ratio of the formulas"),
        Claim("memory", name, "the largest single activation", max(F.activation_sizes(cfg, BATCH, SEQ,
                                                                                      DTYPE).values()),
              run.largest_activation, unit="B", source="measured", formula="max(activation_sizes(...))"),
        Claim("memory", name, f"inference peak does not grow with depth: L={hi} / L={lo}", 1.0,
              round(peak_hi / peak_lo, 6), kind="approx", tolerance=0.02, unit="x", source="measured",
              formula="1",
              note=f"tracemalloc peak of model.forward: {peak_lo:,} B at L={lo}, {peak_hi:,} B at L={hi}, while "
                   f"training keeps {saved_lo:,} B and {saved_hi:,} B. The peak is a few activations (about "
                   f"{peak_hi / run.largest_activation:.1f}x the largest here): this unfused forward holds "
                   "the intermediate arrays of a block or two at a time, whatever the depth"),
        Claim("memory", name, "inference peak is a few activations: peak ÷ largest ≤ 4", 4.0,
              round(peak_hi / run.largest_activation, 3), kind="at_most", unit="x", source="measured",
              formula="≤ 4",
              note="an op reads its input while it writes its output, next to the residual stream: a few "
                   f"activations are alive at once, never the whole forward (training keeps "
                   f"{saved_hi / peak_hi:.1f}x the inference peak at L={hi})"),
    ]


def _kv_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    B, S, item = run.cache.batch, run.cache.max_len, np.dtype(DTYPE).itemsize
    out = [
        Claim("kv cache", name, f"cache bytes for B={B}, S={S} (cache.nbytes)", F.kv_cache_bytes(cfg, B, S, DTYPE),
              run.cache.nbytes, unit="B", source="allocated",
              formula=f"2·L·KV·HS·S·B·bytes = 2·{cfg.n_layers}·{cfg.n_kv_heads}·{cfg.head_dim}·{S}·{B}"
                      f"·{item}"),
        Claim("kv cache", name, "kv_cache bytes written by prefill + decode",
              F.kv_bytes_per_token(cfg, DTYPE) * B * run.positions, run.kv_written, unit="B",
              formula=f"kv_bytes_per_token × B × {run.positions} positions"),
    ]
    for t in DECODE_AT:
        predicted = F.recompute_step(cfg, BATCH, t, DTYPE).flops / F.decode_step(cfg, BATCH, t, DTYPE).flops
        out.append(Claim("kv cache", name, f"recompute ÷ cached step at t={t} ≈ t + 1 (recompute redoes all t + 1 "
                         "tokens)", round(predicted, 6),
                         round(run.recompute[t].flops / run.decode[t].flops, 6), unit="x",
                         formula=f"recompute_step / decode_step at t={t}"))
    return out


def _weights_read(ledger: Ledger) -> int:
    return ledger.reads.get("weights", 0)


def _serving_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    pre = F.prefill(cfg, BATCH, PROMPT, DTYPE).filter(op="matmul")
    dec = F.decode_step(cfg, 1, PROMPT, DTYPE).filter(op="matmul")
    out = [
        Claim("serving", name, f"prefill matmuls' FLOP/B, B·T = {BATCH}·{PROMPT} rows",
              round(pre.intensity, 6),
              round(run.prefill.filter(op="matmul").totals().intensity, 6), unit="FLOP/B",
              formula="2·N·K·M / (N·K + K·M + N·M)·bytes per linear layer, summed"),
        Claim("serving", name, "decode matmuls' FLOP/B, batch 1 (matrix-vector)",
              round(dec.intensity, 6),
              round(run.decode_by_batch[1].filter(op="matmul").totals().intensity, 6), unit="FLOP/B",
              formula="≈ 2·K·M / (K·M)·bytes = 2 / bytes"),
    ]
    for b in DECODE_BATCHES:
        matmuls = run.decode_by_batch[b].filter(op="matmul")
        out.append(Claim("serving", name, f"decode, batch {b}: FLOPs per weight byte ≈ B/2 (fp32)", b / 2,
                         round(matmuls.flops / _weights_read(matmuls), 6), kind="approx", tolerance=0.01,
                         unit="FLOP/B", formula="2 FLOPs per weight per sequence / 4 bytes",
                         note="biases cost 1 FLOP per output per sequence for 4 bytes" if cfg.bias else
                         "no biases here: 2 FLOPs per 4-byte weight per sequence, nothing else in the matmuls"))
    b = max(DECODE_BATCHES)
    executed = _shape_only_decode(cfg, b, PROMPT, "bfloat16", weights_from=run.model)
    dec16 = executed.filter(op="matmul")
    out.append(Claim("serving", name, f"  16-bit, batch {b}: ≈ B FLOP per weight byte", b,
                     round(dec16.flops / _weights_read(dec16), 6), kind="approx", tolerance=0.01,
                     unit="FLOP/B", source="counted (bf16)",
                     formula="2 FLOPs per weight per sequence / 2 bytes",
                     note="a bfloat16 decode step executed (weights, activations and KV cache in 16 bits, float32 "
                          "arithmetic): the ops' own records at 2 bytes per weight" +
                          (", plus the biases' 1 FLOP per output" if cfg.bias else "")))
    by_shape = _shape_only_decode(cfg, b, PROMPT, "bfloat16")
    out.append(Claim("serving", name, f"  16-bit, executed: bytes of a decode step (batch {b}) = counted by shape",
                     by_shape.bytes, executed.bytes, unit="B", source="counted (bf16)",
                     formula="Transformer(cfg, dtype='bfloat16', shape_only=True): the same ops, no data"))
    return out


def _shape_only_decode(cfg: Config, B: int, t: int, dtype, weights=None, weights_from=None) -> Counter:
    """One decode step at context t + 1, counted from a shape-only run (nothing allocated), or executed for real
    with the weights of the float model `weights_from` rounded to `dtype`."""
    model = Transformer(cfg, dtype=dtype, weight_dtype=weights, attention="fused", shape_only=weights_from is None,
                        init=False)
    if weights_from is not None:
        for name, view in model.params.items():
            view[...] = weights_from.params[name]
    cache = model.new_cache(B, t + 1)
    model.prefill(np.zeros((B, t), dtype=np.int64), cache)
    with count() as c:
        model.decode(np.zeros(B, dtype=np.int64), cache)
    return c


# ---- serving many users: the engine, executed, its steps' counted costs on a GPU's roofline ---------------------
#
# minitx.Engine runs many requests through the small models for real, one packed model call per step; with a
# hardware preset each step's counted costs (a minitx.count() around the call) are placed on that chip's roofline,
# so the timelines come in modelled seconds. (In steps alone every TTFT would be one step and every throughput B
# tokens per step: nothing to learn.) The expected side of each row never comes from an engine run: either the
# closed forms (minitx.formulas) of the steps the workload implies, on the same roofline, or a stated bound.

SERVE_HW = "h100-sxm"                 # the chip the steps are timed on (its fp32 peak: the models run in float32)
SERVE_BATCHES = (1, 2, 4, 8, 16, 32)  # slide 15: B equal requests arriving together, served as one static batch
SERVE_PROMPT, SERVE_GEN = 16, 8       # ... each a 16-token prompt and 8 new tokens
MIX_PROMPTS = (8, 20, 12, 24, 16, 8, 20, 12, 24, 16, 8, 20, 12, 24, 16, 8)   # slide 16: 16 requests queued at
MIX_GENS = (12, 2, 8, 1, 10, 4, 6, 3, 12, 2, 8, 1, 10, 4, 6, 3)              # once, short and long mixed,
MIX_BATCH = 4                                                                  # served 4 at a time
KV_BLOCK, KV_REQUESTS, KV_PROMPT, KV_GEN = 16, 4, 8, 24   # slide 12: 4 requests grow from 8 to 31 positions


def _serve(model: Transformer, prompts: list[np.ndarray], gens, **engine_args):
    """Run the requests (all arriving at step 0, greedy, no stop token: each generates its whole cap) through
    minitx.Engine with its steps timed on SERVE_HW."""
    engine = Engine(model, hardware=SERVE_HW, **engine_args)
    for prompt, gen in zip(prompts, gens):
        engine.submit(prompt, gen)
    return engine.run()


def _static_batch_seconds(cfg: Config, B: int, P: int, G: int) -> tuple[float, float]:
    """(TTFT, whole run) in seconds for B requests of P prompt tokens and G new tokens served as one batch, from
    the formulas alone: one prefill of B·P tokens (its last rows give each request's first token), then G − 1
    decode steps of B tokens at positions P .. P + G − 2, each op on SERVE_HW's roofline. A decode step is
    formulas.step with logits for all B rows: the engine asks for each chunk's last row, and when every row is
    wanted the model still gathers them (select_last), which Transformer.decode skips."""
    ttft = analyze(F.prefill(cfg, B, P, DTYPE), SERVE_HW, DTYPE).time
    steps = [ttft] + [analyze(F.step(cfg, [(B, 1, t)], DTYPE, logits_rows=B), SERVE_HW, DTYPE).time
                      for t in range(P, P + G - 1)]
    return ttft, sum(steps)


def _kv_waste(cfg: Config, lengths_by_step, caps=None) -> float:
    """Mean over steps of (reserved − used) / reserved KV bytes, from formulas.paged_kv_bytes: the engine's
    kv_waste, computed from the sequences' lengths alone."""
    ratios = []
    for lengths in lengths_by_step:
        kv = F.paged_kv_bytes(cfg, lengths, KV_BLOCK, DTYPE, caps=caps)
        ratios.append(kv["waste"] / kv["reserved"])
    return float(np.mean(ratios))


def _many_users_claims(run: Run) -> list[Claim]:
    cfg, name, model = run.cfg, run.cfg.name, run.model
    rng = np.random.default_rng(1)
    hw, top = get_hardware(SERVE_HW), max(SERVE_BATCHES)

    # Slide 15: throughput and TTFT against the batch size.
    P, G = SERVE_PROMPT, SERVE_GEN
    prompt = rng.integers(0, cfg.vocab_size, P)
    ran = {B: _serve(model, [prompt] * B, [G] * B, policy="static", max_batch=B).summary for B in SERVE_BATCHES}
    tok_s = {B: ran[B]["throughput_tok_s"] for B in SERVE_BATCHES}
    predicted = {B: _static_batch_seconds(cfg, B, P, G) for B in SERVE_BATCHES}
    gains = [tok_s[2 * B] / tok_s[B] for B in SERVE_BATCHES[:-1]]
    ridge = hw.ridge(DTYPE)
    out = [
        Claim("many users", name, f"static batch of B = 1 → {top} (prompts {P}, {G} new tokens each): tok/s ×",
              round((top * G / predicted[top][1]) / (G / predicted[1][1]), 6), round(tok_s[top] / tok_s[1], 6),
              unit="x", slide="15", source=f"counted, on {hw.name}",
              formula="B·G / (prefill(B, P) + Σ step(B rows at t = P … P+G−2)) on the roofline, B=32 ÷ B=1",
              note="the engine's steps, counted as they ran, on the chip's roofline, against the closed forms of "
                   "the same steps"),
        Claim("many users", name, "  each doubling of B gains less than the one before: max gain(2B) ÷ gain(B)",
              1.0, round(max(b / a for a, b in zip(gains, gains[1:])), 6), kind="at_most", unit="x", slide="15",
              source=f"counted, on {hw.name}", formula="≤ 1: diminishing returns",
              note="tok/s gained by each doubling of B from 1 to 32: " + ", ".join(f"×{g:.2f}" for g in gains)
                   + f". A decode step reads every weight once for the whole batch, so tokens per step grow with B "
                     f"at first almost for free; but in fp32 the matmuls' intensity is only about B/2 FLOP per "
                     f"byte, nearing the chip's fp32 ridge ({ridge:.0f} FLOP/B), and the activations' bytes grow "
                     f"with B while the weights' stay put"),
        Claim("many users", name, f"  TTFT, B = {top} ÷ B = 1: it rises (slide 15's text says batching lowers it)",
              round(predicted[top][0] / predicted[1][0], 6),
              round(ran[top]["ttft_p50_s"] / ran[1]["ttft_p50_s"], 6), unit="x", slide="15",
              source=f"counted, on {hw.name}", formula="prefill(B=32, P) ÷ prefill(B=1, P) on the roofline",
              note=f"the {top} prompts are prefilled together, {top}·{P} tokens in one step, and every request's "
                   "first token waits for all of them. The slide's text says batching decreases the time to "
                   "first token; the counts show it increases"),
    ]

    # Slide 16: the same queue of mixed requests, batch by batch (static) or re-formed every step (continuous).
    prompts = [rng.integers(0, cfg.vocab_size, p) for p in MIX_PROMPTS]
    served = {policy: _serve(model, prompts, MIX_GENS, policy=policy, max_batch=MIX_BATCH)
              for policy in ("static", "continuous")}
    jobs = [Job(0.0, p, g, g) for p, g in zip(MIX_PROMPTS, MIX_GENS)]
    simulated = {policy: simulate(cfg, hw, jobs, DTYPE, model.attention, policy=policy, max_batch=MIX_BATCH,
                                  num_blocks=served[policy].summary["kv_blocks"]).summary
                 for policy in served}
    cont, stat = (served[p].summary for p in ("continuous", "static"))

    def latency_p50(result) -> float:
        return float(np.median([r.finish_s - r.arrival_s for r in result.requests]))
    n = len(MIX_PROMPTS)
    out += [
        Claim("many users", name, f"continuous ÷ static batching, {n} mixed requests {MIX_BATCH} at a time: tok/s",
              round(simulated["continuous"].throughput_tok_s / simulated["static"].throughput_tok_s, 6),
              round(cont["throughput_tok_s"] / stat["throughput_tok_s"], 6), unit="x", slide="16",
              source=f"counted, on {hw.name}",
              formula="serving.simulate on the same requests: each step priced by the closed forms",
              note="static batching holds each batch until its longest member ends; continuous (Orca's "
                   "iteration-level scheduling) lets a finished request leave and a waiting one join at once"),
        Claim("many users", name, "  at lower latency: continuous's TTFT p50 ÷ static's", 1.0,
              round(cont["ttft_p50_s"] / stat["ttft_p50_s"], 6), kind="at_most", unit="x", slide="16",
              source=f"counted, on {hw.name}", formula="≤ 1",
              note="a queued request starts as soon as any place frees, not when the whole batch before it ends"),
        Claim("many users", name, "  continuous's latency p50 (arrival to last token) ÷ static's", 1.0,
              round(latency_p50(served["continuous"]) / latency_p50(served["static"]), 6), kind="at_most", unit="x",
              slide="16", source=f"counted, on {hw.name}", formula="≤ 1",
              note=f"TPOT p50 is {cont['tpot_p50_s'] / stat['tpot_p50_s']:.2f}x static's (fuller batches, prefills "
                   "mixed into decode steps), but requests no longer wait for others' batches to end"),
    ]

    # Slide 12: the KV memory the same requests hold, in blocks as they grow (paged) or reserved whole (contiguous).
    P, G, B = KV_PROMPT, KV_GEN, KV_REQUESTS
    prompt = rng.integers(0, cfg.vocab_size, P)
    lengths = [[P + k] * B for k in range(G)]     # step k (0: the prefill) leaves each sequence P + k positions
    layouts = {layout: _serve(model, [prompt] * B, [G] * B, policy="static", max_batch=B, kv_layout=layout,
                              block_size=KV_BLOCK) for layout in ("paged", "contiguous")}
    paged = layouts["paged"]
    per_token = paged.summary["kv_pool_bytes"] // (paged.summary["kv_blocks"] * paged.summary["kv_block_size"])
    empty = max((s.reserved_bytes - s.used_bytes) / per_token / s.sequences for s in paged.steps)
    out += [
        Claim("many users", name, f"paged KV, blocks of {KV_BLOCK}: kv_waste ({B} requests, {P} → {P + G - 1} "
              "positions)", round(100 * _kv_waste(cfg, lengths), 6),
              round(100 * paged.summary["kv_waste"], 6), unit="%", slide="12", source="counted (engine)",
              formula="mean over steps of waste ÷ reserved, formulas.paged_kv_bytes(lengths, X)"),
        Claim("many users", name, "  empty reserved positions per sequence, worst step ≤ block_size − 1",
              KV_BLOCK - 1, round(empty, 6), kind="at_most", slide="12", source="counted (engine)",
              formula="X − 1",
              note="a sequence takes a block only when its last one is full: all that can be empty is the rest of "
                   f"its last block (the {B} sequences grow in step, so the step's mean is each one's)"),
        Claim("many users", name, "contiguous KV (prompt + cap reserved at admission): kv_waste",
              round(100 * _kv_waste(cfg, lengths, caps=[P + G] * B), 6),
              round(100 * layouts["contiguous"].summary["kv_waste"], 6), unit="%", slide="12",
              source="counted (engine)",
              formula="the same, with formulas.paged_kv_bytes(lengths, X, caps=P + G)",
              note="here every request generates its whole cap, so only the positions not yet generated are "
                   "empty; servers whose caps far exceed the answers waste more (vLLM measured 60-80% in the "
                   "systems before it; lesson 08 simulates it)"),
    ]
    return out


REAL_MODELS = ("gemma-2b", "llama-3-8b", "mistral-7b", "llama-2-70b")
REAL_TOKENS = 1000      # a prefill of this many tokens, then a decode step at this context


def real_model_claims(say: Callable[[str], None] = lambda m: None) -> list[Claim]:
    """Real models, counted by shape (Transformer(..., shape_only=True): the same ops, no data), against the
    formulas: parameters, and a prefill of 1,000 tokens and a decode step at a context of 1,000, in bfloat16
    and with int4 weights (one float16 scale per 128 inputs), fused attention, exact."""
    out: list[Claim] = []
    for name in REAL_MODELS:
        cfg = Config.preset(name)
        say(f"{name}: counting a prefill and a decode step by shape, in bf16 and with int4 weights")
        model = Transformer(cfg, dtype="bfloat16", shape_only=True)
        out.append(Claim("real models", name, "parameters of the instantiated model", F.num_params(cfg),
                         model.num_params(), source="counted by shape", formula="num_params(cfg)"))
        for pr in (Precision("bfloat16"), Precision("bfloat16", weights="int4")):
            m = Transformer(cfg, dtype=pr.activations, weight_dtype=pr.weights, attention="fused",
                            shape_only=True)
            cache = m.new_cache(1, REAL_TOKENS + 1, chunk=REAL_TOKENS)
            with count() as pre:
                m.prefill(np.zeros((1, REAL_TOKENS), dtype=np.int64), cache)
            with count() as dec:
                m.decode([0], cache)
            tag = "bf16" if not pr.quantized else "int4 weights"
            for label, got, want in (
                    (f"prefill {REAL_TOKENS:,} tokens", pre, F.prefill(cfg, 1, REAL_TOKENS, pr, "fused")),
                    (f"decode at {REAL_TOKENS:,}", dec, F.decode_step(cfg, 1, REAL_TOKENS, pr, "fused"))):
                formula = f"{'prefill' if 'prefill' in label else 'decode_step'}(cfg, 1, {REAL_TOKENS}, {tag})"
                out.append(Claim("real models", name, f"{label}, {tag}: FLOPs", want.flops, got.flops,
                                 unit="FLOPs", source="counted by shape", formula=formula))
                out.append(Claim("real models", name, f"{label}, {tag}: bytes", want.bytes, got.bytes, unit="B",
                                 source="counted by shape", formula=formula))
    return out


# ---- presentation --------------------------------------------------------------------------------------------

SECTIONS = {
    "parameters": "PARAMETERS: where they live",
    "exact": "EXACT COUNTS: the formulas predict every FLOP and byte the code moves",
    "compute": "COMPUTE: the rules of thumb, 2 FLOPs per parameter per token and training = 3 x inference",
    "memory": "MEMORY: training holds Adam's copies and every activation; inference a few activations",
    "parallel": "TRAINING IS PARALLEL, GENERATION SERIAL: the whole sequence known at once, or one token at a time",
    "kv cache": "KV CACHE: memory traded for compute",
    "serving": "SERVING: prefill multiplies matrices by matrices, decode by vectors",
    "many users": "SERVING MANY USERS: minitx.Engine executed, each step's counted costs timed on an H100's roofline",
    "real models": "REAL MODELS, counted by shape: the same ops run with data-less arrays, nothing allocated",
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.1f}%"


def _signed_pct(x: float) -> str:
    return f"{100 * x:+.2f}%" if np.isfinite(x) else "inf"


def _jsonable(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else str(x)
    return x


def _fmt(value: float, unit: str) -> str:
    if unit in ("x", "FLOP/B"):
        return f"{value:,.3f}" + ("x" if unit == "x" else "")
    if unit == "%":
        return f"{value:.2f}%"
    if unit in ("parts", "ops"):
        return f"{int(value):,} {unit}"
    if float(value).is_integer():
        return f"{int(value):,}" + (" B" if unit == "B" else "")
    return f"{value:,.4g}"


def _cells(c: Claim) -> tuple[str, str]:
    """The formula and counted columns of a row: a bound reads "≤ 4", a tally of matches "4/4 parts"."""
    formula = f"≤ {c.expected:g}" if c.kind == "at_most" else _fmt(c.expected, c.unit)
    if c.unit in ("parts", "ops"):
        return formula, f"{int(c.counted):,}/{int(c.expected):,} {c.unit}"
    return formula, _fmt(c.counted, c.unit)


NOTE_WIDTH = 116   # the notes under approximation rows wrap at this width


def format_table(claims: list[Claim], header: str = "") -> str:
    """The human table: one row per claim, grouped by section; under each approximation, bound or illustration,
    the note that says why it is off by what it is off by."""
    w_claim = max(len(c.claim) for c in claims)
    w_model = max(len(c.model) for c in claims)
    w_num = max(max(len(cell) for cell in _cells(c)) for c in claims)
    w_slide = max(len("slide"), max(len(c.slide) for c in claims))
    lines = [header] if header else []
    section = None
    for c in claims:
        if c.section != section:
            section = c.section
            lines += ["", SECTIONS.get(section, section.upper()),
                      f"   {'claim':<{w_claim}}  {'model':<{w_model}}  {'slide':<{w_slide}}  {'formula':>{w_num}}  "
                      f"{'counted':>{w_num}}  verdict"]
        src = "" if c.source == "counted" else f"  [{c.source}]"
        mark = "-- " if not c.counts else "ok " if c.ok else "XX "
        formula, counted = _cells(c)
        lines.append(f"{mark}{c.claim:<{w_claim}}  {c.model:<{w_model}}  {c.slide:<{w_slide}}  "
                     f"{formula:>{w_num}}  {counted:>{w_num}}  {c.verdict}{src}")
        if c.note and c.kind != "exact":
            lines.append(textwrap.fill(c.note, width=NOTE_WIDTH, initial_indent=" " * 6,
                                       subsequent_indent=" " * 6, break_on_hyphens=False))
    return "\n".join(lines)


def header() -> str:
    lines = ["minitx check: the talk's arithmetic, formula (minitx.formulas) vs execution (minitx.count); "
             "'slide' cites the talk (docs/notation.md)"]
    for name in MODELS:
        cfg = Config.preset(name)
        attn = "multi-head" if cfg.n_kv_heads == cfg.n_heads else f"GQA {cfg.n_heads}q/{cfg.n_kv_heads}kv heads"
        lines.append(f"  {name}: L={cfg.n_layers} C={cfg.d_model} V={cfg.vocab_size} P={F.num_params(cfg):,}; "
                     f"{cfg.norm}, {cfg.position} positions, {cfg.mlp} MLP, {attn}, "
                     f"{'tied' if cfg.tie_embeddings else 'untied'} head")
    lines.append(f"  training step and inference forward at B={BATCH}, T={SEQ}; prefill {PROMPT} tokens, then "
                 f"cached decode to t={max(DECODE_AT)}; {DTYPE}; 2 FLOPs per multiply-add")
    return "\n".join(lines)
