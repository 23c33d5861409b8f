"""Counting what actually runs: every op records its FLOPs, MACs and bytes, taken from the arrays it was given.

    with minitx.count() as c:
        loss, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
    c.flops, c.macs, c.bytes_read, c.bytes_written
    c.by("phase")["backward"].flops      # a Counter is a Ledger (minitx.accounting.ledger): groups, filters,
    c.filter("layers.0.attn").table()    # tables, JSON, exactly as for the formulas' predictions

This module only collects; what one FLOP and one byte are is `minitx.conventions`. Each record is filed under the
phase set by the innermost `phase(...)` block ("forward", "backward", "optimizer", "prefill", "decode").

Counting is per thread: a counter sees the ops run by the thread that entered it, so another thread running an
uncounted model adds nothing to it. Ops ask `counting()` before they work out their cost, so outside any `count()`
block an op does no counting work beyond that one test.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterable, Iterator

import numpy as np

from .ledger import PHASES, Ledger, make


class _State(threading.local):
    """This thread's active counters (innermost last) and its phase stack."""

    def __init__(self):
        self.active: list[Counter] = []
        self.phase: list[str] = ["forward"]


_state = _State()


def counting() -> bool:
    """True inside a `count()` block of this thread: ops may skip work that only serves the counter."""
    return bool(_state.active)


def record(name: str, op: str, flops: int, macs: int = 0, reads: Iterable[tuple[str, int]] = (),
           writes: Iterable[tuple[str, int]] = ()) -> None:
    """Called by every op with its cost, as (category, bytes) pairs. Nothing happens when no counter is active."""
    if not _state.active:
        return
    rec = make(name, op, flops, macs, reads, writes, _state.phase[-1])
    for counter in _state.active:
        counter.records.append(rec)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """File every record made inside the block under this phase (the model and decoder set it)."""
    if name not in PHASES:
        raise ValueError(f"phase {name!r} is unknown; phases: {', '.join(PHASES)}")
    _state.phase.append(name)
    try:
        yield
    finally:
        _state.phase.pop()


def nbytes(*arrays: np.ndarray) -> int:
    """Bytes of the given arrays as the kernel sees them (size × itemsize, whatever the strides)."""
    return sum(a.size * a.itemsize for a in arrays)


class Counter(Ledger):
    """A Ledger that collects the records of everything this thread runs while it is active (`count()`)."""

    def __enter__(self) -> "Counter":
        if any(c is self for c in _state.active):
            raise ValueError("this counter is already active: entering it twice would count everything twice")
        _state.active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        # by identity: two counters holding equal records are equal Ledgers, but not the same counter
        del _state.active[next(i for i, c in enumerate(_state.active) if c is self)]

    def reset(self) -> None:
        self.records.clear()


def count() -> Counter:
    """`with minitx.count() as c:` collects everything run inside the block, in this thread. Counters nest: an
    outer counter also sees what an inner one sees."""
    return Counter()
