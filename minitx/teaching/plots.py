"""Pictures of the roofline: ops placed under a chip's roof, a batch sweep, predicted against measured.

matplotlib is optional (`pip install minitx[plot]`) and imported only when a chart is drawn; without it every
function here raises PlotUnavailable (a ValueError, so the command line turns it into a one-line error, exit 2).
Charts are built on matplotlib's object API (`matplotlib.figure.Figure`), so nothing depends on a display or a
pyplot backend: pass `path` to save a PNG, or show the returned Figure in a notebook.

    roofline_chart({"prefill B=1": rl1, "decode B=64": rl2}, "roofline.png")
    batch_sweep_chart(serving.sweep(cfg, "h100", "bf16", [1, 8, 64, 256]), "sweep.png")
    predicted_vs_measured_chart(measured.measure_inference("reference"), "measured.png")
"""
from __future__ import annotations

import math
from typing import Any, Mapping

INSTALL_HINT = "plots need matplotlib, which is not installed: pip install 'minitx[plot]' (or pip install matplotlib)"


class PlotUnavailable(ValueError):
    """matplotlib is missing."""


def require_matplotlib():
    """The matplotlib.figure module, or PlotUnavailable with the install hint."""
    try:
        from matplotlib import figure
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    return figure


def _figure(width: float = 7.0, height: float = 5.0, ncols: int = 1):
    figure = require_matplotlib()
    fig = figure.Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, path: str | None):
    if path:
        fig.savefig(path, dpi=120)
    return fig


# ---- the roofline chart ----------------------------------------------------------------------------------------

def draw_roofline(ax, rooflines: Mapping[str, Any], by: str = "op") -> None:
    """Draw each chip's roof and place each Roofline's op groups (by op kind, or "phase") on it.

    A point is one group: x = its intensity (FLOPs / byte), y = the FLOP/s the roofline lets it reach
    (FLOPs / predicted time), so every point sits on or under its roof. Groups without FLOPs (embedding gathers,
    layout copies) have intensity 0 and cannot be placed on log axes: they are left out.
    """
    roofs = {}
    for r in rooflines.values():
        roofs[(r.hardware.name, r.dtype)] = (r.peak, r.bandwidth)
    xs = [g.intensity for r in rooflines.values() for g in _groups(r, by).values()
          if g.flops and g.bytes and g.time]
    lo = min(xs + [r.ridge for r in rooflines.values()]) / 4
    hi = max(xs + [r.ridge for r in rooflines.values()]) * 4
    for (name, dtype), (peak, bw) in roofs.items():
        ridge = peak / bw
        grid = [lo, ridge, hi]
        ax.plot(grid, [min(peak, x * bw) for x in grid], color="black", lw=1.5)
        ax.annotate(f"{name} {dtype}: ridge {ridge:,.1f} FLOP/B", (ridge, peak), textcoords="offset points",
                    xytext=(4, 6), fontsize=8)
    markers = "osD^v<>ph*"
    for i, (label, r) in enumerate(rooflines.items()):
        groups = [g for g in _groups(r, by).values() if g.flops and g.bytes and g.time]
        ax.scatter([g.intensity for g in groups], [g.flops / g.time for g in groups],
                   marker=markers[i % len(markers)], label=label, alpha=0.8)
        for g in groups:
            ax.annotate(g.key, (g.intensity, g.flops / g.time), fontsize=6, alpha=0.7,
                        textcoords="offset points", xytext=(3, -8))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)


def _groups(r, by: str):
    return r.phases() if by == "phase" else r.by_op()


def roofline_chart(rooflines: Mapping[str, Any], path: str | None = None, by: str = "op", title: str = ""):
    """A roofline chart of several Roofline results (e.g. prefill and decode at several batch sizes)."""
    fig, ax = _figure()
    draw_roofline(ax, rooflines, by)
    ax.set_title(title or "roofline: op kinds placed under the roof")
    return _save(fig, path)


# ---- the batch sweep -------------------------------------------------------------------------------------------

def draw_batch_sweep(ax, points, label: str = "") -> None:
    """Tokens/s over the batch (left axis) and per-user time per output token (right axis) against batch size.

    `points`: ServingPoints (serving.sweep) or MeasuredPoints (measured.measure_decode_sweep: measured solid,
    predicted dashed)."""
    batches = [p.batch for p in points]
    measured = hasattr(points[0], "measured") if points else False
    if measured:
        tps, tpot = [p.tokens_per_s for p in points], [p.measured * 1e3 for p in points]
        ax.plot(batches, [p.predicted_tokens_per_s for p in points], "C0--", label=f"{label} tokens/s, roofline")
    else:
        tps, tpot = [p.tokens_per_s for p in points], [p.tpot * 1e3 for p in points]
    ax.plot(batches, tps, "C0o-", label=f"{label} tokens/s" + (", measured" if measured else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (sequences decoded together)")
    ax.set_ylabel("decode tokens/s (whole batch)", color="C0")
    twin = ax.twinx()
    twin.plot(batches, tpot, "C3s-", label="time per output token per user")
    if measured:
        twin.plot(batches, [p.predicted * 1e3 for p in points], "C3--", label="TPOT, roofline")
    twin.set_ylabel("time per output token per user (ms)", color="C3")
    twin.set_yscale("log")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)


def batch_sweep_chart(points, path: str | None = None, title: str = ""):
    fig, ax = _figure()
    draw_batch_sweep(ax, points)
    ax.set_title(title or "batching: throughput up, per-user latency up too")
    return _save(fig, path)


# ---- predicted vs measured -------------------------------------------------------------------------------------

def predicted_vs_measured_chart(measurement, path: str | None = None, title: str = ""):
    """Bars of measured and roofline time per (phase, op kind), and per whole phase, on a log scale."""
    fig, ax = _figure(width=9)
    rows = [(f"{ph}\n{op}", c) for (ph, op), c in measurement.ops.items()]
    rows += [(f"{ph}\n(whole)", c) for ph, c in measurement.phases.items()]
    xs = list(range(len(rows)))
    ax.bar([x - 0.2 for x in xs], [c.measured * 1e3 for _, c in rows], width=0.4, label="measured")
    ax.bar([x + 0.2 for x in xs], [c.predicted * 1e3 for _, c in rows], width=0.4, label="roofline")
    for x, (_, c) in zip(xs, rows):
        if c.predicted and math.isfinite(c.factor):
            label = f"{c.factor:,.1f}x" if c.factor < 10 else f"{c.factor:,.0f}x"
            ax.annotate(label, (x, c.measured * 1e3), ha="center", fontsize=6,
                        textcoords="offset points", xytext=(0, 3))
    ax.set_xticks(xs, [k for k, _ in rows], fontsize=6, rotation=90)
    ax.set_yscale("log")
    ax.set_ylabel("ms (decode: per step)")
    ax.legend(fontsize=7)
    ax.set_title(title or f"{measurement.model} on {measurement.hardware.name}: measured vs roofline "
                          "(label: measured / roofline)")
    return _save(fig, path)


# ---- the command line's figure ---------------------------------------------------------------------------------

def serving_figure(rooflines: Mapping[str, Any], points, path: str | None = None, title: str = ""):
    """`minitx roofline --plot`: the roofline chart (prefill and decode per batch) beside the batch sweep."""
    fig, (left, right) = _figure(width=13, height=5.5, ncols=2)
    draw_roofline(left, rooflines)
    left.set_title("op kinds on the roofline")
    draw_batch_sweep(right, points)
    right.set_title("batch sweep")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
