"""Predicted vs measured, on the machine in front of you: time prefill and decode of a small model on this CPU
and set it beside the roofline of the measured machine (`minitx.hardware.measure()`), per phase and per op
kind. The gap is a lesson, not an error: per-op overheads and BLAS's efficiency on small matrices.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from .. import checks, dtypes
from ..accounting.counting import Counter, count
from ..core.config import Config
from ..core.kv_cache import KVCache
from ..core.model import Transformer
from ..serving.hardware import Hardware, get as get_hardware
from ..serving.roofline import analyze
from ..units import finite_or_none, fixed
from .timing import Timing, noise_warning

# ==============================================================================================================
# Predicted vs measured, on this machine

class _TimedRecords(list):
    """A Counter's record list that also notes when each record arrives. An op records its cost when it has
    finished, so the time between two records is the later op's run time (plus the Python between the two
    calls: reshapes, the record itself, a few microseconds). `mark()` restarts the clock before a phase."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def mark(self) -> None:
        self._last = time.perf_counter()

    def append(self, rec) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now
        super().append(rec)


@dataclass(frozen=True)
class Compared:
    """Measured against predicted for one group of work. factor = measured / predicted (how many times slower
    than the roofline: 1 is the roofline itself); efficiency = predicted / measured (fraction of roofline).
    `measured` is the median of the runs in `timing` (minitx.measure.timing)."""
    key: str
    measured: float
    predicted: float
    flops: int = 0
    bytes: int = 0
    bound: str = ""
    timing: Timing | None = None

    @property
    def factor(self) -> float:
        return self.measured / self.predicted if self.predicted else math.inf

    @property
    def efficiency(self) -> float:
        return self.predicted / self.measured if self.measured else math.inf

    def to_dict(self) -> dict:
        return {**asdict(self), "timing": self.timing.to_dict() if self.timing else None,
                "factor": finite_or_none(self.factor), "efficiency": finite_or_none(self.efficiency)}


@dataclass(frozen=True)
class Measurement:
    """A model run for real on this machine, next to the roofline of the measured machine.

    phases     {"prefill": Compared (one call), "decode": Compared (mean step)}: whole-phase wall-clock time of
               uncounted runs, the median of `repeats` (its spread in .timing), against the roofline of the
               run's own counted ops
    ops        {(phase, op kind): Compared}: time attributed per op from a counted run (see _TimedRecords),
               per call of the phase (decode: per step)
    overhead   counted run's phase time / uncounted one, per phase: what the counters and timestamps cost
    """
    model: str
    batch: int
    prompt: int
    steps: int
    hardware: Hardware
    dtype: str
    phases: dict[str, Compared]
    ops: dict[tuple[str, str], Compared]
    overhead: dict[str, float] = field(default_factory=dict)

    @property
    def warning(self) -> str | None:
        """A sentence when the whole-phase timings were too noisy to conclude from, else None."""
        return noise_warning([c.timing for c in self.phases.values() if c.timing], "the phase timings")

    def table(self) -> str:
        """Per phase and per op kind, measured against the roofline; times in µs with fixed decimals."""
        hw = self.hardware
        head = (f"{'phase':<9} {'op':<12} {'measured µs':>13} {'roofline µs':>13} {'factor':>10} "
                f"{'efficiency':>10} {'bound':>8}")
        lines = [f"{self.model} B={self.batch} prompt={self.prompt}, {self.steps} decode steps, on {hw.name} "
                 f"(peak {hw.peak(self.dtype) / 1e9:,.1f} GFLOP/s {self.dtype}, {hw.bandwidth / 1e9:,.1f} GB/s)",
                 "(µs = 1e-6 s; factor = measured / roofline; efficiency = roofline / measured; decode per step)",
                 head, "-" * len(head)]

        def row(ph: str, op: str, c: Compared) -> str:
            return (f"{ph:<9} {op:<12} {fixed(c.measured * 1e6, 2):>13} {fixed(c.predicted * 1e6, 2):>13} "
                    f"{fixed(c.factor, 2):>10} {fixed(100 * c.efficiency, 2) + '%':>10} {c.bound:>8}")

        for ph, c in self.phases.items():
            for (p, op), o in self.ops.items():
                if p == ph:
                    lines.append(row(ph, op, o))
            lines.append(row(ph, "(whole)", c))
        lines.append("(measured: median of the runs; whole phases: " + "; ".join(
            f"{ph} spread {c.timing.spread:.0%}" for ph, c in self.phases.items() if c.timing) + ")")
        if self.warning:
            lines.append("WARNING: " + self.warning)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "prompt": self.prompt, "steps": self.steps,
                "hardware": self.hardware.to_dict(), "dtype": self.dtype,
                "phases": {k: v.to_dict() for k, v in self.phases.items()},
                "ops": [{"phase": p, "op": o, **c.to_dict()} for (p, o), c in self.ops.items()],
                "overhead": self.overhead}


