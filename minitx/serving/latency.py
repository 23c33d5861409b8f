"""Serving a real model, predicted from its op costs on given hardware: the whole-step floors, the critical
batch, the largest batch that fits, and what batch size does to time to first token (the batch's prefill), time
per output token (the mean decode step) and throughput.

    point = serving.serving_point(cfg, "h100", "bf16", batch=8, prompt=1000, gen=200)
    serving.sweep_table(serving.sweep(cfg, "h100", "bf16", batches=(1, 8, 64)))
    serving.decode_floor(cfg, "h100", "bf16", batch=1, context=1000).time

`dtype` is what is served: a format name ("bf16", "fp32"; "int8" and "int4" are weight-only quantization with
bfloat16 activations, W8A16 and W4A16, as `minitx.dtypes.precision` reads them) or a `minitx.dtypes.Precision`
(weights, KV cache and activations apart). The matmuls compute in the activations' format, so that is the peak
used: int8 weights are dequantized and multiplied in bf16, at the chip's bf16 peak, not its int8 one. Weight
bytes are the stored ones (quantized values and their scales); KV bytes are in the cache's format.
`attention` is the kernel: "unfused" (the model's default: scores written out and read back) or "fused".

Two kinds of prediction, each with its assumptions in its docstring:

    op by op       every op of `formulas.prefill` / `formulas.decode_step` on `minitx.roofline` (each op a trip
                   to memory; fused attention one op): serving_point, sweep, critical_batch
    whole step     decode_floor    decode step ≥ B · KV bytes per sequence / bandwidth + max(weight bytes /
                                   bandwidth, 2·B·P / peak) (the Scaling Book's "if there is one thing")
                   prefill_floor   prefill ≈ (2·P·tokens + causal attention FLOPs) / peak
                   max_batch       the largest batch whose KV cache fits in memory next to the weights
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from .. import checks, dtypes
from ..accounting import formulas
from ..dtypes import Precision
from ..core.config import Config
from ..units import fixed
from .hardware import Hardware, get as get_hardware
from .roofline import Roofline, analyze


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


def peak_dtype(dtype: Any) -> str:
    """The hardware dtype whose peak applies to serving `dtype`: its activations' format, the one the matmuls
    compute in ("bf16" for "int8": weight-only int8 is dequantized to bf16)."""
    return dtypes.short(dtypes.precision(dtype).activations)


def prefill_roofline(cfg: Config, hardware: "str | Hardware", dtype: Any, batch: int, prompt: int,
                     attention: str = "unfused") -> Roofline:
    """formulas.prefill(cfg, B, T) on the roofline."""
    pr = dtypes.precision(dtype)
    return analyze(formulas.prefill(cfg, batch, prompt, pr, attention), hardware, peak_dtype(pr))


def decode_roofline(cfg: Config, hardware: "str | Hardware", dtype: Any, batch: int, context: int,
                    attention: str = "unfused") -> Roofline:
    """formulas.decode_step(cfg, B, t=context) on the roofline: one step with `context` tokens cached."""
    pr = dtypes.precision(dtype)
    return analyze(formulas.decode_step(cfg, batch, context, pr, attention), hardware, peak_dtype(pr))


def decode_steps(cfg: Config, hardware: "str | Hardware", dtype: Any, batch: int, first: int,
                 steps: int, attention: str = "unfused") -> tuple[float, float]:
    """(mean step time, mean step intensity) over decode steps with first, first+1, ..., first+steps-1 tokens
    cached: exact, without building every step. Each op's FLOPs and bytes are affine in the cache length (the
    scores, softmax and mix grow by one key per step), so two steps give every other, and each op's time,
    the max of two affine functions of the step, sums in closed form: memory and time stay constant however
    many steps."""
    steps = checks.integer("steps", steps)
    a = decode_roofline(cfg, hardware, dtype, batch, first, attention)
    if steps == 1:
        return a.time, a.intensity
    b = decode_roofline(cfg, hardware, dtype, batch, first + steps - 1, attention)
    tm0, tm1 = np.array([o.t_memory for o in a.ops]), np.array([o.t_memory for o in b.ops])
    d0 = np.array([o.t_compute for o in a.ops]) - tm0                 # compute − memory time, first step
    d1 = np.array([o.t_compute for o in b.ops]) - tm1                 # ... last step
    # Σ_k max(tc, tm) = Σ_k tm + Σ_k max(d0 + slope·k, 0), k = 0..n-1: the second sum runs over the steps on the
    # positive side of the line's zero, an arithmetic series.
    n, slope = steps, (d1 - d0) / (steps - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = np.where(slope != 0, -d0 / np.where(slope != 0, slope, 1), np.inf)
    rising = slope > 0                        # positive for k > zero: k = lo..n-1
    lo = np.clip(np.floor(zero) + 1, 0, n)
    hi = np.clip(np.ceil(zero) - 1, -1, n - 1)   # falling: positive for k < zero: k = 0..hi
    count = np.where(rising, n - lo, hi + 1)
    first_k = np.where(rising, lo, 0)
    series = count * d0 + slope * count * (2 * first_k + count - 1) / 2
    positive = np.where(slope == 0, n * np.maximum(d0, 0), series)
    total = n * (tm0 + tm1) / 2 + positive
    return float(total.sum() / n), (a.flops + b.flops) / (a.bytes + b.bytes)      # mean FLOPs / mean bytes


def serving_point(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", batch: int = 1,
                  prompt: int = 1000, gen: int = 200, attention: str = "unfused") -> ServingPoint:
    """TTFT, TPOT and throughput for one batch size, predicted op by op from the formulas (see ServingPoint)."""
    hw = get_hardware(hardware)
    B = checks.integer("batch", batch)
    T = checks.integer("prompt", prompt)
    G = checks.integer("gen", gen)
    if T + G > cfg.n_ctx:
        raise ValueError(f"prompt + gen = {T + G} tokens exceeds {cfg.name}'s context n_ctx={cfg.n_ctx}")
    pre = prefill_roofline(cfg, hw, dtype, B, T, attention)
    tpot, decode_ai = decode_steps(cfg, hw, dtype, B, T, max(G - 1, 1), attention)
    dec_mid = decode_roofline(cfg, hw, dtype, B, T + max(G - 2, 0) // 2, attention)
    mem = memory_needed(cfg, dtype, B, T + G)
    return ServingPoint(B, T, G, pre.time, tpot, pre.intensity, pre.total().bound, decode_ai,
                        dec_mid.total().bound, mem, mem <= hw.memory)


def sweep(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", batches: Iterable[int] = (1, 8, 64),
          prompt: int = 1000, gen: int = 200, attention: str = "unfused") -> list[ServingPoint]:
    """serving_point for each batch size."""
    return [serving_point(cfg, hardware, dtype, b, prompt, gen, attention) for b in batches]


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


# ==============================================================================================================
# The whole-step forms

EMBEDDING_CONVENTIONS = ("read", "gather")


def _gathered_params(cfg: Config) -> int:
    """Parameters that a token only gathers one row of: the input embedding when it is not also the LM head
    (untied), and the learned position table. A tied wte is read in full by the head anyway."""
    wte = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    wpe = cfg.n_ctx * cfg.d_model if cfg.position == "learned" else 0
    return wte + wpe


def _gathered_rows(cfg: Config) -> int:
    """Embedding rows a token gathers (token row, and a position row for learned positions)."""
    return (0 if cfg.tie_embeddings else 1) + (1 if cfg.position == "learned" else 0)


def _weight_bytes(cfg: Config, pr: Precision, batch: int, embedding: str) -> int:
    """The weights' stored bytes a decode step reads: all of them (embedding="read"), or all but the gathered
    tables, of which each token reads its rows (embedding="gather"). Tables are never quantized: they stay in
    the activations' format."""
    stored = formulas.param_bytes(cfg, pr)
    if embedding == "read":
        return stored
    s = dtypes.itemsize(pr.activations)
    return stored - _gathered_params(cfg) * s + batch * _gathered_rows(cfg) * cfg.d_model * s


