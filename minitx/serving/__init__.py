"""Serving: hardware, the roofline, what batching does to latency and throughput, and what a token costs.

    hardware.py   GPU presets (dense peaks, bandwidth, memory, with sources), custom chips, this machine
    roofline.py   op costs (a Ledger) turned into time on a chip, op by op
    latency.py    TTFT, TPOT and tokens/s as the batch grows; the whole-step floors; critical and largest batch
    cost.py       dollars: self-hosting against an API

`minitx.serving` is this package, and its names are latency.py's: `serving.sweep(...)`, `serving.decode_floor(...)`.
"""
from .latency import (ATTENTION_CONVENTIONS, EMBEDDING_CONVENTIONS, CriticalBatch, DecodeFloor, PrefillFloor,
                      ServingPoint, critical_batch, decode_floor, decode_roofline, decode_steps, max_batch,
                      memory_needed, prefill_floor, prefill_roofline, serving_point, sweep, sweep_table)

__all__ = ["ATTENTION_CONVENTIONS", "EMBEDDING_CONVENTIONS", "CriticalBatch", "DecodeFloor", "PrefillFloor",
           "ServingPoint", "critical_batch", "decode_floor", "decode_roofline", "decode_steps", "max_batch",
           "memory_needed", "prefill_floor", "prefill_roofline", "serving_point", "sweep", "sweep_table"]
