"""Workloads for the serving simulator: when requests arrive and how long they are.

A workload is a list of `Job`s; a job's index in it is its request id. A job is what a client sends and what it
gets back:

    arrival_s        seconds from the start of the run
    prompt_len       tokens in the prompt
    gen_len          tokens the model will actually generate before it stops (the answer's length, which the
                     server learns only when the request ends)
    max_new_tokens   the cap the client asked for, all the server knows in advance: a contiguous KV cache
                     reserves prompt_len + max_new_tokens positions per request at admission

Two sources:

    poisson(rate, num_requests, prompt, gen, seed)   Poisson arrivals: independent exponential gaps of mean
                                                     1/rate seconds (a memoryless stream of users, as in the vLLM
                                                     paper's evaluation); lengths fixed (512) or uniform on a
                                                     closed range ((16, 512)); one numpy Generator seeded by
                                                     `seed` draws everything, so a seed gives one workload
    read_trace(path, n_ctx)                          a JSON Lines file, one request per line:
                                                     {"arrival_s": 0.25, "prompt_len": 512, "gen_len": 97}
                                                     with optional "max_new_tokens" (the cap)

Without a cap, a request may run to the end of the model's context: max_new_tokens = n_ctx − prompt_len, the
server's worst case and what a client that sets no limit gets.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks
from ..io.text_file import read_text_file

MAX_TRACE_BYTES = 64 << 20          # 64 MiB: a million requests at ~60 bytes a line
MAX_LINE_CHARS = 4096
TRACE_KEYS = ("arrival_s", "prompt_len", "gen_len", "max_new_tokens")


@dataclass(frozen=True)
class Job:
    """One request of a workload (see the module docstring)."""
    arrival_s: float
    prompt_len: int
    gen_len: int
    max_new_tokens: int

    def __post_init__(self):
        checks.number("Job.arrival_s", self.arrival_s, 0.0)
        checks.integer("Job.prompt_len", self.prompt_len)
        checks.integer("Job.gen_len", self.gen_len)
        checks.integer("Job.max_new_tokens", self.max_new_tokens)
        if self.gen_len > self.max_new_tokens:
            raise ValueError(f"Job.gen_len={self.gen_len} exceeds its max_new_tokens={self.max_new_tokens} (the cap "
                             "bounds the answer)")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_lengths(arg: str, value: Any) -> tuple[int, int]:
    """An int n as (n, n), or a (lo, hi) pair with 1 ≤ lo ≤ hi."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{arg} must be a length or a (low, high) pair, got {value!r}")
        lo = checks.integer(f"{arg} (low)", value[0])
        hi = checks.integer(f"{arg} (high)", value[1])
        if hi < lo:
            raise ValueError(f"{arg}: the high end {hi} is below the low end {lo}")
        return lo, hi
    n = checks.integer(arg, value)
    return n, n


def _check_fits(where: str, prompt_len: int, gen_len: int, cap: int, n_ctx: int) -> None:
    if cap < gen_len:
        raise ValueError(f"{where}: max_new_tokens={cap} is below gen_len={gen_len} (the cap bounds the answer)")
    if prompt_len + cap > n_ctx:
        raise ValueError(f"{where}: prompt_len + max_new_tokens = {prompt_len + cap} passes the model's context "
                         f"n_ctx={n_ctx}")