def _keys_read(cfg: Config, context: int) -> int:
    """Cached positions one decode step reads per sequence: all of them, or the last W with a sliding window."""
    W = cfg.sliding_window
    return min(context, W) if W else context


def _causal_pairs(T: int, W: int | None) -> int:
    """(query, key) pairs a causal prompt of T tokens looks at: T(T+1)/2, or Σ_i min(i + 1, W) in a window."""
    if not W or T <= W:
        return T * (T + 1) // 2
    return W * (W + 1) // 2 + (T - W) * W



@dataclass(frozen=True)
class DecodeFloor:
    """One decode step, the Scaling Book's way: t_kv + max(t_weights, t_compute)."""
    batch: int
    context: int           # tokens per sequence in the KV cache that the step reads
    weight_bytes: int      # read once per step, whatever the batch
    kv_bytes: int          # batch · context · KV bytes per token
    flops: int             # 2 · B · P (matmul FLOPs; attention's are inside the KV term's time)
    t_weights: float
    t_kv: float
    t_compute: float
    embedding: str

    @property
    def time(self) -> float:
        return self.t_kv + max(self.t_weights, self.t_compute)

    @property
    def memory_time(self) -> float:
        """The bandwidth floor alone: (weight bytes + KV bytes) / bandwidth."""
        return self.t_weights + self.t_kv

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.time

    def to_dict(self) -> dict:
        return {**asdict(self), "time": self.time, "memory_time": self.memory_time,
                "tokens_per_s": self.tokens_per_s}


