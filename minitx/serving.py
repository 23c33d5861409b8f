"""Serving a real model, from the formulas' op costs on given hardware: time to first token (the batch's
prefill), time per output token (the mean decode step), throughput, and how batch size moves each.

    point = serving.serving_point(cfg, "h100", "bf16", batch=8, prompt=1000, gen=200)
    serving.sweep_table(serving.sweep(cfg, "h100", "bf16", batches=(1, 8, 64)))

Each step is predicted op by op with `minitx.roofline` (an unfused implementation: every op a trip to memory).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from . import formulas
from .config import Config
from .hardware import Hardware, get as get_hardware
from .formulas import dtype_name, positive_int
from .roofline import Roofline, analyze, fixed, memory_needed

# ==============================================================================================================
# Serving a real model: TTFT, TPOT, throughput, from the formulas' op costs

@dataclass(frozen=True)
class ServingPoint:
    """One batch size. `batch` requests with `prompt` tokens each arrive together; each gets `gen` new tokens.

    ttft      prefill of the whole batch: the first new token comes out of the prefill's logits
    tpot      mean decode step over the gen − 1 steps that follow (one token per sequence per step)
    latency   ttft + tpot · (gen − 1): Databricks' TTFT + TPOT × tokens, with the first token in the TTFT
    """
    batch: int
    prompt: int
    gen: int
    ttft: float
    tpot: float
    prefill_intensity: float
    prefill_bound: str
    decode_intensity: float       # of the mean decode step, whole step (weights, KV, activations)
    decode_bound: str
    memory_bytes: int             # weights + KV cache at prompt + gen tokens
    fits: bool                    # memory_bytes <= the chip's memory

    @property
    def latency(self) -> float:
        return self.ttft + self.tpot * (self.gen - 1)

    @property
    def tokens_per_s(self) -> float:
        """Decode throughput over the whole batch: B tokens per step."""
        return self.batch / self.tpot

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1.0 / self.tpot

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.batch * self.prompt / self.ttft

    def to_dict(self) -> dict:
        return {**asdict(self), "latency": self.latency, "tokens_per_s": self.tokens_per_s,
                "tokens_per_s_per_user": self.tokens_per_s_per_user,
                "prefill_tokens_per_s": self.prefill_tokens_per_s}


def prefill_roofline(cfg: Config, hardware: "str | Hardware", dtype: Any, batch: int, prompt: int) -> Roofline:
    """formulas.prefill(cfg, B, T) on the roofline."""
    return analyze(formulas.prefill(cfg, batch, prompt, dtype_name(dtype)), hardware, dtype, phase="prefill")


def decode_roofline(cfg: Config, hardware: "str | Hardware", dtype: Any, batch: int, context: int) -> Roofline:
    """formulas.decode_step(cfg, B, t=context) on the roofline: one step with `context` tokens cached."""
    return analyze(formulas.decode_step(cfg, batch, context, dtype_name(dtype)), hardware, dtype, phase="decode")


def decode_steps(cfg: Config, hardware: "str | Hardware", dtype: Any, batch: int, first: int,
                 steps: int) -> tuple[float, float]:
    """(mean step time, mean step intensity) over decode steps with first, first+1, ..., first+steps-1 tokens
    cached: exact, without building every step. Each op's FLOPs and bytes are affine in the cache length (the
    scores, softmax and mix grow by one key per step), so two steps give every other; the per-op max is then
    taken step by step."""
    steps = positive_int("steps", steps)
    a = decode_roofline(cfg, hardware, dtype, batch, first)
    if steps == 1:
        return a.time, a.intensity
    b = decode_roofline(cfg, hardware, dtype, batch, first + steps - 1)
    k = np.arange(steps)[:, None] / (steps - 1)                      # (steps, 1) from 0 to 1
    tc = np.array([o.t_compute for o in a.ops]) * (1 - k) + np.array([o.t_compute for o in b.ops]) * k
    tm = np.array([o.t_memory for o in a.ops]) * (1 - k) + np.array([o.t_memory for o in b.ops]) * k
    mean_time = float(np.maximum(tc, tm).sum(axis=1).mean())
    return mean_time, (a.flops + b.flops) / (a.bytes + b.bytes)      # mean FLOPs / mean bytes


def serving_point(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", batch: int = 1,
                  prompt: int = 1000, gen: int = 200) -> ServingPoint:
    """TTFT, TPOT and throughput for one batch size, predicted op by op from the formulas (see ServingPoint)."""
    hw = get_hardware(hardware)
    B = positive_int("batch", batch)
    T = positive_int("prompt", prompt)
    G = positive_int("gen", gen)
    if T + G > cfg.n_ctx:
        raise ValueError(f"prompt + gen = {T + G} tokens exceeds {cfg.name}'s context n_ctx={cfg.n_ctx}")
    pre = prefill_roofline(cfg, hw, dtype, B, T)
    tpot, decode_ai = decode_steps(cfg, hw, dtype, B, T, max(G - 1, 1))
    dec_mid = decode_roofline(cfg, hw, dtype, B, T + max(G - 2, 0) // 2)
    mem = memory_needed(cfg, dtype, B, T + G)
    return ServingPoint(B, T, G, pre.time, tpot, pre.intensity, pre.total().bound, decode_ai,
                        dec_mid.total().bound, mem, mem <= hw.memory)


def sweep(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", batches: Iterable[int] = (1, 8, 64),
          prompt: int = 1000, gen: int = 200) -> list[ServingPoint]:
    """serving_point for each batch size."""
    return [serving_point(cfg, hardware, dtype, b, prompt, gen) for b in batches]


def sweep_table(points: list[ServingPoint]) -> str:
    """The sweep as a text table: times in ms (latency in s), fixed decimals, thousands separators."""
    head = (f"{'batch':>6} {'TTFT ms':>11} {'TPOT ms':>9} {'latency s':>10} {'tok/s':>10} {'tok/s/user':>11} "
            f"{'dec FLOP/B':>10} {'decode':>8} {'memory GB':>10} {'fits':>5}")
    lines = ["(TTFT = prefill of the whole batch; TPOT = mean decode step; latency = TTFT + TPOT·(gen−1); "
             "tok/s = decode tokens over the batch; GB = 1e9 bytes: weights + KV cache)", head, "-" * len(head)]
    for p in points:
        lines.append(f"{p.batch:>6,} {fixed(p.ttft * 1e3):>11} {fixed(p.tpot * 1e3):>9} {fixed(p.latency):>10} "
                     f"{fixed(p.tokens_per_s, 0):>10} {fixed(p.tokens_per_s_per_user, 1):>11} "
                     f"{fixed(p.decode_intensity, 1):>10} {p.decode_bound:>8} {fixed(p.memory_bytes / 1e9, 2):>10} "
                     f"{'yes' if p.fits else 'NO':>5}")
    return "\n".join(lines)
