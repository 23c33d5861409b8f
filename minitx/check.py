"""`minitx check`: run two small models for real and check the talk's claims against what the counters saw.

Every claim of the talk (and of the notes it rests on) becomes one row:

    the claim in plain words | the formula's value | the count from execution | the verdict

The counts come from `minitx.count()` around real work: a training step (forward, backward, AdamW), an inference
forward, a prefill and a run of cached decode steps, and the same steps recomputed without a cache. The formulas
come from `minitx.formulas`, which never runs anything. Two kinds of verdict:

    exact    the formula predicts the count to the last FLOP or byte (the formula spells out what the code does:
             every matmul, norm, softmax entry and byte moved, per `minitx.conventions`)
    approx   the claim is a rule of thumb (forward ≈ 2·P·tokens, training ≈ 3 × inference); the row shows the
             relative error and the tolerance the rule is allowed at these sizes, and says why it is not exact

`run_checks()` returns the rows as `Claim`s (tests and lessons use it); `main()` prints them, or JSON with --json,
and exits 1 if any claim fails. Two families run: a GPT-2-style model (learned positions, LayerNorm, GELU MLP,
tied head) and a Llama-style one (RoPE, RMSNorm, SwiGLU, grouped-query attention, untied head).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import formulas as F
from .config import Config
from .counting import Counter, count, phase
from .decode import KVCache, decode, prefill
from .model import Transformer
from .optim import AdamW

# The two families, as presets small enough to run every check in seconds on a laptop CPU.
MODELS = ("small-gpt2", "small-llama")
DTYPE = "float32"          # what the models run in; the formulas get the same name
BATCH, SEQ = 4, 64         # the training step and the inference forward: B sequences of T tokens
PROMPT = 16                # prefill length before the decode steps
DECODE_AT = (16, 64, 127)  # positions t at which a cached decode step is compared with recomputing
DECODE_BATCHES = (1, 4, 16)  # batch sizes for decode's arithmetic intensity

PUBLISHED = {  # figures quoted by the rows that compare a formula with a published number (FORMULAS.md §2.2)
    "gemma-2b total (HF safetensors)": 2_506_172_416,
    "gemma-2b non-embedding (Gemma report, Table 2)": 1_981_884_416,
}


@dataclass
class Claim:
    """One checked claim. `counted` is what execution produced (or, where `source` says so, a published figure
    or an allocation); `expected` is the formula's value for the same thing."""
    section: str
    model: str
    claim: str
    expected: float
    counted: float
    kind: str = "exact"          # "exact" or "approx"
    tolerance: float = 0.0       # for "approx": allowed |counted / expected − 1|
    unit: str = ""               # "", "B" (bytes), "FLOPs", "x" (a ratio), "%", "FLOP/B"
    source: str = "counted"      # counted | measured | allocated | published
    note: str = ""               # why an approximation is off by what it is off by

    @property
    def error(self) -> float:
        """Relative error of the formula against the count: counted / expected − 1."""
        if self.expected == 0:
            return 0.0 if self.counted == 0 else float("inf")
        return self.counted / self.expected - 1.0

    @property
    def ok(self) -> bool:
        if self.kind == "exact":
            return self.counted == self.expected
        return abs(self.error) <= self.tolerance

    @property
    def verdict(self) -> str:
        if self.kind == "exact":
            return "exact" if self.ok else "MISMATCH"
        within = f"within {_pct(self.tolerance)}"
        return f"{_signed_pct(self.error)} ok ({within})" if self.ok else f"{_signed_pct(self.error)} OUTSIDE {within}"

    def to_dict(self) -> dict:
        return {"section": self.section, "model": self.model, "claim": self.claim, "kind": self.kind,
                "expected": _jsonable(self.expected), "counted": _jsonable(self.counted), "unit": self.unit,
                "source": self.source, "tolerance": self.tolerance, "error": _jsonable(self.error),
                "ok": self.ok, "verdict": self.verdict, "note": self.note}