def decode_floor(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", batch: int = 1, context: int = 0,
                 embedding: str = "read") -> DecodeFloor:
    """The least time one decode step can take: every weight and every cached K/V byte must cross the memory
    bus once, and every weight must be multiplied by every token of the batch.

        time = B · KV_bytes(context) / BW  +  max(weight_bytes / BW,  2 · B · P / peak)

    Assumptions: weights and the KV cache stream from DRAM once per step (no cache reuse across steps);
    attention FLOPs and activations are left out (attention at decode is always bandwidth-bound: its time is the
    KV term); the matmuls run at the dtype's dense peak; one chip.
    embedding="read": every parameter is read (weight bytes = P · itemsize, the usual quote).
    embedding="gather": the input embedding (untied) and learned position table are only gathered, one row per
    token, as minitx's embedding op counts them: weight bytes = (P − gathered tables + B · rows) · itemsize.
    FLOPs = 2 · B · P with either convention (the Scaling Book's; the difference is small).
    Weight bytes are the stored ones (formulas.param_bytes: quantized matrices with their scales); the KV bytes
    are in the cache's format, and a model with a sliding window of W reads only the last W positions.
    """
    hw = get_hardware(hardware)
    pr = dtypes.precision(dtype)
    B = checks.integer("batch", batch)
    S = checks.integer("context", context, 0)
    embedding = checks.one_of("embedding", embedding, EMBEDDING_CONVENTIONS)
    weight_bytes = _weight_bytes(cfg, pr, B, embedding)
    kv = formulas.kv_bytes_per_token(cfg, pr) * _keys_read(cfg, S) * B     # S = 0: an empty cache reads nothing
    flops = 2 * B * formulas.num_params(cfg)
    return DecodeFloor(B, S, weight_bytes, kv, flops, weight_bytes / hw.bandwidth, kv / hw.bandwidth,
                       flops / hw.peak(peak_dtype(pr)), embedding)


@dataclass(frozen=True)
class PrefillFloor:
    batch: int
    tokens: int             # per sequence
    linear_flops: int       # 2 · P' · B · T
    attention_flops: int    # QKᵀ and A·V: 4 · L · NH·HS per (query, key) pair counted
    weight_bytes: int
    t_compute: float
    t_weights: float
    embedding_flops: bool
    attention: str

    @property
    def flops(self) -> int:
        return self.linear_flops + self.attention_flops

    @property
    def time(self) -> float:
        return max(self.t_compute, self.t_weights)

    def to_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops, "time": self.time}


ATTENTION_CONVENTIONS = ("causal", "full", "none")


def prefill_floor(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", tokens: int = 1000,
                  batch: int = 1, embedding_flops: bool = True, attention: str = "causal") -> PrefillFloor:
    """Prefill at 100% of peak: FLOPs / peak, where

        FLOPs = 2 · P' · B · T + attention
        P'    = P (embedding_flops=True: 2 FLOPs per parameter per token, all parameters, the "2·P·tokens"
                of the literature) or P minus the tables that are only gathered (embedding_flops=False:
                the lookup costs no FLOPs, as in minitx's counts)
        attention  causal: 4 · L · NH·HS · T(T+1)/2 per sequence (QKᵀ and A·V, each 2·HS per head per visible
                   pair; with a sliding window of W, each query sees at most W keys); full: 4 · L · NH·HS · T²
                   (the unfused kernel's count and PaLM's: the whole rectangle); none: 0

    Assumptions: compute-bound (T far above the ridge); weights read once (t_weights is reported, and the
    time is max(t_compute, t_weights)); the LM head runs on all T tokens (2·P counts it per token) though a
    server needs only the last row; softmax, norms, activations left out.
    """
    hw = get_hardware(hardware)
    pr = dtypes.precision(dtype)
    B = checks.integer("batch", batch)
    T = checks.integer("tokens", tokens)
    attention = checks.one_of("attention", attention, ATTENTION_CONVENTIONS)
    P = formulas.num_params(cfg)
    P_flop = P if embedding_flops else P - _gathered_params(cfg)
    pairs = {"causal": _causal_pairs(T, cfg.sliding_window), "full": T * T, "none": 0}[attention]
    attn = 4 * cfg.n_layers * cfg.q_dim * pairs * B
    linear = 2 * P_flop * B * T
    weight_bytes = formulas.param_bytes(cfg, pr)
    return PrefillFloor(B, T, linear, attn, weight_bytes, (linear + attn) / hw.peak(peak_dtype(pr)),
                        weight_bytes / hw.bandwidth, bool(embedding_flops), attention)