def _model(model_or_cfg: Any, seed: int):
    if isinstance(model_or_cfg, str):
        model_or_cfg = Config.preset(model_or_cfg)
    if isinstance(model_or_cfg, Config):
        return Transformer(model_or_cfg, seed=seed)
    if isinstance(model_or_cfg, Transformer):
        return model_or_cfg
    raise TypeError(f"expected a Transformer, a Config or a preset name, got {type(model_or_cfg).__name__}")


def _run_phases(model, tokens: np.ndarray, cache, steps: int, stamps: _TimedRecords | None = None):
    """(prefill seconds, [decode step seconds]) for one prefill and `steps` decode steps."""
    cache.reset()
    next_ids = tokens[:, -1]
    if stamps is not None:
        stamps.mark()
    start = time.perf_counter()
    model.prefill(tokens, cache)
    t_prefill = time.perf_counter() - start
    t_steps = []
    for _ in range(steps):
        if stamps is not None:
            stamps.mark()
        start = time.perf_counter()
        model.decode(next_ids, cache)
        t_steps.append(time.perf_counter() - start)
    return t_prefill, t_steps


def measure_inference(model: Any = "reference", hardware: "str | Hardware | None" = None, batch: int = 1,
                      prompt: int = 32, steps: int = 16, repeats: int = 5, seed: int = 0) -> Measurement:
    """Time a prefill of `batch` prompts of `prompt` tokens and `steps` decode steps of a real model on this
    CPU; predict both from the roofline of the measured machine and the ops' own counts.

    What is timed, and how:
      * whole phases: `repeats` uncounted runs after a warm-up (JIT compile, first touch); the median prefill
        and the median of the runs' mean decode steps are kept, with their spread (minitx.measure.timing: the
        median is what a re-run reproduces; `Measurement.warning` says when the runs disagree too much);
      * per op kind: one more run inside a counter whose record list timestamps each record (`_TimedRecords`).
        Each op's time is the gap since the previous record; the run with the counters is a little slower,
        and `overhead` says by how much.
    The prediction uses the counts of that counted run (what really ran) at the measured peak of the model's
    dtype (fp32 matmuls through NumPy's BLAS) and the measured copy bandwidth.

    Threads: this function leaves BLAS's thread count as it finds it. For steady numbers on a shared machine,
    pin BLAS to one thread for the measurement and for `hardware.measure()` alike: start Python with
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 (the tests do), or wrap both calls in
    threadpoolctl's `with threadpool_limits(1):`. A multi-threaded matmul that waits for a busy core can run
    100x slower than its roofline.
    """
    m = _model(model, seed)
    hw = get_hardware("this-machine" if hardware is None else hardware)
    key = dtypes.short(m.dtype.name)
    B = checks.integer("batch", batch)
    T = checks.integer("prompt", prompt)
    n = checks.integer("steps", steps)
    reps = checks.integer("repeats", repeats)
    tokens = np.random.default_rng(seed).integers(0, m.cfg.vocab_size, (B, T))
    cache = KVCache(m.cfg, B, T + n, m.dtype)
    _run_phases(m, tokens, cache, min(n, 2))                          # warm-up
    runs = [_run_phases(m, tokens, cache, n) for _ in range(reps)]
    prefill_t = Timing(tuple(t_pre for t_pre, _ in runs))
    step_t = Timing(tuple(float(np.mean(t_steps)) for _, t_steps in runs))

    # Per op kind: `repeats` counted runs with timestamps; each (phase, op kind) keeps the median of its runs.
    op_runs: dict[tuple[str, str], list[float]] = {}
    counted_pre, counted_step = [], []
    for _ in range(reps):
        stamps = _TimedRecords()
        counter = Counter()
        counter.records = stamps       # the counter appends to the timestamping list
        with counter:
            t_pre_counted, t_steps_counted = _run_phases(m, tokens, cache, n, stamps)
        counted_pre.append(t_pre_counted)
        counted_step.append(float(np.mean(t_steps_counted)))
        run: dict[tuple[str, str], float] = {}
        for rec, sec in zip(stamps, stamps.seconds):
            run[(rec.phase, rec.op)] = run.get((rec.phase, rec.op), 0.0) + sec
        for k, sec in run.items():
            op_runs.setdefault(k, []).append(sec)
    rl = analyze(list(stamps), hw, key)          # the counts are the same in every run
    per_call = {"prefill": 1, "decode": n}
    phases = {}
    for ph, g in rl.phases().items():
        d = per_call[ph]
        t = prefill_t if ph == "prefill" else step_t
        phases[ph] = Compared(ph, t.median, g.time / d, g.flops // d, g.bytes // d, g.bound, t)
    ops: dict[tuple[str, str], Compared] = {}
    for ph in phases:
        d = per_call[ph]
        for op, g in rl.by_op(ph).items():
            t = Timing(tuple(op_runs[(ph, op)])).scaled(d)
            ops[(ph, op)] = Compared(op, t.median, g.time / d, g.flops // d, g.bytes // d, g.bound, t)
    overhead = {"prefill": float(np.median(counted_pre)) / prefill_t.median,
                "decode": float(np.median(counted_step)) / step_t.median}
    return Measurement(m.cfg.name, B, T, n, hw, key, phases, ops, overhead)


@dataclass(frozen=True)
class MeasuredPoint:
    """One batch size of a decode sweep on this machine: measured (median, spread in .timing) and predicted mean
    step time."""
    batch: int
    measured: float
    predicted: float
    intensity: float
    bound: str
    timing: Timing | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.measured

    @property
    def predicted_tokens_per_s(self) -> float:
        return self.batch / self.predicted

    @property
    def factor(self) -> float:
        return self.measured / self.predicted

    def to_dict(self) -> dict:
        return {**asdict(self), "timing": self.timing.to_dict() if self.timing else None,
                "tokens_per_s": self.tokens_per_s,
                "predicted_tokens_per_s": self.predicted_tokens_per_s, "factor": self.factor}


def measure_decode_sweep(model: Any = "small-gpt2", hardware: "str | Hardware | None" = None,
                         batches: Iterable[int] = (1, 4, 16, 64), prompt: int = 16, steps: int = 8,
                         repeats: int = 5, seed: int = 0) -> list[MeasuredPoint]:
    """Decode step time on this CPU for each batch size (the median of `repeats` runs' mean step, after a
    warm-up; `sweep_warning(points)` says when they were too noisy to conclude from),
    next to the roofline of the measured machine, from the counted ops of each batch's own run.

    Threads: as for `measure_inference`, BLAS's thread count is left as it is; pin it to one thread
    (OPENBLAS_NUM_THREADS=1 before Python starts, or threadpoolctl's `threadpool_limits(1)` around the call)
    for timings that a busy core does not distort. Measured throughput is a measurement: one slow run can put
    a batch below its neighbour."""
    m = _model(model, seed)
    hw = get_hardware("this-machine" if hardware is None else hardware)
    key = dtypes.short(m.dtype.name)
    n = checks.integer("steps", steps)
    points = []
    for B in batches:
        B = checks.integer("batch", B)
        tokens = np.random.default_rng(seed).integers(0, m.cfg.vocab_size, (B, prompt))
        cache = KVCache(m.cfg, B, prompt + n, m.dtype)
        _run_phases(m, tokens, cache, min(n, 2))
        reps = checks.integer("repeats", repeats)
        t = Timing(tuple(float(np.mean(_run_phases(m, tokens, cache, n)[1])) for _ in range(reps)))
        with count() as c:
            _run_phases(m, tokens, cache, n)
        g = analyze(c.filter(phase="decode"), hw, key).total()
        points.append(MeasuredPoint(B, t.median, g.time / n, g.intensity, g.bound, t))
    return points


def sweep_warning(points: Iterable[MeasuredPoint]) -> str | None:
    """A sentence when any batch's timings were too noisy to conclude from, else None."""
    return noise_warning([p.timing for p in points if p.timing], "this sweep")