# ---- running the models --------------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything one model did under the counters."""
    cfg: Config
    model: Transformer
    opt: AdamW
    train: Counter                 # one training step: forward + loss, backward, AdamW
    infer: Counter                 # model.forward on the same tokens (inference: nothing kept for backward)
    prefill: Counter               # PROMPT tokens per sequence into an empty cache
    decode: dict[int, Counter]     # position t -> the cached decode step that writes position t
    recompute: dict[int, Counter]  # position t -> a full forward over t + 1 tokens (no cache)
    cache: KVCache
    kv_written: int                # kv_cache bytes written by the prefill and every decode step
    decode_tokens: int             # positions written per sequence (prompt + decode steps)
    decode_by_batch: dict[int, Counter]  # batch -> one decode step at position PROMPT
    saved_activations: int | None = None
    inference_peak: int | None = None


def _run(name: str, progress: Callable[[str], None]) -> Run:
    cfg = Config.preset(name)
    model = Transformer(cfg, seed=0, dtype=DTYPE)
    opt = AdamW(model, lr=1e-3)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(BATCH, SEQ))
    targets = np.roll(tokens, -1, axis=1)

    progress(f"{name}: training step (B={BATCH}, T={SEQ}), inference forward")
    with count() as train:
        _, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
    with count() as infer:
        model.forward(tokens)

    progress(f"{name}: prefill {PROMPT} tokens, cached decode to t={max(DECODE_AT)}, recompute at {DECODE_AT}")
    max_len = max(DECODE_AT) + 1
    ids = rng.integers(0, cfg.vocab_size, size=(BATCH, max_len))
    cache = KVCache(cfg, BATCH, max_len, DTYPE)
    steps: dict[int, Counter] = {}
    with count() as everything:
        with count() as pre:
            prefill(model, ids[:, :PROMPT], cache)
        for t in range(PROMPT, max_len):
            with count() as step:
                decode(model, ids[:, t], cache)   # teacher-forced: the token at t, so recompute sees the same ids
            if t in DECODE_AT:
                steps[t] = step
    kv_written = everything.bytes_by_category("written").get("kv_cache", 0)
    recompute: dict[int, Counter] = {}
    for t in DECODE_AT:
        with count() as rc, phase("decode"):
            model.forward(ids[:, :t + 1])
        recompute[t] = rc

    by_batch: dict[int, Counter] = {}
    for b in DECODE_BATCHES:
        c = KVCache(cfg, b, PROMPT + 1, DTYPE)
        prefill(model, ids[:1, :PROMPT].repeat(b, axis=0), c)
        with count() as step:
            decode(model, ids[:1, PROMPT].repeat(b), c)
        by_batch[b] = step

    run = Run(cfg, model, opt, train, infer, pre, steps, recompute, cache, kv_written, max_len, by_batch)
    progress(f"{name}: measuring activation memory")
    try:
        from . import memory
    except ImportError:   # memory.py not available: those rows are skipped
        return run
    run.saved_activations = _as_bytes(memory.measure_saved_activations(model, tokens))
    run.inference_peak = _as_bytes(memory.measure_inference_peak(model, tokens))
    return run


def _as_bytes(result) -> int:
    """memory.measure_* may return a number of bytes or a report object/dict with a total."""
    if isinstance(result, (int, np.integer)):
        return int(result)
    for key in ("total", "bytes", "peak", "nbytes"):
        if isinstance(result, dict) and key in result:
            return int(result[key])
        if hasattr(result, key):
            return int(getattr(result, key))
    raise TypeError(f"cannot read a byte count from {result!r}")


def _warm_up(progress: Callable[[str], None]) -> float:
    """Run every kernel once on a tiny model of each family so Numba compiles (or loads from its cache) up front.
    If that takes more than a moment, kernels are being compiled: say so on stderr while it happens."""
    start = time.perf_counter()
    timer = threading.Timer(1.0, progress, args=("compiling kernels (first run only)...",))
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
            prefill(model, tokens, cache)
            decode(model, tokens[:, 0], cache)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    if seconds > 1.0:
        progress(f"kernels ready after {seconds:.1f} s")
    return seconds


# ---- the claims ----------------------------------------------------------------------------------------------

