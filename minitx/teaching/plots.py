"""Pictures: ops placed under a chip's roof, batch sweeps, predicted against measured, the KV cache against the
context, training vs inference memory, bytes by precision, and the serving simulator's timelines.

matplotlib is optional (`pip install minitx[plot]`) and imported only when a chart is drawn; without it every
function here raises PlotUnavailable (a ValueError, so the command line turns it into a one-line error, exit 2).
Charts are built on matplotlib's object API (`matplotlib.figure.Figure`), so nothing depends on a display or a
pyplot backend: pass `path` to save a PNG, or show the returned Figure in a notebook.

    roofline_chart({"prefill B=1": rl1, "decode B=64": rl2}, "roofline.png")
    batch_sweep_chart(serving.sweep(cfg, "h100", "bf16", [1, 8, 64, 256]), "sweep.png")
    predicted_vs_measured_chart(measured.measure_inference("reference"), "measured.png")
    simulation_figure(serving.simulate(cfg, "h100", jobs), serving.load_sweep(cfg, "h100", jobs), "sim.png")
    kv_cache_chart({"llama-3-8b": (contexts, bytes)}), memory_chart({...}), precision_chart({...}, P)

In a lesson: `print(draw("05_roofline", roofline_chart, {...}))` shows the picture inline in a notebook, saves
it as a PNG (never over an existing file) when the lesson runs as a script, and says what it skipped when
matplotlib is missing (see "where a lesson's picture goes").
"""
from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

from .. import checks

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


# ---- where a lesson's picture goes ------------------------------------------------------------------------------
#
# A lesson runs two ways. In a notebook its pictures belong in the notebook, under the cell that drew them; run
# as a script (`python lessons/05_prefill_decode.py`) there is nowhere to draw, so each picture is written as a
# PNG into a folder the lesson prints: $MINITX_FIGURES when it is set, else a fresh temporary folder for the
# run. Nothing is ever written over: a name already taken in that folder gets -2, -3... (an exclusive create,
# so two runs writing at once cannot clobber each other either). Without matplotlib the lesson still runs and
# prints the picture it skipped.

FIGURES_ENV = "MINITX_FIGURES"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_run_folder: str | None = None


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached), False in a script or a plain shell."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def figures_folder() -> str:
    """Where a script's pictures go: $MINITX_FIGURES (created if missing), else one temporary folder per run."""
    global _run_folder
    chosen = os.environ.get(FIGURES_ENV)
    if chosen:
        if os.path.exists(chosen) and not os.path.isdir(chosen):
            raise ValueError(f"{FIGURES_ENV}={chosen!r} exists and is not a folder")
        os.makedirs(chosen, exist_ok=True)
        return chosen
    if _run_folder is None or not os.path.isdir(_run_folder):
        _run_folder = tempfile.mkdtemp(prefix="minitx-figures-")
    return _run_folder


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(".png"):
        raise ValueError(f"picture name must be 1-100 letters, digits, '_', '-' or '.' (a file name without "
                         f"a folder or .png), got {name!r}")
    return name


def save_new(fig, folder: str, name: str) -> str:
    """Write `fig` as folder/name.png, or name-2.png, name-3.png... if taken: never over an existing file."""
    _check_name(name)
    for n in range(1, 1000):
        path = os.path.join(folder, f"{name}.png" if n == 1 else f"{name}-{n}.png")
        try:
            out = open(path, "xb")          # exclusive: fails if the file exists, even if created a moment ago
        except FileExistsError:
            continue
        try:
            with out:
                fig.savefig(out, format="png", dpi=120)
        except BaseException:
            os.remove(path)                 # no half-written picture left behind under a name now taken
            raise
        return path
    raise OSError(f"{folder}: {name}.png and 998 numbered copies exist; choose another {FIGURES_ENV}")


def show(fig, name: str) -> str:
    """Put a lesson's picture where its reader is (see above) and return the line the lesson prints."""
    _check_name(name)
    if in_notebook():
        import io
        from IPython.display import Image, display
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        display(Image(data=buffer.getvalue(), format="png"))
        return f"[picture {name}: drawn above]"
    return f"[picture {name}: saved to {save_new(fig, figures_folder(), name)}]"


