"""A serving simulator at real scale: the engine's scheduler and KV block manager, driven by a clock.

The engine (minitx.serving.engine) runs a real model on this CPU; the simulator runs the very same scheduler and
block manager (minitx.serving.scheduler) for a model and a GPU too large for that, say Llama-3-8B on an H100, with
each step's duration predicted instead of measured:

    loop
        step = scheduler.next_step(now)              who runs: decode tokens, prompt chunks, admissions
        if no step: now = the next arrival           idle: the clock jumps to the next request
        now += step time                             the roofline of the step's exact op costs (StepCost):
                                                     Σ over its ops of max(FLOPs / (peak·mfu), bytes / (BW·mbu)),
                                                     plus tensor parallelism's all-reduces
        every chunk that wants logits yields a token at `now`; a request ends after its gen_len tokens
        scheduler.finish(step, ended)

Nothing is sampled and no array of the model exists: a step is its mix of chunks (n_i new tokens at positions
p_i..p_i+n_i−1) and that is all its cost depends on (minitx.serving.step_cost proves it equals the formulas' Ledger
of the step, which tests prove equal to what the model counts when it runs).

Memory. The KV pool is what fits on a chip beside its share of the weights (minitx.serving.parallel.chip_memory):
memory_fraction (default 0.9, vLLM's gpu_memory_utilization) of the chip's memory, minus the weights, in blocks of
block_size positions. The contiguous layout reserves prompt + max_new_tokens per request on admission, the paged
one grows block by block: the difference is the vLLM paper's (Kwon et al., SOSP 2023).

What a run reports (`Summary`; times in seconds of simulated time):
    throughput_tok_s     output tokens / (last finish − first arrival)
    ttft_p50_s, _p99_s   time to first token: arrival → the end of the step that produced its first token
    tpot_p50_s, _p99_s   time per output token after the first: (finish − first token) / (gen_len − 1), over the
                         requests that generate more than one token
    kv_waste             reserved KV positions holding no token ÷ reserved positions, per step, averaged over
                         simulated time: each step weighted by its duration (idle gaps, which hold nothing, left
                         out); `minitx serve` averages the same ratio over its steps
    preemptions          requests preempted to free blocks (each re-prefills what it knew: vLLM's recompute)
    max_batch_seen       the most sequences in one step
and per request a `Timeline`, per step the batch and the KV reservation (`StepTrace`), for the plots.

Assumptions: a step's time is its kernels' alone (no scheduling or sampling overhead on the CPU, no kernel launch
latency); the first token of a request comes out of its prefill's last chunk, as in the engine; a preempted request
keeps the tokens it generated and recomputes their keys and values.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .. import checks, dtypes
from ..core.config import Config
from . import parallel
from .hardware import Hardware, get as get_hardware
from .scheduler import LAYOUTS, MAX_BLOCKS, POLICIES, BlockManager, Request, Scheduler
from .step_cost import StepCost
from .workload import Job

# The block manager's limit (a list of free block ids; ten million take about a second and 400 MB), checked here
# first to say what to change.
MAX_POOL_BLOCKS = MAX_BLOCKS


@dataclass(frozen=True)
class Timeline:
    """One request, in seconds of simulated time. first_scheduled_s: the start of the first step it ran in."""
    id: int
    arrival_s: float
    prompt_len: int
    gen_len: int
    max_new_tokens: int
    first_scheduled_s: float
    first_token_s: float
    finish_s: float
    preemptions: int

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time between its output tokens after the first; None for a one-token answer."""
        return (self.finish_s - self.first_token_s) / (self.gen_len - 1) if self.gen_len > 1 else None

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "latency_s": self.latency_s}


@dataclass(frozen=True)
class StepTrace:
    """Every step of a run, as arrays of one entry per step: when it started, how long it took, how many
    sequences and tokens it ran, and the KV positions reserved and holding a token while it ran."""
    start_s: np.ndarray
    duration_s: np.ndarray
    batch: np.ndarray
    tokens: np.ndarray
    reserved_tokens: np.ndarray
    used_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.start_s)