def run_checks(models: tuple[str, ...] = MODELS, progress: Callable[[str], None] | None = None) -> list[Claim]:
    """Run each model for real under the counters and return every claim, checked. `progress` (optional)
    receives one-line status messages (the CLI prints them to stderr)."""
    say = progress or (lambda msg: None)
    _warm_up(say)
    claims: list[Claim] = []
    runs = [_run(name, say) for name in models]
    for run in runs:
        claims += _parameter_claims(run)
    claims += _published_claims()
    for run in runs:
        claims += _exact_compute_claims(run)
    for run in runs:
        claims += _compute_claims(run)
    for run in runs:
        claims += _memory_claims(run)
    for run in runs:
        claims += _kv_claims(run)
    for run in runs:
        claims += _serving_claims(run)
    return claims


def _phase_costs(costs: dict) -> tuple[int, int, int, int]:
    """(flops, macs, bytes_read, bytes_written) summed over a {name: OpCost} dict."""
    vals = list(costs.values())
    return (sum(c.flops for c in vals), sum(c.macs for c in vals), sum(c.bytes_read for c in vals),
            sum(c.bytes_written for c in vals))


def _per_name(counter: Counter) -> dict[str, tuple[int, int, int, int]]:
    out: dict[str, list[int]] = {}
    for r in counter.records:
        acc = out.setdefault(r.name, [0, 0, 0, 0])
        acc[0] += r.flops
        acc[1] += r.macs
        acc[2] += r.bytes_read
        acc[3] += r.bytes_written
    return {k: tuple(v) for k, v in out.items()}


def _ops_matching(counter: Counter, costs: dict) -> tuple[int, int]:
    """(ops whose FLOPs, MACs and bytes all equal the formula's, ops in the formula or the count)."""
    counted = _per_name(counter)
    predicted = {name: (c.flops, c.macs, c.bytes_read, c.bytes_written) for name, c in costs.items()}
    names = set(counted) | set(predicted)
    return sum(counted.get(n) == predicted.get(n) for n in names), len(names)


def _parameter_claims(run: Run) -> list[Claim]:
    cfg, m = run.cfg, run.model
    name = cfg.name
    parts: dict[str, int] = {}
    for spec in m.table:
        parts[spec.part] = parts.get(spec.part, 0) + spec.size
    breakdown = F.param_breakdown(cfg)
    emb_formula = 100.0 * breakdown["embedding"] / breakdown["total"]
    emb_counted = 100.0 * parts.get("embedding", 0) / m.num_params()
    return [
        Claim("parameters", name, "parameters allocated = closed-form count", F.num_params(cfg), m.num_params(),
              source="allocated"),
        Claim("parameters", name, "parameters per part (embedding, attention, mlp, norm, lm_head) = formula",
              sum(breakdown[p] for p in parts), sum(parts.values()) if all(
                  parts[p] == breakdown[p] for p in parts) else -1, source="allocated",
              note="counted shows -1 if any part differs"),
        Claim("parameters", name, "share of parameters in the embeddings", emb_formula, emb_counted, unit="%",
              source="allocated"),
    ]


def _published_claims() -> list[Claim]:
    gemma = Config.preset("gemma-2b")
    return [
        Claim("parameters", "gemma-2b", "'Gemma 2B' = its non-embedding count (formula vs Gemma report)",
              F.non_embedding_params(gemma), PUBLISHED["gemma-2b non-embedding (Gemma report, Table 2)"],
              source="published"),
        Claim("parameters", "gemma-2b", "... but it holds 2.5B: 256k-token vocabulary (formula vs HF)",
              F.num_params(gemma), PUBLISHED["gemma-2b total (HF safetensors)"], source="published",
              note="the tied 256,000 x 2048 embedding adds 524,288,000 parameters, 20.9% of the total"),
    ]