def draw(name: str, chart: Callable, *args, **kwargs) -> str:
    """`show(chart(*args, **kwargs), name)`, or, without matplotlib, a line saying which picture was skipped
    and how to get it: a lesson runs either way."""
    _check_name(name)
    if not callable(chart):
        raise TypeError(f"chart must be one of minitx.plots' chart functions, got {type(chart).__name__}")
    try:
        require_matplotlib()
    except PlotUnavailable:
        return f"[picture {name} skipped: matplotlib is not installed; pip install 'minitx[plot]' to draw it]"
    return show(chart(*args, **kwargs), name)


# ---- readable axes ---------------------------------------------------------------------------------------------
#
# Log axes are where these charts live (intensities from 0.1 to 1000, FLOP/s over six orders of magnitude), and
# matplotlib's default labels there are powers (10⁻¹, 10¹²): correct, and not what a reader says aloud. Ticks are
# put at 1, 10, 100... (or at 1, 2, 5, 10... when the axis spans less than a few decades) and labelled as numbers
# with their unit: "0.1", "1000", "1 TFLOP/s", "20 ms".

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str = "") -> str:
    """A number with an SI prefix and its unit: si(2e12, "FLOP/s") = "2 TFLOP/s", si(5e3) = "5k", si(0.5) = "0.5"."""
    space = " " if unit else ""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:g}{space}{prefix}{unit}"
    return f"{value:g}{space}{unit}"


