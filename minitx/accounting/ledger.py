"""The one cost type: a `Record` of what one op call costs, and a `Ledger` of records that sums and groups them.

Both sources of minitx's numbers write records of this one type. The counters (`minitx.count()`) append a record
each time an op runs, from the arrays it was handed; the closed forms (`minitx.formulas`) return a Ledger of the
records the same calls would make, from the configuration alone. So the same questions work on both:

    ledger.flops, .macs, .bytes_read, .bytes_written, .reads["kv_cache"]     totals
    ledger.by("phase")["backward"].flops                                      groups (each a Ledger)
    ledger.filter("layers.0.attn", op="attention")                            a sub-ledger
    ledger.totals()                                                           the sum, as one Record
    print(ledger.table(key="op"))

A record carries: a hierarchical `name` ("layers.3.mlp.up") that both sources spell the same way, the op kind, the
FLOPs (2 per multiply-add) and MACs, the bytes read and written per category, and the phase it belongs to
("forward", "backward", "optimizer", "prefill", "decode"). What those numbers mean is `minitx.conventions`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping

PHASES = ("forward", "backward", "optimizer", "prefill", "decode")
CATEGORIES = ("weights", "activations", "kv_cache", "gradients", "optimizer_state")
OPS = ("matmul", "attention", "softmax", "norm", "activation", "elementwise", "rope", "layout", "embedding",
       "loss", "optimizer")
KEYS = ("phase", "op", "name")


@dataclass(frozen=True)
class Record:
    """What one op call costs. `reads`/`writes`: {category: bytes}, categories with 0 bytes left out."""
    name: str
    op: str
    flops: int
    macs: int = 0
    reads: Mapping[str, int] = field(default_factory=dict)
    writes: Mapping[str, int] = field(default_factory=dict)
    phase: str | None = None

    @property
    def bytes_read(self) -> int:
        return sum(self.reads.values())

    @property
    def bytes_written(self) -> int:
        return sum(self.writes.values())

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (read + written); inf for an op that moves nothing."""
        return self.flops / self.bytes if self.bytes else float("inf")

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "phase": self.phase, "flops": self.flops, "macs": self.macs,
                "reads": dict(self.reads), "writes": dict(self.writes)}


def _by_category(pairs: Iterable[tuple[str, int]]) -> Mapping[str, int]:
    """{category: bytes} from (category, bytes) pairs: repeated categories add up, zeros are dropped."""
    out: dict[str, int] = {}
    for category, n in pairs:
        if n:
            out[category] = out.get(category, 0) + int(n)
    return MappingProxyType(out)


def make(name: str, op: str, flops: int, macs: int = 0, reads: Iterable[tuple[str, int]] = (),
         writes: Iterable[tuple[str, int]] = (), phase: str | None = None) -> Record:
    """A Record from (category, bytes) pairs: how every op and every formula spells its cost."""
    return Record(name, op, int(flops), int(macs), _by_category(reads), _by_category(writes), phase)


