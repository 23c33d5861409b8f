"""Argument checks, written once: each returns the clean value or raises an error that names the argument and
the allowed range. Every public entry point validates with these before anything is allocated or run (the
Numba kernels index without bounds checks, so nothing unchecked may reach them).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable


# The largest size any argument may have: beyond 2**53 an integer is no longer exact as a float, and the times,
# bytes and ratios minitx derives from sizes are floats. Real models are nowhere near it (2**53 ≈ 9e15).
MAX_SIZE = 2 ** 53


def integer(arg: str, value: Any, lowest: int = 1, highest: int = MAX_SIZE) -> int:
    """`value` as an int if it is an integer in [lowest, highest] (NumPy integers included, bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lowest <= value <= highest:
        what = ("a positive integer" if lowest == 1 else f"an integer >= {lowest}") if highest == MAX_SIZE else \
            f"an integer in [{lowest}, {highest}]"
        shown = repr(value) if len(repr(value)) < 40 else repr(value)[:20] + "..."
        raise ValueError(f"{arg}={shown} must be {what}" + (" no larger than 2**53" if highest == MAX_SIZE and
                                                             isinstance(value, numbers.Integral) and
                                                             value > highest else ""))
    return int(value)


def number(arg: str, value: Any, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a finite real number in the given range (bounds optional, open or closed)."""
    try:                                              # an int of 400 digits is a Real, but overflows a float
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            where = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            where = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            where = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            where = "a finite number"
        shown = repr(value) if len(repr(value)) < 40 else repr(value)[:20] + "..."
        raise ValueError(f"{arg} must be {where}, got {shown}")
    return float(value)


def positive(arg: str, value: Any) -> float:
    """`value` as a float if it is a finite number > 0 (a price, a rate, a bandwidth)."""
    return number(arg, value, 0.0, low_open=True)


def one_of(arg: str, value: Any, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices` (strings), else a ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{arg}={value!r} is unknown; choose one of {', '.join(choices)}")
    return value


def instance(arg: str, value: Any, cls: type, what: str | None = None) -> Any:
    """`value` if it is an instance of `cls`, else a TypeError naming `arg`."""
    if not isinstance(value, cls):
        raise TypeError(f"{arg} must be {what or 'a ' + cls.__name__}, got {type(value).__name__}")
    return value
