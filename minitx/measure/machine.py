"""This machine, measured: the peak matmul FLOP/s NumPy's BLAS reaches, and the bandwidth a plain array copy
reaches. The figures a roofline of this CPU needs (`minitx.hardware.get("this-machine")` turns them into a
Hardware; `minitx hw --measure` prints them).

Both are best-of-several runs, not means: a roofline is a best case, so its ceiling is the best run. They are
what NumPy reaches with all cores, not a datasheet peak: a fair ceiling for minitx's own kernels here.
"""
from __future__ import annotations

import math
import os
import platform
import time

import numpy as np

from .. import checks

GB = 1e9
_MAX_REPEATS = 5             # best of up to this many timed runs per size
_FALLBACK_MEMORY = 8 * GB    # used, and said so in notes, where os.sysconf cannot tell us
_measured_cache: dict | None = None


def _best_matmul_flops(dtype: type, sizes: tuple[int, ...], seconds: float) -> tuple[float, int]:
    """Best FLOP/s of n x n @ n x n over `sizes` (2·n³ FLOPs each) and the size that reached it.

    Small matmuls do not saturate the cores, so sizes go up until the next one would overrun the time.
    Keeping the best run (not the mean) estimates the peak, which is what a roofline needs.
    """
    rng = np.random.default_rng(0)
    deadline = time.perf_counter() + seconds
    best_flops, best_n = 0.0, 0
    ordered = sorted(sizes)
    for n, next_n in zip(ordered, ordered[1:] + [None]):
        a = rng.random((n, n), dtype=dtype)
        b = rng.random((n, n), dtype=dtype)
        out = np.empty((n, n), dtype=dtype)
        np.matmul(a, b, out=out)  # warm-up: thread start-up and first touch of `out` are not the matmul
        fastest = math.inf
        for _ in range(_MAX_REPEATS):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            fastest = min(fastest, time.perf_counter() - start)
            if time.perf_counter() > deadline:
                break
        if 2 * n**3 / fastest > best_flops:
            best_flops, best_n = 2 * n**3 / fastest, n
        # Work grows as n³; stop if a warm-up plus one run of the next size would not fit.
        if next_n is None or time.perf_counter() + 2 * fastest * (next_n / n) ** 3 > deadline:
            break
    return best_flops, best_n


def _best_copy_bandwidth(nbytes: int, seconds: float) -> float:
    """Best bytes/s of np.copyto between two large arrays, counting read + write = 2·nbytes per copy.

    The STREAM convention: it ignores the extra read a write-allocate cache does, so it slightly
    understates what the memory bus moves. Arrays must be much larger than the last-level cache,
    or this measures the cache.
    """
    source = np.ones(max(nbytes // 8, 1), dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)  # warm-up: the first copy also pays for mapping `target`'s pages
    deadline = time.perf_counter() + seconds
    best = 0.0
    for _ in range(_MAX_REPEATS):
        start = time.perf_counter()
        np.copyto(target, source)
        best = max(best, 2 * source.nbytes / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            break
    return best


def physical_memory() -> tuple[float, bool]:
    """(bytes of RAM, whether it was read) from os.sysconf, which exists on Linux and macOS."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY, False
    if pages <= 0 or page_size <= 0:
        return _FALLBACK_MEMORY, False
    return float(pages * page_size), True


def require_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, an array larger than this machine's memory: a ValueError that says how much is
    asked and what there is, instead of an allocation the system kills (a 70B preset's weights: 276 GB)."""
    memory, _ = physical_memory()
    if nbytes > memory:
        raise ValueError(f"{what} needs {nbytes / 1e9:,.1f} GB, more than this machine's {memory / 1e9:,.1f} GB of "
                         "memory (GB = 1e9 bytes); the closed forms (minitx.formulas, the calculator commands) "
                         "describe models of any size without allocating them")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def measure(seconds_budget: float = 2.0, sizes: tuple[int, ...] = (256, 512, 1024, 2048),
            copy_bytes: float = 256e6) -> dict:
    """Measure this machine: peak fp32/fp64 matmul FLOP/s (NumPy's BLAS) and copy bandwidth, as the fields of
    a `minitx.hardware.Hardware` (name, peak_flops, bandwidth, memory, source, notes, measured).

    About `seconds_budget` seconds in all: 40% fp32 matmuls, 30% fp64, 30% copies, plus set-up. The copy
    arrays are `copy_bytes` each (two of them), capped at 1/8 of RAM.
    """
    seconds = checks.positive("seconds_budget", seconds_budget)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    copy_nbytes = checks.positive("copy_bytes", copy_bytes)
    memory, memory_known = physical_memory()
    copy_nbytes = int(min(copy_nbytes, memory / 8))

    fp32, fp32_n = _best_matmul_flops(np.float32, tuple(sizes), 0.4 * seconds)
    fp64, fp64_n = _best_matmul_flops(np.float64, tuple(sizes), 0.3 * seconds)
    bandwidth = _best_copy_bandwidth(copy_nbytes, 0.3 * seconds)

    notes = (f"best of up to {_MAX_REPEATS} runs: fp32 peak at n={fp32_n}, fp64 at n={fp64_n} (of sizes "
             f"{sorted(sizes)}); bandwidth from np.copyto of {copy_nbytes / 1e6:.0f} MB arrays, counting "
             f"read + write; {os.cpu_count()} logical CPUs.")
    if not memory_known:
        notes += f" RAM size unavailable from os.sysconf: {_FALLBACK_MEMORY / GB:.0f} GB assumed."
    return dict(name="this-machine", peak_flops={"fp32": fp32, "fp64": fp64}, bandwidth=bandwidth, memory=memory,
                source=f"measured on this machine by minitx.hardware.measure(); CPU: {_cpu_model()}",
                notes=notes, measured=True)


def this_machine() -> dict:
    """`measure()` once per process: a measurement takes seconds, and the machine does not change."""
    global _measured_cache
    if _measured_cache is None:
        _measured_cache = measure()
    return _measured_cache
