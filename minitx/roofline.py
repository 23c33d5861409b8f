"""The roofline model: counted FLOPs and bytes, turned into time on given hardware.

One op that does F FLOPs and moves M bytes (read + written) cannot finish faster than either

    T_math  = F / peak         (the chip's dense FLOP/s for the dtype the op computes in)
    T_bytes = M / bandwidth    (DRAM bytes per second)

so its predicted time is max(T_math, T_bytes). Which term wins depends on the op's arithmetic intensity F / M
against the chip's ridge point peak / bandwidth: above the ridge the op is compute-bound, below it memory-bound.
A phase (prefill, one decode step) is predicted as the SUM over its ops of that max: minitx's ops are unfused,
each one a trip to memory and back (minitx.conventions), so they do not overlap. The Scaling Book calls
max(T_math, T_bytes) the lower bound and T_math + T_bytes the upper one; the prediction here is the lower bound
of an unfused implementation, op by op.

Where the op costs come from: anything with `name`, `op`, `flops`, `bytes_read`, `bytes_written` (and `phase`,
optionally): the records of a `minitx.count()` block (what really ran) or the `OpCost`s of `minitx.formulas`
(what would run: `formulas.prefill`, `formulas.decode_step`, no allocation, so a 70B model answers at once).

    rl = roofline.analyze(formulas.decode_step(cfg, 1, 1000, "bfloat16"), "h100", "bf16", phase="decode")
    rl.time, rl.phases()["decode"].intensity, rl.table("op")

The classic whole-step forms, each with its assumptions in its docstring:

    decode_floor    decode step ≥ (weight bytes + B · KV bytes per sequence) / bandwidth, or 2·B·P / peak when
                    that is larger (the Scaling Book's "if there is one thing" formula)
    prefill_floor   prefill ≈ (2·P·tokens + causal attention FLOPs) / peak
    critical_batch  the batch where decode turns compute-bound: bf16 weights give intensity ≈ B, so ≈ the ridge
    max_batch       the largest batch whose KV cache fits in memory next to the weights

Serving (TTFT, TPOT, tokens/s as batch size grows) builds on this in `minitx.serving`; the same predictions set
against timings on this CPU are in `minitx.measured`.

Units: seconds, bytes, FLOPs; GB = 1e9 bytes. dtype names: "bf16"/"bfloat16", "fp16"/"float16", "fp32"/"float32",
"int8" (int8 weights, KV and int8 OPs: the chip's int8 peak).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from . import formulas
from .formulas import dtype_name, positive_int
from .config import Config
from .counting import Counter
from .hardware import Hardware, get as get_hardware

COMPUTE, MEMORY = "compute", "memory"

# dtype as the formulas spell it -> as the hardware presets spell it
_HW_DTYPE = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8"}


def hw_dtype(dtype: Any) -> str:
    """The hardware presets' name of a dtype ("bfloat16" -> "bf16")."""
    return _HW_DTYPE[dtype_name(dtype)]


# ==============================================================================================================
# Op by op

