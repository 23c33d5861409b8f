"""Counting what actually runs: every op records its FLOPs, MACs and bytes, taken from the arrays it was given.

    with minitx.count() as c:
        loss, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
    c.flops, c.macs, c.bytes_read, c.bytes_written
    c.by("phase")      # {"forward": Totals, "backward": Totals, "optimizer": Totals}
    c.by("name")       # {"layers.0.attn.qkv": Totals, ...}
    c.filter("layers.0.attn")  # one block, as a Counter
    print(c.table())

The conventions (what one FLOP is, what a byte read is) are in `minitx.conventions`; this module only collects.
Each record carries a phase ("forward", "backward", "optimizer", "prefill", "decode"), a hierarchical name that
matches the breakdown in `minitx.formulas`, an op kind, and the bytes read and written per category
("weights", "activations", "kv_cache", "gradients", "optimizer_state").

Ops ask `counting()` before they work out their cost, so outside any `count()` block an uncounted model does
no counting work at all beyond that one test per op call.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import numpy as np

PHASES = ("forward", "backward", "optimizer", "prefill", "decode")
CATEGORIES = ("weights", "activations", "kv_cache", "gradients", "optimizer_state")
OPS = ("matmul", "attention", "softmax", "norm", "activation", "elementwise", "rope", "layout", "embedding",
       "loss", "optimizer")


class Record(NamedTuple):
    """One op call. `reads`/`writes` are ((category, bytes), ...) pairs, one per category."""
    phase: str
    name: str
    op: str
    flops: int
    macs: int
    reads: tuple[tuple[str, int], ...]
    writes: tuple[tuple[str, int], ...]

    @property
    def bytes_read(self) -> int:
        return sum(n for _, n in self.reads)

    @property
    def bytes_written(self) -> int:
        return sum(n for _, n in self.writes)


@dataclass
class Totals:
    """Sums over a group of records. `intensity` is FLOPs per byte moved (reads + writes)."""
    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    calls: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    def to_dict(self) -> dict:
        return dict(flops=self.flops, macs=self.macs, bytes_read=self.bytes_read,
                    bytes_written=self.bytes_written, calls=self.calls)


# The active counters (innermost last) and the current phase. Module state keeps `record` cheap; minitx is
# single-threaded at the Python level, so no locking is needed.
_active: list["Counter"] = []
_phase: list[str] = ["forward"]


def record(name: str, op: str, flops: int, macs: int = 0,
           reads: Iterable[tuple[str, int]] = (), writes: Iterable[tuple[str, int]] = ()) -> None:
    """Called by every op with its cost. Costs nothing measurable when no counter is active."""
    if not _active:
        return
    rec = Record(_phase[-1], name, op, int(flops), int(macs), _merge(reads), _merge(writes))
    for counter in _active:
        counter.records.append(rec)


def _merge(pairs: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """((category, bytes), ...) with repeated categories added up and zeros dropped."""
    totals: dict[str, int] = {}
    for cat, n in pairs:
        if n:
            totals[cat] = totals.get(cat, 0) + int(n)
    return tuple(totals.items())


def counting() -> bool:
    """True inside a `count()` block: ops may skip work that only serves the counter (e.g. a data-dependent sum)."""
    return bool(_active)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Label every record made inside the block with this phase (the model and decoder set it)."""
    if name not in PHASES:
        raise ValueError(f"phase {name!r} is unknown; phases: {', '.join(PHASES)}")
    _phase.append(name)
    try:
        yield
    finally:
        _phase.pop()


def nbytes(*arrays: np.ndarray) -> int:
    """Bytes of the given arrays as the kernel sees them (size x itemsize, whatever the strides)."""
    return sum(a.size * a.itemsize for a in arrays)


