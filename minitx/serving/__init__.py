"""Serving: hardware, the roofline, what batching does to latency and throughput, and what a token costs.

    hardware.py   GPU presets (dense peaks, bandwidth, memory, with sources), custom chips, this machine
    roofline.py   op costs (a Ledger) turned into time on a chip, op by op
    latency.py    TTFT, TPOT and tokens/s as the batch grows; the whole-step floors; critical and largest batch
    cost.py       dollars: self-hosting against an API
    scheduler.py  the scheduler (static / continuous batching, chunked prefill, preemption) and the KV block
                  manager (paged / contiguous): pure Python, shared by the engine and the simulator
    engine.py     minitx.Engine: many requests through a real model, one packed model call per step
    step_cost.py  a serving step's exact FLOPs, bytes and roofline time from its mix of chunks, fast
    parallel.py   tensor parallelism (Megatron): one chip's share, its memory, the all-reduces
    workload.py   Poisson arrivals or a JSON Lines trace of requests
    simulator.py  the engine's scheduler driven by a clock, each step timed by step_cost: serving at real scale

`minitx.serving` is this package, and its names are latency.py's: `serving.sweep(...)`, `serving.decode_floor(...)`;
and the simulator's: `serving.simulate(cfg, "h100", serving.poisson(20, 1000, 512, (16, 512), cfg.n_ctx))`.
"""
from .latency import (ATTENTION_CONVENTIONS, EMBEDDING_CONVENTIONS, CriticalBatch, DecodeFloor, PrefillFloor,
                      ServingPoint, critical_batch, decode_floor, decode_roofline, decode_steps, max_batch,
                      memory_needed, prefill_floor, prefill_roofline, serving_point, sweep, sweep_table)
from .simulator import SimulationResult, load_sweep, simulate
from .step_cost import StepCost
from .workload import Job, poisson, read_trace

__all__ = ["ATTENTION_CONVENTIONS", "EMBEDDING_CONVENTIONS", "CriticalBatch", "DecodeFloor", "PrefillFloor",
           "ServingPoint", "critical_batch", "decode_floor", "decode_roofline", "decode_steps", "max_batch",
           "memory_needed", "prefill_floor", "prefill_roofline", "serving_point", "sweep", "sweep_table",
           "SimulationResult", "load_sweep", "simulate", "StepCost", "Job", "poisson", "read_trace"]