@dataclass(frozen=True)
class OpTime:
    """One op on the roofline. Times in seconds; `bound` is whichever of the two terms is larger."""
    name: str
    op: str
    phase: str
    flops: int
    bytes_read: int
    bytes_written: int
    t_compute: float     # flops / peak
    t_memory: float      # bytes / bandwidth

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved; inf for an op that moves nothing."""
        return self.flops / self.bytes if self.bytes else math.inf

    @property
    def time(self) -> float:
        return max(self.t_compute, self.t_memory)

    @property
    def bound(self) -> str:
        return COMPUTE if self.t_compute > self.t_memory else MEMORY

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes": self.bytes, "intensity": finite_or_none(self.intensity), "time": self.time,
                "bound": self.bound}


@dataclass(frozen=True)
class Group:
    """Totals of a group of ops (a phase, an op kind). `compute_share`: fraction of the predicted time spent in
    compute-bound ops. `bound` of a group: "compute" when most of its time is compute-bound."""
    key: str
    flops: int
    bytes: int
    time: float
    t_compute: float     # Σ flops/peak over the group, whatever each op's bound
    t_memory: float      # Σ bytes/bandwidth
    compute_time: float  # Σ time of the compute-bound ops
    n_ops: int

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf

    @property
    def compute_share(self) -> float:
        return self.compute_time / self.time if self.time else 0.0

    @property
    def bound(self) -> str:
        return COMPUTE if self.compute_share > 0.5 else MEMORY

    def to_dict(self) -> dict:
        return {**asdict(self), "intensity": finite_or_none(self.intensity), "compute_share": self.compute_share,
                "bound": self.bound}


def _group(key: str, ops: Iterable[OpTime]) -> Group:
    ops = list(ops)
    return Group(key, sum(o.flops for o in ops), sum(o.bytes for o in ops), sum(o.time for o in ops),
                 sum(o.t_compute for o in ops), sum(o.t_memory for o in ops),
                 sum(o.time for o in ops if o.bound == COMPUTE), len(ops))


@dataclass(frozen=True)
class Roofline:
    """Op costs placed on one chip's roofline: per-op times, and sums per phase and per op kind."""
    hardware: Hardware
    dtype: str           # the hardware's dtype key whose peak is used ("bf16", "fp32", ...)
    peak: float          # FLOP/s
    bandwidth: float     # bytes/s
    ops: tuple[OpTime, ...]

    @property
    def ridge(self) -> float:
        return self.peak / self.bandwidth

    @property
    def time(self) -> float:
        """Predicted seconds for all the ops: Σ max(flops/peak, bytes/bandwidth)."""
        return sum(o.time for o in self.ops)

    @property
    def flops(self) -> int:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.ops)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf

    def total(self) -> Group:
        return _group("total", self.ops)

    def phases(self) -> dict[str, Group]:
        """{phase: Group} in order of first appearance."""
        return self._by(lambda o: o.phase)

    def by_op(self, phase: str | None = None) -> dict[str, Group]:
        """{op kind: Group} (matmul, attention, softmax, norm, ...), optionally within one phase."""
        return self._by(lambda o: o.op, phase)

    def by_name(self, depth: int | None = None, phase: str | None = None) -> dict[str, Group]:
        """{name: Group}; with depth, names cut to their first `depth` dotted parts."""
        return self._by(lambda o: ".".join(o.name.split(".")[:depth]) if depth else o.name, phase)

    def _by(self, key, phase: str | None = None) -> dict[str, Group]:
        groups: dict[str, list[OpTime]] = {}
        for o in self.ops:
            if phase is None or o.phase == phase:
                groups.setdefault(key(o), []).append(o)
        return {k: _group(k, v) for k, v in groups.items()}

    def table(self, key: str = "op", phase: str | None = None) -> str:
        """A text table per op kind ("op"), per "phase" or per "name", with units."""
        groups = {"op": lambda: self.by_op(phase), "phase": self.phases,
                  "name": lambda: self.by_name(phase=phase)}
        if key not in groups:
            raise ValueError(f"table(key={key!r}): key must be op, phase or name")
        return group_table(list(groups[key]().values()) + [self.total()], key,
                           f"{self.hardware.name}, {self.dtype}: peak {rate(self.peak)}, "
                           f"{fixed(self.bandwidth / 1e9, 1)} GB/s, ridge {self.ridge:,.1f} FLOP/B")

    def to_dict(self) -> dict:
        return {"hardware": self.hardware.name, "dtype": self.dtype, "peak_flops": self.peak,
                "bandwidth": self.bandwidth, "ridge": self.ridge, "time": self.time,
                "phases": {k: g.to_dict() for k, g in self.phases().items()},
                "by_op": {k: g.to_dict() for k, g in self.by_op().items()},
                "ops": [o.to_dict() for o in self.ops]}


# ---- number formatting for the text tables (JSON keeps the raw numbers) --------------------------------------

FLOP_UNITS = (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3), ("FLOP", 1.0))
BYTE_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0))
TIME_UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))


def pick_unit(largest: float, units: tuple[tuple[str, float], ...]) -> tuple[str, float]:
    """The largest unit in which `largest` is at least 1 (units from large to small): 19,070 µs reads 19.070 ms."""
    for name, scale in units:
        if abs(largest) >= scale:
            return name, scale
    return units[-1]