def _exact_compute_claims(run: Run) -> list[Claim]:
    """Counted == formula, to the FLOP and the byte, for every phase of a training step and of inference."""
    cfg, name = run.cfg, run.cfg.name
    step = F.training_step(cfg, BATCH, SEQ, DTYPE)
    out: list[Claim] = []
    for ph in ("forward", "backward", "optimizer"):
        counter = run.train.filter(phase=ph)
        flops, _, br, bw = _phase_costs(step[ph])
        out.append(Claim("exact counts", name, f"training {ph}: FLOPs = formula", flops, counter.flops,
                         unit="FLOPs"))
        out.append(Claim("exact counts", name, f"training {ph}: bytes read + written = formula", br + bw,
                         counter.bytes, unit="B"))
        good, total = _ops_matching(counter, step[ph])
        out.append(Claim("exact counts", name, f"training {ph}: ops whose FLOPs, MACs, bytes all match",
                         total, good))
    fwd = F.forward_pass(cfg, BATCH, SEQ, DTYPE)
    flops, _, br, bw = _phase_costs(fwd)
    out.append(Claim("exact counts", name, "inference forward: FLOPs = formula", flops, run.infer.flops,
                     unit="FLOPs"))
    out.append(Claim("exact counts", name, "inference forward: bytes read + written = formula", br + bw,
                     run.infer.bytes, unit="B"))
    pre = F.prefill(cfg, BATCH, PROMPT, DTYPE)
    flops, _, br, bw = _phase_costs(pre)
    out.append(Claim("exact counts", name, f"prefill ({PROMPT} tokens): FLOPs = formula", flops, run.prefill.flops,
                     unit="FLOPs"))
    out.append(Claim("exact counts", name, f"prefill ({PROMPT} tokens): bytes = formula", br + bw,
                     run.prefill.bytes, unit="B"))
    for t in DECODE_AT:
        dec = F.decode_step(cfg, BATCH, t, DTYPE)
        flops, _, br, bw = _phase_costs(dec)
        out.append(Claim("exact counts", name, f"decode step at t={t}: FLOPs = formula", flops,
                         run.decode[t].flops, unit="FLOPs"))
        out.append(Claim("exact counts", name, f"decode step at t={t}: bytes = formula", br + bw,
                         run.decode[t].bytes, unit="B"))
    return out


def _compute_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    P = run.model.num_params()
    tokens = BATCH * SEQ
    fwd = run.infer.flops
    attention = 4 * cfg.n_layers * SEQ * cfg.q_dim * tokens   # QKᵀ and A·V over the full T × T, per token
    train_fb = run.train.filter(phase="forward").flops + run.train.filter(phase="backward").flops
    fm = run.train.filter(phase="forward", op="matmul").macs + run.train.filter(phase="forward", op="attention").macs
    bm = run.train.filter(phase="backward", op="matmul").macs + run.train.filter(phase="backward",
                                                                                 op="attention").macs
    return [
        Claim("compute", name, "inference forward FLOPs ≈ 2·P·tokens", 2 * P * tokens, fwd, kind="approx",
              tolerance=0.10, unit="FLOPs",
              note="2·P·tokens leaves out attention's T-dependent term; it also charges the embedding lookups "
                   "(no FLOPs) as matmuls"),
        Claim("compute", name, "  ≈ 2·P·tokens + 4·L·T·(NH·HS)·tokens (attention scores + mix)",
              2 * P * tokens + attention, fwd, kind="approx", tolerance=0.05, unit="FLOPs",
              note="what is left: norms, softmax, activations (O(d) per token vs O(d²)), minus the lookups"),
        Claim("compute", name, "backward matmul MACs = 2 × forward (dX and dW)", 2 * fm, bm, unit="MACs"),
        Claim("compute", name, "training (fwd + bwd) FLOPs ≈ 3 × inference forward", 3 * fwd, train_fb,
              kind="approx", tolerance=0.02, unit="FLOPs",
              note="exact for the matmuls; the loss and the non-matmul ops' backward are not exactly 2x"),
        Claim("compute", name, "training (fwd + bwd) FLOPs ≈ 6·P·tokens", 6 * P * tokens, train_fb,
              kind="approx", tolerance=0.10, unit="FLOPs", note="the attention term again, 3 x 4·L·T·d per token"),
    ]