def poisson(rate: float, num_requests: int, prompt: Any, gen: Any, n_ctx: int, seed: int = 0,
            max_new_tokens: int | None = None) -> list[Job]:
    """`num_requests` jobs with Poisson arrivals at `rate` per second (the first after one gap), prompt and
    output lengths each fixed (an int) or uniform on [low, high] (a pair), all drawn from
    numpy.random.default_rng(seed). `max_new_tokens`: the cap every request states (default n_ctx − prompt)."""
    rate = checks.positive("rate", rate)
    num = checks.integer("num_requests", num_requests, 1, 10 ** 7)
    p_lo, p_hi = _check_lengths("prompt", prompt)
    g_lo, g_hi = _check_lengths("gen", gen)
    n_ctx = checks.integer("n_ctx", n_ctx)
    seed = checks.integer("seed", seed, 0, 2 ** 63 - 1)
    if max_new_tokens is not None:
        max_new_tokens = checks.integer("max_new_tokens", max_new_tokens)
    longest_cap = max_new_tokens if max_new_tokens is not None else n_ctx - p_hi
    _check_fits("the longest request", p_hi, g_hi, longest_cap, n_ctx)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, num))
    if not np.isfinite(arrivals[-1]):
        raise ValueError(f"rate={rate:g} with {num} requests: arrival times overflow")
    prompts = rng.integers(p_lo, p_hi + 1, num)
    gens = rng.integers(g_lo, g_hi + 1, num)
    return [Job(float(a), int(pl), int(gl), max_new_tokens if max_new_tokens is not None else n_ctx - int(pl))
            for a, pl, gl in zip(arrivals, prompts, gens)]


def read_trace(path: "str | os.PathLike[str]", n_ctx: int) -> list[Job]:
    """Jobs from a JSON Lines trace (see the module docstring), in file order (the simulator admits them by
    arrival, ties in file order). Blank lines are skipped; every other line must be an object with the known keys
    only, each checked: a bad line is a ValueError naming the file and its line number."""
    n_ctx = checks.integer("n_ctx", n_ctx)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    where = f"trace {str(path)!r}"
    try:                       # a regular file only: a FIFO would block the read forever, /dev/zero never end
        text = read_text_file(path, MAX_TRACE_BYTES, where)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{where} is a directory, not a JSON Lines file") from None
    except OSError as e:
        raise ValueError(f"{where}: {e.strerror or e}") from None
    jobs = [_job(f"{where}, line {number}", line, n_ctx)
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not jobs:
        raise ValueError(f"{where} holds no requests (one JSON object per line: "
                         '{"arrival_s": 0.0, "prompt_len": 512, "gen_len": 128})')
    return jobs


def _job(where: str, line: str, n_ctx: int) -> Job:
    if len(line) > MAX_LINE_CHARS:
        raise ValueError(f"{where} is longer than {MAX_LINE_CHARS} characters")
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object with {', '.join(TRACE_KEYS[:3])}, got "
                         f"{type(data).__name__}")
    unknown = sorted(set(data) - set(TRACE_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(TRACE_KEYS)}")
    missing = [k for k in TRACE_KEYS[:3] if k not in data]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(missing)}")
    arrival = data["arrival_s"]
    try:
        arrival = checks.number("arrival_s", arrival, 0.0)
        prompt_len = checks.integer("prompt_len", data["prompt_len"], 1, n_ctx)
        gen_len = checks.integer("gen_len", data["gen_len"], 1, n_ctx)
        cap = data.get("max_new_tokens")
        cap = n_ctx - prompt_len if cap is None else checks.integer("max_new_tokens", cap, 1, n_ctx)
        _check_fits(where, prompt_len, gen_len, cap, n_ctx)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return Job(arrival, prompt_len, gen_len, cap)


def write_trace(jobs: list[Job], path: "str | os.PathLike[str]", overwrite: bool = False) -> None:
    """Write jobs as a JSON Lines trace that read_trace reads back. An existing file is refused unless
    overwrite=True."""
    jobs = list(jobs)
    for i, job in enumerate(jobs):            # all checked before the file is created: never half a trace
        checks.instance(f"jobs[{i}]", job, Job, "a minitx.serving.workload.Job")
    checks.instance("overwrite", overwrite, bool)
    path = Path(path)
    mode = "w" if overwrite else "x"
    try:
        with path.open(mode, encoding="utf-8") as file:
            for job in jobs:
                file.write(json.dumps(job.to_dict()) + "\n")
    except FileExistsError:
        raise ValueError(f"{str(path)!r} exists; pass overwrite=True to replace it") from None