@dataclass(frozen=True)
class Summary:
    """What a run achieved (see the module docstring for each figure)."""
    throughput_tok_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    kv_waste: float
    preemptions: int
    max_batch_seen: int
    requests: int
    output_tokens: int
    prompt_tokens: int
    duration_s: float
    steps: int
    mean_batch: float
    latency_p50_s: float
    latency_p99_s: float
    normalized_latency_s: float      # mean over requests of latency / gen_len (the vLLM paper's latency metric)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SimulationResult:
    summary: Summary
    timelines: list[Timeline]
    steps: StepTrace
    memory: parallel.ChipMemory
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The settings, the memory plan and the summary (not the per-request and per-step detail)."""
        return {"settings": self.settings, "memory": self.memory.to_dict(), "summary": self.summary.to_dict()}


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def simulate(cfg: Config, hardware: "str | Hardware", jobs: Sequence[Job], dtype: Any = "bf16",
             attention: str = "fused", *, policy: str = "continuous", kv_layout: str = "paged",
             block_size: int = 16, max_batch: int = 256, chunked_prefill: int | None = None, tp: int = 1,
             mfu: float = 1.0, mbu: float = 1.0, memory_fraction: float = 0.9,
             num_blocks: int | None = None) -> SimulationResult:
    """Serve `jobs` (minitx.serving.workload; job i is request i) with `cfg` on `tp` chips of `hardware`.

    dtype, attention          the deployment: a format name or minitx.dtypes.Precision; "fused" or "unfused"
    policy, kv_layout         "continuous" | "static"; "paged" | "contiguous" (minitx.serving.scheduler)
    block_size, max_batch     KV block size in positions; most sequences in one step
    chunked_prefill           per-step token budget for prefill chunks and decode tokens (None: whole prompts)
    tp, mfu, mbu              chips (tensor parallel); fractions of peak FLOP/s and bandwidth reached
    memory_fraction           share of each chip's memory for weights and KV cache (vLLM's 0.9 by default)
    num_blocks                the KV pool's size in blocks, instead of what fits (for experiments)
    """
    hw = get_hardware(hardware)
    pr = dtypes.precision(dtype)
    cost = StepCost(cfg, hw, pr, attention, tp=tp, mfu=mfu, mbu=mbu)
    policy = checks.one_of("policy", policy, POLICIES)
    kv_layout = checks.one_of("kv_layout", kv_layout, LAYOUTS)
    try:
        jobs = list(jobs)
    except TypeError:
        raise TypeError(f"jobs must be a list of minitx.serving.workload.Job, got {type(jobs).__name__}") from None
    if not jobs:
        raise ValueError("jobs is empty: a simulation serves at least one request")
    for i, job in enumerate(jobs):
        checks.instance(f"jobs[{i}]", job, Job, "a minitx.serving.workload.Job")
    max_batch = checks.integer("max_batch", max_batch)
    block_size = checks.integer("block_size", block_size)
    # No run holds more at once than its largest batch of its longest requests: a pool beyond that is never used.
    longest = max(job.prompt_len + job.max_new_tokens for job in jobs)
    most = min(max_batch, len(jobs)) * -(-longest // block_size)
    memory = parallel.chip_memory(cfg, hw, pr, cost.tp, block_size, memory_fraction, most_blocks=most)
    if num_blocks is not None:
        memory = dataclasses.replace(memory, num_blocks=checks.integer("num_blocks", num_blocks))
    if memory.num_blocks > MAX_POOL_BLOCKS:
        raise ValueError(f"a KV pool of {memory.num_blocks:,} blocks is more than the simulator keeps track of "
                         f"({MAX_POOL_BLOCKS:,}): use larger blocks (block_size), or a smaller max_batch")
    blocks = BlockManager(memory.num_blocks, memory.block_size, kv_layout)
    sched = Scheduler(blocks, policy, max_batch, chunked_prefill, max_context=cfg.n_ctx)
    for i, job in enumerate(jobs):            # each Job checked its own fields (gen_len ≤ max_new_tokens too)
        sched.add(Request(i, job.prompt_len, job.max_new_tokens, job.arrival_s))
    settings = {"model": cfg.name, "hardware": hw.name, "precision": str(pr), "attention": cost.attention,
                "policy": policy, "kv_layout": kv_layout, "block_size": memory.block_size, "max_batch": max_batch,
                "chunked_prefill": chunked_prefill, "tp": cost.tp, "mfu": cost.mfu, "mbu": cost.mbu,
                "memory_fraction": memory.memory_fraction, "requests": len(jobs)}
    return _run(sched, cost, jobs, memory, settings)


def _run(sched: Scheduler, cost: StepCost, jobs: list[Job], memory: parallel.ChipMemory,
         settings: dict) -> SimulationResult:
    """The clock loop. Per-request state lives in plain lists indexed by request id (fast in CPython)."""
    count = len(jobs)
    gen_len = [job.gen_len for job in jobs]
    generated = [0] * count
    first_scheduled = [math.nan] * count
    first_token = [math.nan] * count
    finish = [math.nan] * count
    preempted = [0] * count
    blocks = sched.blocks
    trace: tuple[list, ...] = ([], [], [], [], [], [])
    start_s, duration_s, batch, tokens, reserved, used = trace
    now = 0.0
    while sched.unfinished:
        step = sched.next_step(now)
        if step is None:
            arrival = sched.next_arrival()
            if arrival is None or arrival <= now:
                # every unfinished request fits an empty pool (Scheduler.add checks), so this is a bug, not a load
                raise RuntimeError(f"the scheduler stalled at t={now} with {sched.unfinished} requests unfinished")
            now = arrival
            continue
        chunks = step.chunks
        m = len(chunks)
        n = np.fromiter((c.n for c in chunks), np.int64, m)
        p = np.fromiter((c.start for c in chunks), np.int64, m)
        rows = sum(c.wants_logits for c in chunks)
        dt = cost.time_unchecked(n, p, rows)
        for rid in step.preempted:
            preempted[rid] += 1
        start_s.append(now)
        duration_s.append(dt)
        batch.append(m)
        tokens.append(int(n.sum()))
        reserved.append(blocks.reserved_tokens)
        used.append(blocks.used_tokens)
        for c in chunks:
            if math.isnan(first_scheduled[c.request_id]):          # its first step
                first_scheduled[c.request_id] = now
        now += dt
        done = set()
        for c in chunks:
            if c.wants_logits:
                rid = c.request_id
                generated[rid] += 1
                if generated[rid] == 1:
                    first_token[rid] = now
                if generated[rid] == gen_len[rid]:
                    done.add(rid)
                    finish[rid] = now
        sched.finish(step, done)
    timelines = [Timeline(i, job.arrival_s, job.prompt_len, job.gen_len, job.max_new_tokens, first_scheduled[i],
                          first_token[i], finish[i], preempted[i]) for i, job in enumerate(jobs)]
    steps = StepTrace(*(np.array(a, dtype=float if k < 2 else np.int64) for k, a in enumerate(trace)))
    return SimulationResult(_summarize(timelines, steps, sched.preemptions), timelines, steps, memory, settings)


def _summarize(timelines: list[Timeline], steps: StepTrace, preemptions: int) -> Summary:
    output = sum(t.gen_len for t in timelines)
    start = min(t.arrival_s for t in timelines)
    duration = max(t.finish_s for t in timelines) - start
    ttft = [t.ttft_s for t in timelines]
    tpot = [t.tpot_s for t in timelines if t.tpot_s is not None]
    latency = [t.latency_s for t in timelines]
    waste = (steps.reserved_tokens - steps.used_tokens) / np.maximum(steps.reserved_tokens, 1)
    busy = float(steps.duration_s.sum())
    return Summary(
        throughput_tok_s=output / duration if duration > 0 else math.inf,
        ttft_p50_s=_percentile(ttft, 50), ttft_p99_s=_percentile(ttft, 99),
        tpot_p50_s=_percentile(tpot, 50), tpot_p99_s=_percentile(tpot, 99),
        kv_waste=float((waste * steps.duration_s).sum()) / busy if busy else 0.0, preemptions=preemptions,
        max_batch_seen=int(steps.batch.max()), requests=len(timelines), output_tokens=output,
        prompt_tokens=sum(t.prompt_len for t in timelines), duration_s=duration, steps=len(steps),
        mean_batch=float(steps.batch.mean()),
        latency_p50_s=_percentile(latency, 50), latency_p99_s=_percentile(latency, 99),
        normalized_latency_s=float(np.mean([t.latency_s / t.gen_len for t in timelines])))


# ==============================================================================================================
# Offered load: the same workload, faster or slower

def scaled(jobs: Iterable[Job], factor: float) -> list[Job]:
    """The jobs with every arrival time divided by `factor`: the same requests offered `factor` times as fast."""
    factor = checks.positive("factor", factor)
    return [Job(job.arrival_s / factor, job.prompt_len, job.gen_len, job.max_new_tokens) for job in jobs]


def offered_rate(jobs: Sequence[Job]) -> float:
    """Requests per second the workload offers: (count − 1) / (last arrival − first), inf if all arrive at once."""
    times = [job.arrival_s for job in jobs]
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else math.inf


@dataclass(frozen=True)
class LoadPoint:
    """One run of a load sweep: a policy at an offered rate (requests/s), and its summary."""
    policy: str
    rate: float
    summary: Summary

    def to_dict(self) -> dict:
        return {"policy": self.policy, "rate": self.rate, "summary": self.summary.to_dict()}


def load_sweep(cfg: Config, hardware: "str | Hardware", jobs: Sequence[Job], factors: Iterable[float] = (0.25, 0.5,
               1.0, 1.5, 2.0), policies: Iterable[str] = POLICIES, **kwargs: Any) -> list[LoadPoint]:
    """simulate() for each policy at each multiple of the workload's offered load (arrivals compressed by the
    factor): the latency-vs-load curves. kwargs go to simulate (dtype, kv_layout, tp, ...)."""
    jobs = list(jobs)
    base = offered_rate(jobs)
    points = []
    for policy in policies:
        for factor in factors:
            result = simulate(cfg, hardware, scaled(jobs, factor), policy=policy, **kwargs)
            points.append(LoadPoint(policy, base * factor, result.summary))
    return points
