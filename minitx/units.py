"""Numbers for people, written once: every table and command prints through these. JSON keeps raw numbers.

Units are decimal, as datasheets use them: kB = 1e3 bytes, GB = 1e9, TFLOP = 1e12 FLOPs; binary ones (KiB, GiB =
2**30 bytes, 7.4% more than a GB) are printed beside them where memory is concerned.
"""
from __future__ import annotations

import math

FLOP_UNITS = (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3), ("FLOP", 1.0))
BYTE_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0))
TIME_UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))
COUNT_UNITS = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0))
_BINARY = {"TB": (2**40, "TiB"), "GB": (2**30, "GiB"), "MB": (2**20, "MiB"), "kB": (2**10, "KiB")}


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


def scaled(x: float, units: tuple[tuple[str, float], ...], decimals: int = 2, sep: str = " ") -> str:
    """`x` in the unit that suits it: scaled(1.3e12, FLOP_UNITS) -> "1.30 TFLOP"."""
    unit, scale = pick_unit(x, units)
    return f"{x / scale:.{decimals}f}{sep}{unit}".rstrip()


def rate(flops_per_s: float) -> str:
    """A peak in the unit that suits it: "989.4 TFLOP/s", "51.2 GFLOP/s"."""
    unit, scale = pick_unit(flops_per_s, FLOP_UNITS)
    return f"{fixed(flops_per_s / scale, 1)} {unit}/s"


def human_bytes(n: float) -> str:
    """'13.48 GB = 12.55 GiB': decimal and binary units side by side."""
    unit, scale = pick_unit(n, BYTE_UNITS)
    if unit == "B":
        return f"{n:.0f} B"
    binary, bname = _BINARY[unit]
    return f"{n / scale:.2f} {unit} = {n / binary:.2f} {bname}"


def human_count(n: float) -> str:
    """'2.51B' (B = 1e9), '124.44M'."""
    return scaled(n, COUNT_UNITS, sep="") if abs(n) >= 1e3 else f"{n:.0f}"


def human_flops(n: float) -> str:
    """'1.23 TFLOP'."""
    return scaled(n, FLOP_UNITS) if abs(n) >= 1e3 else f"{n:.0f} FLOP"


def finite_or_none(x: float) -> float | None:
    """JSON has no inf or NaN: they print as null."""
    return x if math.isfinite(x) else None
