"""Timing that holds still: warm up, repeat, keep the median, report the spread, and say when the machine was too
noisy to conclude anything.

    t = timed(lambda: model.decode(ids, cache), repeats=7, warmup=2)
    t.median, t.spread, t.noisy          seconds; (q3 − q1) / median; spread > NOISY_SPREAD
    print(t)                             "3.212 ms (median of 7, spread 4%)"

Why the median. One timing on a shared machine is a sample of the work plus whatever else the cores were doing:
a page fault, another process, a thread that waited for a busy core. Those only ever add time, and they come in
bursts, so a single run can be many times the typical one (a first run of the lessons once put a prefill at 149×
its roofline, and 1.67× on a re-run). The median of several runs ignores a minority of bad ones; the best run
(`best`) is the right figure for a ceiling — `machine.measure` keeps the best matmul and copy for the machine's
peak — but for "how long does this take here" the median is what a second run will reproduce.

Why a spread. The interquartile range over the median says how far apart the middle half of the runs were. When
it passes NOISY_SPREAD the runs disagree too much for a factor or a ratio between two timings to mean anything;
`noisy` says so, and the lessons print a warning instead of a conclusion.

Warm-up. The first call of a Numba kernel compiles it (or loads it from the cache), and the first touch of a new
array faults its pages in: neither is the work being measured, so `warmup` calls run untimed first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .. import checks

NOISY_SPREAD = 0.25          # interquartile range / median above which a timing is too noisy to conclude


@dataclass(frozen=True)
class Timing:
    """Seconds of `len(samples)` timed runs of the same work."""
    samples: tuple[float, ...]

    def __post_init__(self):
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def best(self) -> float:
        return float(min(self.samples))

    @property
    def spread(self) -> float:
        """(third quartile − first quartile) / median: 0 when the middle half of the runs agree exactly."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float((q3 - q1) / self.median) if self.median > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    def scaled(self, factor: float) -> "Timing":
        """The same runs, each divided by `factor` (a phase of n steps -> per step)."""
        return Timing(tuple(s / factor for s in self.samples))

    def __str__(self) -> str:
        return f"{_seconds(self.median)} (median of {len(self.samples)}, spread {self.spread:.0%})"

    def to_dict(self) -> dict:
        return {"median": self.median, "best": self.best, "spread": self.spread, "noisy": self.noisy,
                "samples": list(self.samples)}


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Call `fn()` `warmup` times untimed, then `repeats` times, each timed alone with time.perf_counter."""
    if not callable(fn):
        raise TypeError(f"fn must be a function of no arguments (timed(lambda: work())), got {type(fn).__name__}")
    repeats = checks.integer("repeats", repeats)
    warmup = checks.integer("warmup", warmup, 0)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(tuple(samples))


def noise_warning(timings: Iterable[Timing], what: str = "these timings") -> str | None:
    """A sentence for the reader when any of `timings` is noisy, else None."""
    worst = max(timings, key=lambda t: t.spread, default=None)
    if worst is None or not worst.noisy:
        return None
    return (f"this machine was too noisy to conclude from {what}: the middle half of the runs spread by "
            f"{worst.spread:.0%} of the median (over {NOISY_SPREAD:.0%}). Close other programs, or pin BLAS to one "
            "thread (OPENBLAS_NUM_THREADS=1), and run again.")


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} µs"