@dataclass(frozen=True)
class CriticalBatch:
    """Where decode turns compute-bound. `analytic` = ridge · b / 2, b the stored bytes per parameter: a
    weights-only step does 2·B FLOPs per parameter and reads b bytes of it, intensity 2·B/b (= B in bf16), which
    reaches the ridge at B = ridge · b / 2. b is the itemsize of a float format, and a little over 1 (int8) or
    1/2 (int4) for quantized weights, their scales and unquantized tables included. `from_ops`: the smallest
    batch at which the decode step's matmuls (formulas' op costs: weights AND activations moved, the
    dequantization of quantized weights included) spend more time computing than moving bytes."""
    ridge: float
    bytes_per_weight: float
    analytic: float
    from_ops: int | None     # None: never within 2**24 sequences
    context: int

    def to_dict(self) -> dict:
        return asdict(self)


def critical_batch(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", context: int = 0,
                   attention: str = "unfused") -> CriticalBatch:
    """The decode batch at which the weight matmuls turn compute-bound (see CriticalBatch). Attention is left
    out: at decode it reads B·context KV rows for 4·B·context·HS·NH FLOPs, intensity ≈ NH/KV·(2/itemsize),
    memory-bound at any batch, so it never turns."""
    hw = get_hardware(hardware)
    pr = dtypes.precision(dtype)
    S = checks.integer("context", context, 0)
    peak, ridge = hw.peak(peak_dtype(pr)), hw.ridge(peak_dtype(pr))
    per_weight = formulas.param_bytes(cfg, pr) / formulas.num_params(cfg)

    def balance(B: int) -> float:
        """Σ flops/peak − Σ bytes/bandwidth over the matmul ops of one decode step."""
        matmuls = formulas.decode_step(cfg, B, S, pr, attention).filter(op="matmul")
        return matmuls.flops / peak - matmuls.bytes / hw.bandwidth

    lo, hi, found = 1, 1, None
    if balance(1) >= 0:
        found = 1
    else:
        while hi < 2 ** 24 and balance(hi) < 0:
            lo, hi = hi, hi * 2
        if balance(hi) >= 0:
            while hi - lo > 1:                       # invariant: lo is memory-bound, hi compute-bound
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if balance(mid) < 0 else (lo, mid)
            found = hi
    return CriticalBatch(ridge, per_weight, ridge * per_weight / 2, found, S)


def memory_needed(cfg: Config, dtype: Any, batch: int, context: int) -> int:
    """Weights (as stored) + KV cache (in its format) for `batch` sequences of `context` tokens, bytes.
    Activations are left out (one layer's worth, small next to these at serving sizes)."""
    pr = dtypes.precision(dtype)
    B, S = checks.integer("batch", batch), checks.integer("context", context, 0)
    return formulas.param_bytes(cfg, pr) + formulas.kv_bytes_per_token(cfg, pr) * S * B


def max_batch(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", context: int = 2048) -> int:
    """The largest batch whose KV cache (context tokens per sequence, a full cache) fits in the chip's memory
    next to the weights: floor((memory − weight bytes) / (context · KV bytes per token)). 0 if the weights alone
    don't fit."""
    hw = get_hardware(hardware)
    pr = dtypes.precision(dtype)
    S = checks.integer("context", context)
    free = hw.memory - formulas.param_bytes(cfg, pr)
    if free < 0:
        return 0
    return int(free // formulas.kv_cache_bytes(cfg, 1, S, pr))