def _memory_claims(run: Run) -> list[Claim]:
    cfg, name, m, opt = run.cfg, run.cfg.name, run.model, run.opt
    out = [
        Claim("memory", name, "Adam's m and v = 2 extra copies of the weights (bytes)",
              2 * F.param_bytes(cfg, DTYPE), opt.m.nbytes + opt.v.nbytes, unit="B", source="allocated"),
        Claim("memory", name, "  = formula for Adam's state", F.adam_state_bytes(cfg, DTYPE),
              opt.m.nbytes + opt.v.nbytes, unit="B", source="allocated"),
        Claim("memory", name, "optimizer step reads and writes m, v (counted optimizer_state bytes)",
              2 * 2 * F.param_bytes(cfg, DTYPE),
              sum(run.train.filter(phase="optimizer").bytes_by_category(d).get("optimizer_state", 0)
                  for d in ("read", "written")), unit="B"),
    ]
    if run.saved_activations is not None:
        saved = F.saved_activation_bytes(cfg, BATCH, SEQ, DTYPE)
        out.append(Claim("memory", name, f"training keeps every activation (B={BATCH}, T={SEQ}; measured)",
                         saved, run.saved_activations, unit="B", source="measured"))
    if run.inference_peak is not None:
        mem = F.inference_memory(cfg, BATCH, SEQ, DTYPE)
        peak = mem["activations"] if isinstance(mem, dict) else mem
        out.append(Claim("memory", name, "inference keeps only about the largest activation (measured)",
                         peak, run.inference_peak, unit="B", source="measured"))
    return out


def _kv_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    B, S, item = run.cache.batch, run.cache.max_len, np.dtype(DTYPE).itemsize
    by_hand = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * S * B * item
    out = [
        Claim("kv cache", name, f"cache bytes = 2·L·KV·HS·S·B·bytes (S={S}, B={B})", by_hand, run.cache.nbytes,
              unit="B", source="allocated"),
        Claim("kv cache", name, "  = formula kv_cache_bytes", F.kv_cache_bytes(cfg, B, S, DTYPE), run.cache.nbytes,
              unit="B", source="allocated"),
        Claim("kv cache", name, "kv_cache bytes written (prefill + decode) = per-token formula x tokens",
              F.kv_bytes_per_token(cfg, DTYPE) * B * run.decode_tokens, run.kv_written, unit="B"),
    ]
    for t in DECODE_AT:
        cached = run.decode[t].flops
        again = run.recompute[t].flops
        predicted = _total_flops(F.recompute_step(cfg, BATCH, t, DTYPE)) / _total_flops(F.decode_step(cfg, BATCH, t,
                                                                                                     DTYPE))
        out.append(Claim("kv cache", name, f"recompute / cached decode FLOPs at t={t} (O(t²) vs O(t))",
                         round(predicted, 6), round(again / cached, 6), unit="x"))
    return out


def _total_flops(costs: dict) -> int:
    return sum(c.flops for c in costs.values())


def _weight_bytes_read(counter: Counter) -> int:
    return sum(n for r in counter.records for cat, n in r.reads if cat == "weights")


def _serving_claims(run: Run) -> list[Claim]:
    cfg, name = run.cfg, run.cfg.name
    out = []
    pre = run.prefill.filter(op="matmul")
    pre_formula = {k: c for k, c in F.prefill(cfg, BATCH, PROMPT, DTYPE).items() if c.op == "matmul"}
    _, _, br, bw = _phase_costs(pre_formula)
    out.append(Claim("serving", name, f"prefill matmuls: FLOP/B (B={BATCH} x {PROMPT} tokens, matrix-matrix)",
                     round(_total_flops(pre_formula) / (br + bw), 6), round(pre.totals().intensity, 6),
                     unit="FLOP/B"))
    for b in DECODE_BATCHES:
        mm = run.decode_by_batch[b].filter(op="matmul")
        out.append(Claim("serving", name, f"decode matmuls, batch {b}: FLOPs per weight byte ≈ B/2 in fp32",
                         b / 2, mm.flops / _weight_bytes_read(mm), kind="approx", tolerance=0.01,
                         unit="FLOP/B", note="2 FLOPs per weight per sequence / 4 bytes; biases add B FLOPs per "
                                             "output for 4 bytes"))
    b = max(DECODE_BATCHES)
    dec16 = {k: c for k, c in F.decode_step(cfg, b, PROMPT, "bfloat16").items() if c.op == "matmul"}
    w16 = sum(dict(c.reads).get("weights", 0) if isinstance(c.reads, (dict, tuple, list)) else 0
              for c in dec16.values())
    if w16:
        out.append(Claim("serving", name, f"  in 16-bit (formula only), batch {b}: ≈ B FLOP/B", b,
                         _total_flops(dec16) / w16, kind="approx", tolerance=0.01, unit="FLOP/B", source="formula"))
    return out