class Counter:
    """Collects the records of everything run while it is active. Use through `count()`."""

    def __init__(self, records: list[Record] | None = None):
        self.records: list[Record] = [] if records is None else records

    def __enter__(self) -> "Counter":
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)

    def reset(self) -> None:
        self.records.clear()

    # Totals -----------------------------------------------------------------------------------------------
    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.records)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.records)

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.records)

    @property
    def bytes_written(self) -> int:
        return sum(r.bytes_written for r in self.records)

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    def totals(self) -> Totals:
        t = Totals()
        for r in self.records:
            _add(t, r)
        return t

    def by(self, key: str) -> dict[str, Totals]:
        """Totals per phase, op, name or category (for category, only bytes are meaningful: FLOPs stay 0)."""
        if key == "category":
            out: dict[str, Totals] = {}
            for r in self.records:
                for cat, n in r.reads:
                    out.setdefault(cat, Totals()).bytes_read += n
                for cat, n in r.writes:
                    out.setdefault(cat, Totals()).bytes_written += n
            return out
        if key not in ("phase", "op", "name"):
            raise ValueError(f"by(key={key!r}): key must be one of phase, op, name, category")
        groups: dict[str, Totals] = {}
        for r in self.records:
            _add(groups.setdefault(getattr(r, key), Totals()), r)
        return groups

    def bytes_by_category(self, direction: str = "read") -> dict[str, int]:
        """{category: bytes} read (or written): the numbers the byte formulas predict."""
        if direction not in ("read", "written"):
            raise ValueError("direction must be 'read' or 'written'")
        return {cat: (t.bytes_read if direction == "read" else t.bytes_written)
                for cat, t in self.by("category").items()}

    def filter(self, prefix: str | None = None, *, phase: str | None = None, op: str | None = None) -> "Counter":
        """A new Counter holding the records whose name is `prefix` or starts with `prefix.`, and/or whose
        phase/op match. `c.filter("layers.3")` is one block; `c.filter(phase="backward")` one phase."""
        def keep(r: Record) -> bool:
            if prefix is not None and not (r.name == prefix or r.name.startswith(prefix + ".")):
                return False
            return (phase is None or r.phase == phase) and (op is None or r.op == op)
        return Counter([r for r in self.records if keep(r)])

    # Presentation -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: totals, per phase / op / name / category, and the raw records."""
        return {
            "conventions": "2 FLOPs per multiply-add; see minitx.conventions",
            "totals": self.totals().to_dict(),
            "by_phase": {k: v.to_dict() for k, v in self.by("phase").items()},
            "by_op": {k: v.to_dict() for k, v in self.by("op").items()},
            "by_name": {k: v.to_dict() for k, v in self.by("name").items()},
            "by_category": {k: {"bytes_read": v.bytes_read, "bytes_written": v.bytes_written}
                            for k, v in self.by("category").items()},
            "records": [r._asdict() for r in self.records],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self, key: str = "name", depth: int | None = None) -> str:
        """A text table of totals per `key` (name, phase, op, category). With key="name", `depth` truncates
        names to their first `depth` parts (depth=1: embed, layers, ln_f, lm_head, loss, adamw)."""
        if key == "name" and depth is not None:
            groups: dict[str, Totals] = {}
            for r in self.records:
                _add(groups.setdefault(".".join(r.name.split(".")[:depth]), Totals()), r)
        else:
            groups = self.by(key)
        rows = [(k, t) for k, t in groups.items()]
        head = f"{key:<28} {'FLOPs':>16} {'MACs':>16} {'bytes read':>14} {'bytes written':>14} {'FLOP/B':>8}"
        lines = ["(2 FLOPs per multiply-add; bytes: each operand read once, each output written once per call)",
                 head, "-" * len(head)]
        for k, t in rows:
            ai = f"{t.intensity:8.2f}" if t.bytes else "       -"
            lines.append(f"{k:<28} {t.flops:>16,} {t.macs:>16,} {t.bytes_read:>14,} {t.bytes_written:>14,} {ai}")
        tot = self.totals()
        lines.append("-" * len(head))
        lines.append(f"{'total':<28} {tot.flops:>16,} {tot.macs:>16,} {tot.bytes_read:>14,} "
                     f"{tot.bytes_written:>14,} {tot.intensity:8.2f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Counter(records={len(self.records)}, flops={self.flops:,}, macs={self.macs:,}, "
                f"bytes_read={self.bytes_read:,}, bytes_written={self.bytes_written:,})")


def _add(t: Totals, r: Record) -> None:
    t.flops += r.flops
    t.macs += r.macs
    t.bytes_read += r.bytes_read
    t.bytes_written += r.bytes_written
    t.calls += 1


def count() -> Counter:
    """`with minitx.count() as c:` collects everything run inside the block. Counters nest: an outer counter
    also sees what an inner one sees."""
    return Counter()