class Ledger:
    """An ordered collection of Records, with their sums, groups and tables."""

    def __init__(self, records: Iterable[Record] = ()):
        self.records: list[Record] = list(records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __add__(self, other: "Ledger") -> "Ledger":
        return Ledger(self.records + list(other))

    def __getitem__(self, name: str) -> Record:
        """The records named `name`, summed: `ledger["layers.0.attn.qkv"].macs`."""
        group = Ledger(r for r in self.records if r.name == name)
        if not group.records:
            raise KeyError(name)
        return group.totals(name)

    def __contains__(self, name: str) -> bool:
        return any(r.name == name for r in self.records)

    def __eq__(self, other: object) -> bool:
        """Two ledgers are equal when they hold equal records in the same order."""
        return isinstance(other, Ledger) and self.records == other.records

    @property
    def names(self) -> list[str]:
        """Record names in order of first appearance."""
        return list(dict.fromkeys(r.name for r in self.records))

    # ---- totals --------------------------------------------------------------------------------------------
    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.records)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.records)

    @property
    def reads(self) -> Mapping[str, int]:
        """{category: bytes read}: the numbers the byte formulas predict per category."""
        return _by_category((c, n) for r in self.records for c, n in r.reads.items())

    @property
    def writes(self) -> Mapping[str, int]:
        return _by_category((c, n) for r in self.records for c, n in r.writes.items())

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.records)

    @property
    def bytes_written(self) -> int:
        return sum(r.bytes_written for r in self.records)

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    def totals(self, name: str = "total") -> Record:
        """Everything summed into one Record (its op and phase kept when all records share them)."""
        ops = {r.op for r in self.records}
        phases = {r.phase for r in self.records}
        return Record(name, ops.pop() if len(ops) == 1 else "mixed", self.flops, self.macs, self.reads,
                      self.writes, phases.pop() if len(phases) == 1 else None)

    # ---- groups --------------------------------------------------------------------------------------------
    def by(self, key: str, depth: int | None = None) -> dict[str, "Ledger"]:
        """{value: Ledger} per phase, op or name, in order of first appearance. With key="name", `depth` cuts
        names to their first `depth` dotted parts (depth=1: embed, layers, ln_f, lm_head, loss, adamw)."""
        if key not in KEYS:
            raise ValueError(f"by(key={key!r}): key must be one of {', '.join(KEYS)}")
        groups: dict[str, Ledger] = {}
        for r in self.records:
            value = getattr(r, key)
            if key == "name" and depth is not None:
                value = ".".join(value.split(".")[:depth])
            groups.setdefault(value, Ledger()).records.append(r)
        return groups

    def filter(self, prefix: str | None = None, *, phase: str | None = None, op: str | None = None) -> "Ledger":
        """The records whose name is `prefix` or starts with `prefix.` ("layers.1" is not "layers.10"), and/or
        whose phase and op match: `filter("layers.3")` is one block, `filter(phase="backward")` one phase."""
        def keep(r: Record) -> bool:
            if prefix is not None and not (r.name == prefix or r.name.startswith(prefix + ".")):
                return False
            return (phase is None or r.phase == phase) and (op is None or r.op == op)
        return Ledger(r for r in self.records if keep(r))

    def with_phase(self, phase: str) -> "Ledger":
        """The same records filed under `phase` (the formulas file each pass under the phase it runs in)."""
        return Ledger(Record(r.name, r.op, r.flops, r.macs, r.reads, r.writes, phase) for r in self.records)

    def summary_by(self, key: str) -> dict[str, Record]:
        """{value: totals Record} per phase, op or name: how two ledgers are compared, op by op."""
        return {k: g.totals(k) for k, g in self.by(key).items()}

    # ---- presentation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: totals, per phase / op / name / category, and the records themselves."""
        def sums(g: "Ledger") -> dict:
            return {"flops": g.flops, "macs": g.macs, "bytes_read": g.bytes_read, "bytes_written": g.bytes_written,
                    "calls": len(g)}
        return {"conventions": "2 FLOPs per multiply-add; see minitx.conventions", "totals": sums(self),
                "by_phase": {k: sums(g) for k, g in self.by("phase").items()},
                "by_op": {k: sums(g) for k, g in self.by("op").items()},
                "by_name": {k: sums(g) for k, g in self.by("name").items()},
                "by_category": {c: {"bytes_read": self.reads.get(c, 0), "bytes_written": self.writes.get(c, 0)}
                                for c in CATEGORIES if c in self.reads or c in self.writes},
                "records": [r.to_dict() for r in self.records]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self, key: str = "name", depth: int | None = None) -> str:
        """A text table of totals per `key` (name, phase, op), one row per group and a total."""
        head = f"{key:<28} {'FLOPs':>16} {'MACs':>16} {'bytes read':>14} {'bytes written':>14} {'FLOP/B':>8}"
        lines = ["(2 FLOPs per multiply-add; bytes: each operand read once, each output written once per call)",
                 head, "-" * len(head)]

        def row(label: str, g: "Ledger") -> str:
            ai = f"{g.intensity:8.2f}" if g.bytes else "       -"
            return f"{label:<28} {g.flops:>16,} {g.macs:>16,} {g.bytes_read:>14,} {g.bytes_written:>14,} {ai}"
        lines += [row(k, g) for k, g in self.by(key, depth).items()]
        return "\n".join(lines + ["-" * len(head), row("total", self)])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(records={len(self)}, flops={self.flops:,}, macs={self.macs:,}, "
                f"bytes_read={self.bytes_read:,}, bytes_written={self.bytes_written:,})")