# ---- presentation --------------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.1f}%"


def _signed_pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else str(x)
    return x


def _fmt(value: float, unit: str) -> str:
    if unit in ("x", "FLOP/B"):
        return f"{value:,.3f}".rstrip("0").rstrip(".") + ("x" if unit == "x" else "")
    if unit == "%":
        return f"{value:.3f}%"
    if float(value).is_integer():
        return f"{int(value):,}" + (" B" if unit == "B" else "")
    return f"{value:,.4g}"


SECTIONS = {
    "parameters": "PARAMETERS: where they live",
    "exact counts": "EXACT COUNTS: the formulas predict every FLOP and byte the code moves",
    "compute": "COMPUTE: the rules of thumb (2 FLOPs per parameter per token; training = 3 x inference)",
    "memory": "MEMORY: training holds gradients, Adam's two copies and every activation",
    "kv cache": "KV CACHE: memory traded for compute",
    "serving": "SERVING: prefill is matrix-matrix, decode is matrix-vector",
}


def format_table(claims: list[Claim], header: str = "") -> str:
    w_claim = max(len(c.claim) for c in claims)
    w_model = max(len(c.model) for c in claims)
    w_num = max(max(len(_fmt(c.expected, c.unit)), len(_fmt(c.counted, c.unit))) for c in claims)
    lines = [header] if header else []
    section = None
    for c in claims:
        if c.section != section:
            section = c.section
            lines.append("")
            lines.append(SECTIONS.get(section, section.upper()))
            lines.append(f"  {'claim':<{w_claim}}  {'model':<{w_model}}  {'formula':>{w_num}}  "
                         f"{'counted':>{w_num}}  verdict")
        mark = "ok " if c.ok else "XX "
        src = "" if c.source == "counted" else f" ({c.source})"
        lines.append(f"{mark}{c.claim:<{w_claim}}  {c.model:<{w_model}}  {_fmt(c.expected, c.unit):>{w_num}}  "
                     f"{_fmt(c.counted, c.unit):>{w_num}}  {c.verdict}{src}")
    return "\n".join(lines)


def add_arguments_main(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the claims as JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    quiet = getattr(args, "quiet", False)
    progress = None if quiet else (lambda msg: print(f"minitx check: {msg}", file=sys.stderr, flush=True))
    claims = run_checks(progress=progress)
    seconds = time.perf_counter() - start
    failed = [c for c in claims if not c.ok]
    if getattr(args, "json", False):
        print(json.dumps({"models": list(MODELS), "dtype": DTYPE, "batch": BATCH, "seq": SEQ, "prompt": PROMPT,
                          "decode_at": list(DECODE_AT), "seconds": round(seconds, 3),
                          "passed": not failed, "claims": [c.to_dict() for c in claims]}, indent=1))
    else:
        print(format_table(claims, _header()))
        exact = [c for c in claims if c.kind == "exact"]
        print()
        print(f"{len(exact) - sum(not c.ok for c in exact)}/{len(exact)} exact claims match, "
              f"{len(claims) - len(exact) - sum(not c.ok for c in claims if c.kind != 'exact')}/"
              f"{len(claims) - len(exact)} approximations within their tolerance ({seconds:.1f} s)")
    return 1 if failed else 0


def _header() -> str:
    lines = ["minitx check: the arithmetic of the talk, formula (minitx.formulas) vs execution (minitx.count)"]
    for name in MODELS:
        cfg = Config.preset(name)
        attn = "multi-head" if cfg.n_kv_heads == cfg.n_heads else f"GQA {cfg.n_heads} q / {cfg.n_kv_heads} kv heads"
        lines.append(f"  {name}: L={cfg.n_layers} d={cfg.d_model} V={cfg.vocab_size} {cfg.norm} {cfg.position} "
                     f"{cfg.mlp} MLP, {attn}, {'tied' if cfg.tie_embeddings else 'untied'} head")
    lines.append(f"  training step and inference forward: B={BATCH} x T={SEQ}; prefill {PROMPT} tokens then cached "
                 f"decode to t={max(DECODE_AT)}; {DTYPE}; 2 FLOPs per multiply-add")
    return "\n".join(lines)