def fixed(x: float, decimals: int = 3) -> str:
    """Fixed decimals with thousands separators, never scientific notation: 12,950.123, 0.005; a positive value
    that would round to zero prints as "<0.001" (0 itself as "0"), an infinite one as "inf"."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    smallest = 10.0 ** -decimals
    if abs(x) < smallest / 2:
        return ("<" if x > 0 else ">-") + f"{smallest:.{decimals}f}"
    return f"{x:,.{decimals}f}"


def rate(flops_per_s: float) -> str:
    """A peak in the unit that suits it: "989.4 TFLOP/s", "51.2 GFLOP/s"."""
    unit, scale = pick_unit(flops_per_s, FLOP_UNITS)
    return f"{fixed(flops_per_s / scale, 1)} {unit}/s"


def group_table(groups: list[Group], key: str, title: str) -> str:
    """Groups as a text table. The units are chosen per table from the last row (the total, as the callers
    pass it): TFLOP or GFLOP or MFLOP, GB or MB or kB, ms or µs; every number with fixed decimals."""
    last = groups[-1] if groups else None
    f_unit, f_scale = pick_unit(last.flops if last else 0, FLOP_UNITS)
    b_unit, b_scale = pick_unit(last.bytes if last else 0, BYTE_UNITS)
    t_unit, t_scale = pick_unit(max((g.time for g in groups), default=0.0), TIME_UNITS[1:])
    head = (f"{key:<20} {f_unit:>12} {b_unit + ' moved':>12} {'FLOP/B':>9} {'compute ' + t_unit:>12} "
            f"{'memory ' + t_unit:>12} {'roofline ' + t_unit:>13} {'bound':>8}")
    decimal = {"TB": "1e12", "GB": "1e9", "MB": "1e6", "kB": "1e3"}
    units = f"; {b_unit} = {decimal[b_unit]} bytes" if b_unit in decimal else ""
    lines = [title, f"(times: compute = FLOPs/peak, memory = bytes/bandwidth, roofline = Σ per-op max{units})",
             head, "-" * len(head)]
    for g in groups:
        ai = f"{fixed(g.intensity, 2):>9}" if g.bytes else f"{'-':>9}"
        lines.append(f"{g.key:<20} {fixed(g.flops / f_scale):>12} {fixed(g.bytes / b_scale):>12} {ai} "
                     f"{fixed(g.t_compute / t_scale):>12} {fixed(g.t_memory / t_scale):>12} "
                     f"{fixed(g.time / t_scale):>13} {g.bound:>8}")
    return "\n".join(lines)


def _records(costs: Any) -> list:
    """Op costs from a Counter, a {name: OpCost} dict, a {phase: {name: OpCost}} dict, or an iterable."""
    if isinstance(costs, Counter):
        return list(costs.records)
    if isinstance(costs, Mapping):
        out = []
        for key, v in costs.items():
            if isinstance(v, Mapping):
                out.extend((key, c) for c in v.values())   # (phase, cost) from {phase: {name: cost}}
            else:
                out.append(v)
        return out
    return list(costs)


def analyze(costs: Any, hardware: "str | Hardware", dtype: Any = "bf16", phase: str | None = None) -> Roofline:
    """Place op costs on the roofline of `hardware` computing in `dtype`.

    costs     a Counter, `Counter.records`, a {name: OpCost} dict (formulas.prefill / decode_step), or a list
              of any objects with name, op, flops, bytes_read, bytes_written
    phase     the phase to file costs under when they carry none (OpCosts); a Record's own phase wins
    """
    hw = get_hardware(hardware)
    key = hw_dtype(dtype)
    peak, bandwidth = hw.peak(key), hw.bandwidth
    ops = []
    for item in _records(costs):
        own_phase, cost = item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) \
            else (None, item)
        try:
            flops, read, written = int(cost.flops), int(cost.bytes_read), int(cost.bytes_written)
            name, op = str(cost.name), str(cost.op)
        except AttributeError as e:
            raise TypeError(f"op costs need name, op, flops, bytes_read, bytes_written; {cost!r} has not: {e}") \
                from None
        if flops < 0 or read < 0 or written < 0:
            raise ValueError(f"op {name!r} has negative FLOPs or bytes")
        ph = getattr(cost, "phase", None) or own_phase or phase or "-"
        ops.append(OpTime(name, op, ph, flops, read, written, flops / peak, (read + written) / bandwidth))
    return Roofline(hw, key, peak, bandwidth, tuple(ops))


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ==============================================================================================================
# The classic whole-step forms

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
    """
    hw = get_hardware(hardware)
    name = dtype_name(dtype)
    B = positive_int("batch", batch)
    S = positive_int("context", context, 0)
    if embedding not in EMBEDDING_CONVENTIONS:
        raise ValueError(f"embedding={embedding!r} must be one of {EMBEDDING_CONVENTIONS}")
    s = formulas.itemsize(name)
    P = formulas.num_params(cfg)
    if embedding == "read":
        weight_bytes = P * s
    else:
        weight_bytes = (P - _gathered_params(cfg) + B * _gathered_rows(cfg) * cfg.d_model) * s
    kv = formulas.kv_bytes_per_token(cfg, name) * S * B       # S = 0: an empty cache reads nothing
    flops = 2 * B * P
    return DecodeFloor(B, S, weight_bytes, kv, flops, weight_bytes / hw.bandwidth, kv / hw.bandwidth,
                       flops / hw.peak(hw_dtype(name)), embedding)


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
                   pair); full: 4 · L · NH·HS · T² (minitx's count and PaLM's: the whole rectangle); none: 0

    Assumptions: compute-bound (T far above the ridge); weights read once (t_weights is reported, and the
    time is max(t_compute, t_weights)); the LM head runs on all T tokens (2·P counts it per token) though a
    server needs only the last row; softmax, norms, activations left out.
    """
    hw = get_hardware(hardware)
    name = dtype_name(dtype)
    B = positive_int("batch", batch)
    T = positive_int("tokens", tokens)
    if attention not in ATTENTION_CONVENTIONS:
        raise ValueError(f"attention={attention!r} must be one of {ATTENTION_CONVENTIONS}")
    P = formulas.num_params(cfg)
    P_flop = P if embedding_flops else P - _gathered_params(cfg)
    pairs = {"causal": T * (T + 1) // 2, "full": T * T, "none": 0}[attention]
    attn = 4 * cfg.n_layers * cfg.q_dim * pairs * B
    linear = 2 * P_flop * B * T
    weight_bytes = P * formulas.itemsize(name)
    return PrefillFloor(B, T, linear, attn, weight_bytes, (linear + attn) / hw.peak(hw_dtype(name)),
                        weight_bytes / hw.bandwidth, bool(embedding_flops), attention)


@dataclass(frozen=True)
class CriticalBatch:
    """Where decode turns compute-bound. `analytic` = ridge · itemsize / 2: a weights-only step does 2·B FLOPs
    per parameter and reads itemsize bytes of it, intensity 2·B/itemsize (= B in bf16), which reaches the
    ridge at B = ridge · itemsize / 2. `from_ops`: the smallest batch at which the decode step's matmuls
    (formulas' op costs: weights AND activations moved) spend more time computing than moving bytes."""
    ridge: float
    itemsize: int
    analytic: float
    from_ops: int | None     # None: never within 2**24 sequences
    context: int

    def to_dict(self) -> dict:
        return asdict(self)


def _matmul_balance(cfg: Config, hw: Hardware, name: str, B: int, context: int) -> float:
    """Σ flops/peak − Σ bytes/bandwidth over the matmul ops of one decode step."""
    peak = hw.peak(hw_dtype(name))
    ops = [c for c in formulas.decode_step(cfg, B, context, name).values() if c.op == "matmul"]
    return sum(c.flops for c in ops) / peak - sum(c.bytes for c in ops) / hw.bandwidth


def critical_batch(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", context: int = 0) -> CriticalBatch:
    """The decode batch at which the weight matmuls turn compute-bound (see CriticalBatch). Attention is left
    out: at decode it reads B·context KV rows for 4·B·context·HS·NH FLOPs, intensity ≈ NH/KV·(2/itemsize),
    memory-bound at any batch, so it never turns."""
    hw = get_hardware(hardware)
    name = dtype_name(dtype)
    s = formulas.itemsize(name)
    ridge = hw.ridge(hw_dtype(name))
    lo, hi = 1, 1
    found = None
    if _matmul_balance(cfg, hw, name, 1, context) >= 0:
        found = 1
    else:
        while hi < 2 ** 24 and _matmul_balance(cfg, hw, name, hi, context) < 0:
            lo, hi = hi, hi * 2
        if _matmul_balance(cfg, hw, name, hi, context) >= 0:
            while hi - lo > 1:                       # invariant: lo is memory-bound, hi compute-bound
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _matmul_balance(cfg, hw, name, mid, context) < 0 else (lo, mid)
            found = hi
    return CriticalBatch(ridge, s, ridge * s / 2, found, context)


def memory_needed(cfg: Config, dtype: Any, batch: int, context: int) -> int:
    """Weights + KV cache for `batch` sequences of `context` tokens, bytes. Activations are left out (one
    layer's worth, small next to these at serving sizes)."""
    name = dtype_name(dtype)
    B, S = positive_int("batch", batch), positive_int("context", context, 0)
    return formulas.param_bytes(cfg, name) + formulas.kv_bytes_per_token(cfg, name) * S * B


def max_batch(cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", context: int = 2048) -> int:
    """The largest batch whose KV cache (context tokens per sequence) fits in the chip's memory next to the
    weights: floor((memory − P·itemsize) / (context · KV bytes per token)). 0 if the weights alone don't fit."""
    hw = get_hardware(hardware)
    name = dtype_name(dtype)
    S = positive_int("context", context)
    free = hw.memory - formulas.param_bytes(cfg, name)
    if free < 0:
        return 0
    return int(free // formulas.kv_cache_bytes(cfg, 1, S, name))
