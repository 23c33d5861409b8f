"""Run your own experiment (slide 17): this machine's decode, measured, for the exercise that predicts it.

The exercise (`decode_tokens_per_s` in lessons/exercises/ex07_experiment.py) asks for the tokens per second a
float32 decode of a small model reaches here, at batch sizes B = 1 ... 64. The truth is a measurement: for each
model and batch, `minitx.measured.measure_decode_sweep` times `steps` decode steps of B sequences with `context`
tokens cached, `repeats` times after a warm-up, and keeps the median step (minitx.timed's rules: the median is
what a second run reproduces; the spread says whether the runs agreed). The batch's tokens per second is
B / that step. A prediction passes within a factor of 2 either way.

Why the student is given two measured steps. The roofline alone, from `minitx hw --measure`'s peak and
bandwidth, misses this machine by 3-8× for these models: a decode step is ~60 op calls, each a Python call and
a dispatch of a few microseconds, a fixed overhead the roofline knows nothing about; and the per-sequence work
runs below the measured peak (a matmul of a few rows reaches a fraction of what a large square one does; and
one row runs as a matrix-vector product while two or more go through BLAS's general kernel, which first copies
the weights into its packed layout: on a d_model = 1024 model we tried, the step nearly tripled from B = 1 to
B = 2). Measured here (2 cores, OPENBLAS_NUM_THREADS=1): small-gpt2's step is 0.78 ms at B = 1 against a
roofline of 0.14 ms, 3.1 ms at B = 64 against 1.0 ms; the roofline's own B-scaling (max(overhead, roofline(B)),
or overhead + the roofline's growth) leaves it 2-3× too fast at B = 64. What does hold is the *shape* the
roofline predicts: a fixed cost per step, shared by the batch like the weight reads, plus a cost per sequence
that grows with B. So the grader measures the step at
B = 1 and at B = ANCHOR and hands both to the student, who must turn them into the whole curve: a student who
reasons "fixed overhead + B × per-sequence cost" passes; one who takes the step as fixed, forgets that a step
makes B tokens, or trusts the bare roofline, fails, and the diagnosis says which.

Noise. The measurement runs in a spawned process whose BLAS is pinned to one thread (OPENBLAS_NUM_THREADS=1 and
its cousins, set before NumPy loads): on a shared machine a multi-threaded matmul that waits for a busy core can
run 100× slower, run after run (this happened while this exercise was written: a B = 64 step at 294 ms against
3 ms, with a spread of 6%, so no repeat would have caught it). A batch whose runs spread by more than
minitx.timed's NOISY_SPREAD is measured again, up to `attempts` times, and the least noisy run is kept. A case
that still fails on a noisy measurement is not held against the student: the verdict says the machine was too
noisy to conclude (see grade.grade_answers).

Settings live in SETTINGS (the tests swap in one model and three batches to stay fast). Every measurement is
kept for the life of the process: a class is graded against one set of runs, and every call of
`Exercise.cases()` sees the same measured anchors.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

from ...core.config import Config
from ...measure.inference import MeasuredPoint, measure_decode_sweep
from ...measure.machine import measure as measure_machine
from ...serving.hardware import Hardware
from .grid import Case

ANCHOR = 16                    # the second measured batch handed to the student
MEASURED = "measured on this machine"
NAMES = ("cfg", "batch", "step_s_at_1", f"step_s_at_{ANCHOR}")


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = ("small-gpt2", "small-llama")
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)     # graded; 1 and ANCHOR are measured whatever
    context: int = 16          # tokens cached per sequence before the timed steps
    steps: int = 8             # decode steps per timed run
    repeats: int = 5           # timed runs per batch (their median is kept)
    attempts: int = 3          # measurements of a noisy batch before its least noisy one is kept
    machine_seconds: float = 2.0   # the roofline's peak and bandwidth: `minitx hw --measure`'s budget


SETTINGS = Settings()
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
MEASURE_TIMEOUT = 600.0        # seconds for one model's measurement, whatever happens to the child
_sweeps: dict[tuple, tuple[Hardware, dict[int, MeasuredPoint]]] = {}


def measure(cfg: Config, batches: tuple[int, ...], s: Settings, machine: Hardware) -> dict[int, MeasuredPoint]:
    """{batch: MeasuredPoint}: the sweep on this machine, noisy batches measured again (in this process), against
    the roofline of `machine`."""
    points = {p.batch: p for p in measure_decode_sweep(cfg, machine, batches, prompt=s.context, steps=s.steps,
                                                       repeats=s.repeats)}
    for _ in range(s.attempts - 1):
        noisy = [b for b, p in points.items() if p.timing.noisy]
        if not noisy:
            break
        for p in measure_decode_sweep(cfg, machine, noisy, prompt=s.context, steps=s.steps, repeats=s.repeats):
            if p.timing.spread < points[p.batch].timing.spread:
                points[p.batch] = p
    return points


def _measure_all(cfgs: list[Config], batches: tuple[int, ...], s: Settings):
    figures = measure_machine(seconds_budget=s.machine_seconds)      # with BLAS as pinned as the decode
    machine = Hardware(**figures)
    return figures, [measure(cfg, batches, s, machine) for cfg in cfgs]   # plain figures travel back


def measure_pinned(cfgs: list[Config], batches: tuple[int, ...], s: Settings):
    """(this machine's Hardware, [{batch: MeasuredPoint} per model]): `measure` in one spawned process whose BLAS
    runs on one thread (the variables are read when NumPy loads, so they are set in this process's environment
    just while the child starts, then put back)."""
    saved = {name: os.environ.get(name) for name in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    try:
        pool = multiprocessing.get_context("spawn").Pool(1)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    with pool:
        try:
            return pool.apply_async(_measure_all, (cfgs, batches, s)).get(MEASURE_TIMEOUT * len(cfgs))
        except Exception as error:         # a child that died, ran out of time or memory: the machine's fault,
            why = f"{type(error).__name__}: {str(error)[:200]}"          # one line, never a traceback
            raise OSError(f"could not measure this machine's decode ({why}); grade decode_tokens_per_s "
                          "again") from error


def sweep(cfg: Config, settings: Settings | None = None) -> dict[int, MeasuredPoint]:
    """{batch: MeasuredPoint} for the model, measured once per process (see the module docstring); the models
    of the settings not measured yet are measured together, one spawned process for all."""
    s = settings or SETTINGS
    batches = tuple(sorted(set(s.batches) | {1, ANCHOR}))
    return _measured(cfg, settings)[1]


def machine(cfg: Config, settings: Settings | None = None) -> Hardware:
    """The machine figures (BLAS on one thread) the model's sweep was set against: its roofline's peak and
    bandwidth, what `minitx hw --measure` reports."""
    return _measured(cfg, settings)[0]


def _measured(cfg: Config, settings: Settings | None) -> tuple[Hardware, dict[int, MeasuredPoint]]:
    s = settings or SETTINGS
    batches = tuple(sorted(set(s.batches) | {1, ANCHOR}))
    if (cfg, batches, s) not in _sweeps:
        todo = list(dict.fromkeys([cfg] + [Config.preset(m) for m in s.models]))
        todo = [c for c in todo if (c, batches, s) not in _sweeps]
        figures, sweeps = measure_pinned(todo, batches, s)
        hw = Hardware(**figures)
        for c, points in zip(todo, sweeps):
            _sweeps[(c, batches, s)] = (hw, points)
    return _sweeps[(cfg, batches, s)]


def cases() -> list[Case]:
    """One case per model and graded batch: (cfg, batch, the measured step at B = 1, at B = ANCHOR)."""
    out = []
    for name in SETTINGS.models:
        cfg = Config.preset(name)
        points = sweep(cfg)
        anchors = (points[1].measured, points[ANCHOR].measured)
        out += [Case(cfg, (cfg, b) + anchors, NAMES, True, frozenset({MEASURED})) for b in SETTINGS.batches]
    return out


def point(case: Case) -> MeasuredPoint:
    return sweep(case.cfg)[case.arg("batch")]


def tokens_per_s(case: Case) -> float:
    """The truth: the whole batch's tokens per second, B / the median measured step."""
    return point(case).tokens_per_s


def roofline_tokens_per_s(case: Case) -> float:
    """B / the roofline's step: the ops the same run counted, on this machine's measured peak and bandwidth."""
    return point(case).predicted_tokens_per_s


def noise(case: Case) -> str | None:
    """Why this case's measurement cannot fail anyone, or None when the runs agreed."""
    t = point(case).timing
    if not t.noisy:
        return None
    return (f"{case.cfg.name} at B={case.arg('batch')}: the runs spread by {t.spread:.0%} of their median "
            f"after {SETTINGS.attempts} tries")


def report(results) -> list[str]:
    """The experiment's table: every case, measured against the prediction and the bare roofline."""
    lines = []
    for hw in dict.fromkeys(machine(r.case.cfg) for r in results):
        lines.append(f"this machine, BLAS on one thread: fp32 peak {hw.peak('fp32') / 1e9:,.1f} GFLOP/s, "
                     f"bandwidth {hw.bandwidth / 1e9:,.1f} GB/s (the roofline column)")
    lines.append("model        B  measured tok/s (step, spread)      yours tok/s  ÷ measured  roofline tok/s")
    for r in results:
        p = point(r.case)
        got = r.answer.value if r.answer.status == "value" and isinstance(r.answer.value, (int, float)) else None
        error = f"{got / p.tokens_per_s:.2f}×" if got and p.tokens_per_s else "-"
        yours = f"{got:,.0f}" if isinstance(got, (int, float)) else r.answer.status
        lines.append(f"{r.case.cfg.name:<11} {p.batch:>3}  {p.tokens_per_s:>13,.0f} ({p.measured * 1e3:.3f} ms, "
                     f"{p.timing.spread:3.0%}){'':>3} {yours:>12}  {error:>10}  {p.predicted_tokens_per_s:>14,.0f}")
    return lines