def plain(value: float) -> str:
    """0.1 -> "0.1", 1000 -> "1000", 20000 -> "20,000": a tick label without powers of ten."""
    return f"{value:,.0f}" if value >= 10_000 else f"{value:g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick positions for a log axis over [lo, hi]: the powers of ten when there are at least three, else
    1, 2, 5 times them, else every 1..9 times them (an axis that spans about a decade), else lo and hi."""
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"a log axis needs 0 < lo < hi, got lo={lo!r}, hi={hi!r}")
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for multiples in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** k for k in range(first, last + 1) for m in multiples
                 if lo * (1 - 1e-9) <= m * 10.0 ** k <= hi * (1 + 1e-9)]
        if len(ticks) >= 3:
            return ticks
    return ticks if len(ticks) >= 2 else [lo, hi]      # a sliver of a decade: its two ends


def set_log_axis(axis, lo: float, hi: float, label=plain) -> None:
    """Make `axis` (ax.xaxis or ax.yaxis) logarithmic over [lo, hi] with log_ticks labelled by `label`."""
    from matplotlib import ticker
    getattr(axis.axes, f"set_{axis.axis_name}scale")("log")
    getattr(axis.axes, f"set_{axis.axis_name}lim")(lo, hi)
    axis.set_major_locator(ticker.FixedLocator(log_ticks(lo, hi)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(ticker.NullFormatter())


def _decade_range(values, pad: float = 2.0) -> tuple[float, float]:
    """[lo, hi] around positive `values`, padded by `pad`× and widened to whole powers of ten."""
    values = [v for v in values if v > 0 and math.isfinite(v)]
    if not values:
        raise ValueError("nothing positive to place on a log axis")
    return (10.0 ** math.floor(math.log10(min(values) / pad)), 10.0 ** math.ceil(math.log10(max(values) * pad)))


def _batch_axis(ax, batches) -> None:
    """x = batch size on a log-2 axis, ticked at the batches themselves (1, 8, 64), not at 2⁰, 2³, 2⁶."""
    from matplotlib import ticker
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(ticker.FixedLocator(sorted(set(batches))))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("batch size B (sequences decoded together)")


def _below(ax, handles, labels, ncol: int = 2):
    """A legend under the axes, where it covers no data."""
    return ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol,
                     frameon=False)


# ---- the roofline chart ----------------------------------------------------------------------------------------

def draw_roofline(ax, rooflines: Mapping[str, Any], by: str = "op") -> None:
    """Draw each chip's roof and place each Roofline's op groups (by op kind, or "phase") under it.

    A point is one group: x = its intensity (FLOPs / byte), y = the FLOP/s the roofline lets it reach
    (FLOPs / predicted time), so every point sits on or under its roof. Colour says which op kind, the marker
    which run (prefill B=1, decode B=64...), so ops of every run at the same intensity (a decode's norms,
    activations and matmuls all sit near 1 FLOP/B) share one legend instead of piling their names on each
    other. Groups without FLOPs (embedding gathers, layout copies) have intensity 0 and cannot be placed on log
    axes: they are left out, and the legend says so.
    """
    from matplotlib.lines import Line2D
    placed = {label: [g for g in _groups(r, by).values() if g.flops and g.bytes and g.time]
              for label, r in rooflines.items()}
    roofs = {(r.hardware.name, r.dtype): (r.peak, r.bandwidth) for r in rooflines.values()}
    xs = [g.intensity for gs in placed.values() for g in gs] + [p / b for p, b in roofs.values()]
    ys = [g.flops / g.time for gs in placed.values() for g in gs] + [p for p, _ in roofs.values()]
    x_lo, x_hi = _decade_range(xs)
    y_lo, y_hi = _decade_range(ys, pad=3.0)
    handles, labels = [], []
    for i, ((name, dtype), (peak, bw)) in enumerate(roofs.items()):
        ridge = peak / bw
        line, = ax.plot([x_lo, ridge, x_hi], [x_lo * bw, peak, peak], color="black", lw=1.6,
                        ls=("-", "--", ":")[i % 3])
        ax.axvline(ridge, color="grey", lw=0.8, ls=":")
        handles.append(line)
        labels.append(f"roof: {name} {dtype}\n{si(peak, 'FLOP/s')}, {si(bw, 'B/s')}\n"
                      f"ridge {ridge:,.0f} FLOP/B (dotted)")
    kinds = list(dict.fromkeys(g.key for gs in placed.values() for g in gs))
    colour = {k: f"C{i % 10}" for i, k in enumerate(kinds)}
    markers = "osD^v<>ph*P"
    for i, (label, groups) in enumerate(placed.items()):
        ax.scatter([g.intensity for g in groups], [g.flops / g.time for g in groups], s=42,
                   c=[colour[g.key] for g in groups], marker=markers[i % len(markers)], edgecolors="black",
                   linewidths=0.5, alpha=0.85, zorder=3)
    set_log_axis(ax.xaxis, x_lo, x_hi)
    set_log_axis(ax.yaxis, y_lo, y_hi, lambda v: si(v, "FLOP/s"))
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("attainable FLOP/s (FLOPs / roofline time)")
    ax.grid(True, which="major", alpha=0.3)
    runs = [Line2D([], [], ls="", marker=markers[i % len(markers)], color="white", markeredgecolor="black",
                   markersize=6) for i in range(len(placed))]
    ops = [Line2D([], [], ls="", marker="s", color=colour[k], markersize=7) for k in kinds]
    left_out = {g.key for r in rooflines.values() for g in _groups(r, by).values()} - set(kinds)
    legend = ax.legend(handles + runs + ops, labels + list(placed) + kinds, fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), frameon=False,
                       title=(f"not placed (no FLOPs): {', '.join(sorted(left_out))}" if left_out else None),
                       title_fontsize=6)
    legend._legend_box.align = "left"

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
    """Tokens/s over the batch (left axis) and, in ms on the right axis, the time per output token every user
    waits (TPOT) and, for a modelled sweep, the time to the first token (TTFT), against the batch size.

    `points`: ServingPoints (serving.sweep) or MeasuredPoints (measured.measure_decode_sweep: measured solid,
    the roofline's prediction dashed)."""
    batches = [p.batch for p in points]
    measured = hasattr(points[0], "measured") if points else False
    name = f"{label} " if label else ""
    if measured:
        tpot = [p.measured * 1e3 for p in points]
        ax.plot(batches, [p.predicted_tokens_per_s for p in points], "C0--", label=f"{name}tokens/s, roofline")
    else:
        tpot = [p.tpot * 1e3 for p in points]
    tps = [p.tokens_per_s for p in points]
    ax.plot(batches, tps, "C0o-", label=f"{name}tokens/s" + (", measured" if measured else ""))
    _batch_axis(ax, batches)
    ax.set_ylabel("decode tokens/s (whole batch)", color="C0")
    twin = ax.twinx()
    twin.plot(batches, tpot, "C3s-", label="TPOT (ms per token, each user)" + (", measured" if measured else ""))
    ms = list(tpot)
    if measured:
        predicted = [p.predicted * 1e3 for p in points]
        twin.plot(batches, predicted, "C3--", label="TPOT, roofline")
        ms += predicted
    else:
        ttft = [p.ttft * 1e3 for p in points]
        twin.plot(batches, ttft, "C1^-", label="TTFT (ms to the first token)")
        ms += ttft
    twin.set_ylabel("ms", color="C3")
    rates = tps + ([p.predicted_tokens_per_s for p in points] if measured else [])
    set_log_axis(ax.yaxis, min(rates) / 1.5, max(rates) * 1.5, lambda v: si(v))
    set_log_axis(twin.yaxis, min(ms) / 1.5, max(ms) * 1.5)
    lines, more = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    _below(ax, lines[0] + more[0], lines[1] + more[1])
    ax.grid(True, which="major", alpha=0.3)


def draw_throughput(ax, points) -> None:
    """Tokens/s against the batch: the whole batch's, and one user's (ServingPoints or MeasuredPoints)."""
    batches = [p.batch for p in points]
    measured = hasattr(points[0], "measured")
    whole = [p.tokens_per_s for p in points]
    user = [p.tokens_per_s / p.batch for p in points]
    ax.plot(batches, whole, "C0o-", label="whole batch" + (", measured" if measured else ""))
    ax.plot(batches, user, "C2s-", label="each user" + (", measured" if measured else ""))
    rates = whole + user
    if measured:
        roof = [p.predicted_tokens_per_s for p in points]
        ax.plot(batches, roof, "C0--", label="whole batch, roofline")
        rates += roof
    _batch_axis(ax, batches)
    set_log_axis(ax.yaxis, min(rates) / 1.5, max(rates) * 1.5, lambda v: si(v))
    ax.set_ylabel("decode tokens/s")
    ax.grid(True, which="major", alpha=0.3)
    _below(ax, *ax.get_legend_handles_labels())


def draw_latency(ax, points) -> None:
    """What each user waits against the batch: TTFT and TPOT in ms (ServingPoints), or the measured decode step
    next to its roofline (MeasuredPoints)."""
    batches = [p.batch for p in points]
    if hasattr(points[0], "measured"):
        series = {"decode step, measured": ([p.measured * 1e3 for p in points], "C3s-"),
                  "decode step, roofline": ([p.predicted * 1e3 for p in points], "C3--")}
    else:
        series = {"TTFT: the batch's prefill": ([p.ttft * 1e3 for p in points], "C1^-"),
                  "TPOT: one decode step": ([p.tpot * 1e3 for p in points], "C3s-")}
    for name, (ms, style) in series.items():
        ax.plot(batches, ms, style, label=name)
    every = [v for ms, _ in series.values() for v in ms]
    _batch_axis(ax, batches)
    set_log_axis(ax.yaxis, min(every) / 1.5, max(every) * 1.5, lambda v: f"{plain(v)} ms")
    ax.set_ylabel("time each user waits")
    ax.grid(True, which="major", alpha=0.3)
    _below(ax, *ax.get_legend_handles_labels())


def batch_sweep_chart(points, path: str | None = None, title: str = ""):
    """Two panels against the batch size: throughput (whole batch and per user) and latency (TTFT and TPOT, or
    measured and roofline step time)."""
    fig, (left, right) = _figure(width=11, height=4.6, ncols=2)
    draw_throughput(left, points)
    left.set_title("throughput")
    draw_latency(right, points)
    right.set_title("latency")
    fig.suptitle(title or "batching: throughput up, each user's wait up too")
    return _save(fig, path)


# ---- predicted vs measured -------------------------------------------------------------------------------------

def seconds(value: float) -> str:
    """A time in the unit that reads best: seconds(2e-6) = "2 µs", seconds(0.02) = "20 ms"."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale:
            return f"{value / scale:g} {unit}"
    return f"{value / 1e-9:g} ns"


def predicted_vs_measured_chart(measurement, path: str | None = None, title: str = ""):
    """Bars of measured and roofline time per op kind, one panel per phase (the whole phase last), on a log
    scale; above each pair, measured / roofline: how many times slower than its roofline the op ran."""
    phases = list(measurement.phases)
    fig, axes = _figure(width=11, height=4.8, ncols=len(phases))
    axes = axes if len(phases) > 1 else [axes]
    every = [t for c in list(measurement.ops.values()) + list(measurement.phases.values())
             for t in (c.measured, c.predicted) if t > 0]
    lo, hi = _decade_range(every, pad=1.0)
    for ax, ph in zip(axes, phases):
        rows = [(op, c) for (p, op), c in measurement.ops.items() if p == ph] + [("whole\nphase",
                                                                                   measurement.phases[ph])]
        xs = list(range(len(rows)))
        ax.bar([x - 0.2 for x in xs], [c.measured for _, c in rows], width=0.4, color="C0", label="measured")
        ax.bar([x + 0.2 for x in xs], [c.predicted for _, c in rows], width=0.4, color="C1", label="roofline")
        for x, (_, c) in zip(xs, rows):
            if c.predicted and math.isfinite(c.factor):
                ax.annotate(f"{c.factor:,.1f}×" if c.factor < 10 else f"{c.factor:,.0f}×", (x, c.measured),
                            ha="center", fontsize=7, textcoords="offset points", xytext=(0, 2))
        ax.set_xticks(xs, [k for k, _ in rows], fontsize=8, rotation=45, ha="right", rotation_mode="anchor")
        set_log_axis(ax.yaxis, lo, hi * 3, seconds)
        ax.set_ylabel(f"{ph} time" + (" per step" if ph == "decode" else ""))
        ax.set_title(ph, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8,
               frameon=False)
    fig.suptitle(title or f"{measurement.model} on {measurement.hardware.name}: measured vs roofline "
                          "(above the bars: measured / roofline)")
    return _save(fig, path)


# ---- the lessons' pictures: KV cache, memory, precision -----------------------------------------------------------

def _amounts(arg: str, values: Any) -> dict[str, float]:
    """A non-empty {label: number ≥ 0} mapping (bytes), checked, with at least one number above 0."""
    checks.instance(arg, values, Mapping, "a {label: bytes} mapping")
    out = {str(k): checks.number(f"{arg}[{k!r}]", v, 0.0) for k, v in values.items()}
    if not out or max(out.values()) <= 0:
        raise ValueError(f"{arg} must hold at least one amount above 0, got {values!r:.80}")
    return out


def _series(arg: str, series: Any) -> dict[str, tuple[list[float], list[float]]]:
    """{label: (xs, ys)} with xs and ys equally long, non-empty, finite and ≥ 0."""
    checks.instance(arg, series, Mapping, "a {label: (contexts, bytes)} mapping")
    if not series:
        raise ValueError(f"{arg} is empty: give at least one line")
    out = {}
    for label, pair in series.items():
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise TypeError(f"{arg}[{label!r}] must be a pair (contexts, bytes), got {type(pair).__name__}")
        xs, ys = (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else None for v in pair)
        if xs is None or ys is None or not xs or len(xs) != len(ys):
            raise ValueError(f"{arg}[{label!r}]: contexts and bytes must be two sequences of the same, non-zero "
                             "length")
        out[str(label)] = ([checks.number(f"{arg}[{label!r}] context", x, 0.0) for x in xs],
                           [checks.number(f"{arg}[{label!r}] bytes", y, 0.0) for y in ys])
    return out


def _bytes_unit(largest: float) -> tuple[float, str]:
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if largest >= scale:
            return scale, unit
    return 1.0, "B"


def kv_cache_chart(series: Mapping[str, tuple[Any, Any]], path: str | None = None, title: str = "",
                   limits: Mapping[str, float] | None = None):
    """The KV cache against the context: `series` {label: (contexts, bytes)}, one line per model (the bytes
    read from allocated or shape-only caches); `limits` {label: bytes} draws horizontal lines (the memory left
    next to the weights on a card). Both axes linear: a cache grows in a straight line with the context, and
    the slope is its bytes per token."""
    series = _series("series", series)
    limits = _amounts("limits", limits) if limits else {}
    from matplotlib import ticker
    fig, ax = _figure(width=8, height=5.2)
    largest = max([max(b) for _, b in series.values()] + list(limits.values())) or 1.0
    scale, unit = _bytes_unit(largest)
    for i, (label, (contexts, nbytes)) in enumerate(series.items()):
        ax.plot(list(contexts), [b / scale for b in nbytes], f"C{i % 10}-", lw=2, label=label)
    for j, (label, nbytes) in enumerate(limits.items()):
        ax.axhline(nbytes / scale, color="black", lw=1, ls=("--", ":", "-.")[j % 3], label=label)
    ax.set_xlabel("context (tokens cached per sequence)")
    ax.set_ylabel(f"KV cache of one sequence ({unit})")
    # ticks at whole multiples of 1024 tokens ("4k", "8k"), the sizes contexts come in, about 8 of them
    longest = max(max(c) for c, _ in series.values())
    step = 1024 * 2 ** max(0, math.ceil(math.log2(max(longest / 8 / 1024, 1))))
    ax.xaxis.set_major_locator(ticker.MultipleLocator(step if longest >= 2048 else max(1, longest // 8)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1024:g}k" if v >= 1024 else f"{v:g}"))
    ax.set_xlim(0, longest * 1.02)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    _below(ax, *ax.get_legend_handles_labels())
    ax.set_title(title or "the KV cache grows with every token of context")
    return _save(fig, path)


def memory_chart(panels: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | None = None,
                 title: str = ""):
    """Stacked bars of memory: `panels` {panel title: {bar: {part: bytes}}}, e.g. {"llama-2-7b": {"training":
    {"weights": ..., "gradients": ..., ...}, "inference": {...}}}. A part keeps its colour in every panel; each
    bar's total is written at its end; each panel picks its own unit (MB, GB)."""
    checks.instance("panels", panels, Mapping, "a {panel: {bar: {part: bytes}}} mapping")
    if not panels or len(panels) > 6:
        raise ValueError(f"panels must hold 1 to 6 panels, got {len(panels)}")
    for name, bars in panels.items():
        checks.instance(f"panels[{name!r}]", bars, Mapping, "a {bar: {part: bytes}} mapping")
        if not bars:
            raise ValueError(f"panels[{name!r}] holds no bar")
    panels = {str(name): {str(bar): _amounts(f"panels[{name!r}][{bar!r}]", parts) for bar, parts in bars.items()}
              for name, bars in panels.items()}
    fig, axes = _figure(width=11, height=1.2 + 1.1 * max(len(b) for b in panels.values()), ncols=len(panels))
    axes = axes if len(panels) > 1 else [axes]
    parts = list(dict.fromkeys(p for bars in panels.values() for bar in bars.values() for p in bar))
    colour = {p: f"C{i % 10}" for i, p in enumerate(parts)}
    for ax, (name, bars) in zip(axes, panels.items()):
        scale, unit = _bytes_unit(max(sum(bar.values()) for bar in bars.values()))
        rows = list(bars)[::-1]                    # the first bar on top
        for y, bar in enumerate(rows):
            left = 0.0
            for part, nbytes in bars[bar].items():
                ax.barh(y, nbytes / scale, left=left, color=colour[part], edgecolor="white", height=0.6)
                left += nbytes / scale
            ax.annotate(f"{left:,.3g} {unit}", (left, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(unit)
        ax.set_xlim(0, max(sum(b.values()) for b in bars.values()) / scale * 1.25)
        ax.set_title(name, fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.patches import Patch
    fig.legend([Patch(color=colour[p]) for p in parts], parts, loc="outside lower center",
               ncol=min(len(parts), 6), fontsize=8, frameon=False)
    fig.suptitle(title or "memory: training keeps far more than inference")
    return _save(fig, path)


def precision_chart(stored: Mapping[str, float], parameters: int, path: str | None = None, title: str = "",
                    bandwidth: float | None = None, hardware_name: str = ""):
    """Bars of the bytes a model's weights take in each format (`stored` {format: bytes}), each labelled with
    its bytes per parameter, and, given a `bandwidth` (bytes/s), the decode floor it sets (every weight read
    once per step: bytes / bandwidth)."""
    stored = _amounts("stored", stored)
    parameters = checks.integer("parameters", parameters)
    bandwidth = None if bandwidth is None else checks.positive("bandwidth", bandwidth)
    fig, ax = _figure(width=8, height=4.2)
    scale, unit = _bytes_unit(max(stored.values()))
    names = list(stored)
    ax.bar(names, [stored[n] / scale for n in names], color=[f"C{i % 10}" for i in range(len(names))])
    for x, n in enumerate(names):
        text = f"{stored[n] / scale:,.3g} {unit}\n{stored[n] / parameters:.3g} B/param"
        if bandwidth:
            text += f"\n≥ {stored[n] / bandwidth * 1e3:.3g} ms/step"
        ax.annotate(text, (x, stored[n] / scale), xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8)
    ax.set_ylim(0, max(stored.values()) / scale * 1.35)
    ax.set_ylabel(f"weights ({unit})")
    ax.set_xlabel("weight format" + (f" (decode floor: every weight read once per step on {hardware_name})"
                                      if bandwidth and hardware_name else ""))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title or "fewer bits per weight, fewer bytes to read per token")
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


# ---- the serving simulator (minitx simulate --plot) --------------------------------------------------------------

def draw_load_sweep(ax, points) -> None:
    """Latency against offered load, one line per batching policy: `points` from simulator.load_sweep. y is the
    vLLM paper's normalized latency (a request's end-to-end latency over its output tokens, averaged), which
    stays flat while the server keeps up and climbs once requests queue."""
    for i, policy in enumerate(dict.fromkeys(p.policy for p in points)):
        mine = sorted((p for p in points if p.policy == policy), key=lambda p: p.rate)
        ax.plot([p.rate for p in mine], [p.summary.normalized_latency_s * 1e3 for p in mine], f"C{i}o-",
                label=f"{policy}: latency per output token")
        ax.plot([p.rate for p in mine], [p.summary.ttft_p50_s * 1e3 for p in mine], f"C{i}s--",
                label=f"{policy}: TTFT p50", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests / s)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)


def draw_kv_timeline(ax, result) -> None:
    """A simulation's KV cache over time (simulator.SimulationResult): positions reserved by the running
    sequences and positions holding a token, in GB per chip, under the pool's size."""
    steps, per_token = result.steps, result.memory.kv_per_token
    ax.step(steps.start_s, steps.reserved_tokens * per_token / 1e9, where="post", label="reserved")
    ax.step(steps.start_s, steps.used_tokens * per_token / 1e9, where="post", label="holding a token")
    ax.axhline(result.memory.kv_bytes / 1e9, color="black", lw=1, ls=":", label="KV pool")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("KV cache per chip (GB)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.2)


def draw_batch_timeline(ax, result) -> None:
    """A simulation's batch size (sequences per step) over time."""
    ax.step(result.steps.start_s, result.steps.batch, where="post", color="C2")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("sequences in the step")
    ax.grid(True, alpha=0.2)


def simulation_figure(result, sweep, path: str | None = None, title: str = ""):
    """`minitx simulate --plot`: latency vs offered load (static and continuous), KV memory and batch over time."""
    fig, (left, middle, right) = _figure(width=17, height=5, ncols=3)
    draw_load_sweep(left, sweep)
    left.set_title("latency vs offered load")
    draw_kv_timeline(middle, result)
    middle.set_title("KV memory over time")
    draw_batch_timeline(right, result)
    right.set_title("batch size over time")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
