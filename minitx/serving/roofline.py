"""The roofline model: counted FLOPs and bytes, turned into time on given hardware.

One op that does F FLOPs and moves M bytes (read + written) cannot finish faster than either

    T_math  = F / peak         (the chip's dense FLOP/s for the dtype the op computes in)
    T_bytes = M / bandwidth    (DRAM bytes per second)

so its predicted time is max(T_math, T_bytes). Which term wins depends on the op's arithmetic intensity F / M
against the chip's ridge point peak / bandwidth: above the ridge the op is compute-bound, below it memory-bound.
A phase (prefill, one decode step) is predicted as the SUM over its ops of that max: each minitx op is one trip
to memory and back (the fused attention kernel is one op; minitx.accounting.conventions), so they do not overlap.
The Scaling Book calls max(T_math, T_bytes) the lower bound and T_math + T_bytes the upper one; the prediction
here is the lower bound of the implementation counted, op by op.

Where the op costs come from: a Ledger of Records, either a `minitx.count()` block (what really ran) or a
`minitx.formulas` result (what would run: `formulas.prefill`, `formulas.decode_step`, no allocation, so a 70B
model answers at once). Each record keeps the phase it was filed under.

    rl = roofline.analyze(formulas.decode_step(cfg, 1, 1000, "bfloat16"), "h100", "bf16")
    rl.time, rl.phases()["decode"].intensity, rl.table("op")

The whole-step forms (decode and prefill floors, the critical batch, the largest batch that fits) and the
serving figures built on this (TTFT, TPOT, tokens/s as batch size grows) are in `minitx.serving`; the same
predictions set against timings on this CPU are in `minitx.measured`.

Units: seconds, bytes, FLOPs; GB = 1e9 bytes. `dtype` is the format the ops compute in, whose peak applies: any
spelling `minitx.dtypes` knows ("bf16", "bfloat16", "int8" for int8 operations at the chip's int8 peak), or a
`minitx.dtypes.Precision`, whose activations' format is the one its matmuls compute in (int8 weights with bf16
activations: the bf16 peak). `minitx.serving` passes the latter.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .. import dtypes
from ..accounting.ledger import Ledger, Record
from ..units import BYTE_UNITS, FLOP_UNITS, TIME_UNITS, finite_or_none, fixed, pick_unit, rate
from .hardware import Hardware, get as get_hardware

COMPUTE, MEMORY = "compute", "memory"


# ==============================================================================================================
# Op by op

@dataclass(frozen=True)
class Group:
    """A group of ops on the roofline (one op, a phase, an op kind). Times in seconds. `compute_share`: fraction
    of the predicted time spent in compute-bound ops; `bound`: "compute" when most of the time is."""
    key: str
    flops: int
    bytes: int
    time: float          # Σ over the ops of max(t_compute, t_memory)
    t_compute: float     # Σ flops/peak over the group, whatever each op's bound
    t_memory: float      # Σ bytes/bandwidth
    compute_time: float  # Σ time of the compute-bound ops
    n_ops: int

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved; inf for ops that move nothing."""
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


@dataclass(frozen=True)
class Roofline:
    """Op costs (a Ledger) placed on one chip's roofline: per-op times, and sums per phase, op kind or name."""
    hardware: Hardware
    dtype: str           # the hardware's dtype key whose peak is used ("bf16", "fp32", ...)
    peak: float          # FLOP/s
    bandwidth: float     # bytes/s
    records: Ledger

    @property
    def ridge(self) -> float:
        return self.peak / self.bandwidth

    def group(self, key: str, records) -> Group:
        tc = [r.flops / self.peak for r in records]
        tm = [r.bytes / self.bandwidth for r in records]
        t = [max(c, m) for c, m in zip(tc, tm)]
        return Group(key, sum(r.flops for r in records), sum(r.bytes for r in records), sum(t), sum(tc), sum(tm),
                     sum(x for x, c, m in zip(t, tc, tm) if c > m), len(tc))

    @property
    def ops(self) -> tuple[Group, ...]:
        """One Group per op call, in order."""
        return tuple(self.group(r.name, [r]) for r in self.records)

    def total(self) -> Group:
        return self.group("total", self.records)

    @property
    def time(self) -> float:
        """Predicted seconds for all the ops: Σ max(flops/peak, bytes/bandwidth)."""
        return self.total().time

    @property
    def flops(self) -> int:
        return self.records.flops

    @property
    def bytes(self) -> int:
        return self.records.bytes

    @property
    def intensity(self) -> float:
        return self.records.intensity

    def phases(self) -> dict[str, Group]:
        """{phase: Group} in order of first appearance."""
        return self.by("phase")

    def by_op(self, phase: str | None = None) -> dict[str, Group]:
        """{op kind: Group} (matmul, attention, softmax, norm, ...), optionally within one phase."""
        return self.by("op", phase)

    def by(self, key: str, phase: str | None = None, depth: int | None = None) -> dict[str, Group]:
        """{phase, op kind or name: Group}, optionally within one phase (names cut to `depth` parts)."""
        return {k: self.group(k, g) for k, g in self.records.filter(phase=phase).by(key, depth).items()}

    def table(self, key: str = "op", phase: str | None = None) -> str:
        """A text table per op kind ("op"), per "phase" or per "name", with units."""
        if key not in ("op", "phase", "name"):
            raise ValueError(f"table(key={key!r}): key must be op, phase or name")
        return group_table(list(self.by(key, phase).values()) + [self.total()], key,
                           f"{self.hardware.name}, {self.dtype}: peak {rate(self.peak)}, "
                           f"{fixed(self.bandwidth / 1e9, 1)} GB/s, ridge {self.ridge:,.1f} FLOP/B")

    def to_dict(self) -> dict:
        return {"hardware": self.hardware.name, "dtype": self.dtype, "peak_flops": self.peak,
                "bandwidth": self.bandwidth, "ridge": self.ridge, "time": self.time,
                "phases": {k: g.to_dict() for k, g in self.phases().items()},
                "by_op": {k: g.to_dict() for k, g in self.by_op().items()}}


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


def analyze(costs: Iterable[Record], hardware: "str | Hardware", dtype: Any = "bf16") -> Roofline:
    """Place op costs on the roofline of `hardware` computing in `dtype`.

    costs     a Ledger: a Counter (what ran) or a formulas result (what would run), or any Records
    dtype     the format the ops compute in (its peak is used), or a Precision (its activations' format)
    """
    hw = get_hardware(hardware)
    key = dtypes.short(dtype.activations if isinstance(dtype, dtypes.Precision) else dtype)
    records = Ledger(costs)
    for r in records:
        if not isinstance(r, Record):
            raise TypeError(f"op costs must be minitx Records (a Ledger: a Counter or a formulas result), "
                            f"got {type(r).__name__}")
        if r.flops < 0 or r.bytes_read < 0 or r.bytes_written < 0:
            raise ValueError(f"op {r.name!r} has negative FLOPs or bytes")
    return Roofline(hw, key, hw.peak(key), hw.bandwidth, records)
