"""The lessons' pictures (minitx.plots) read well, and land where their reader is.

Reading well is checked on the rendered figure, not by eye alone: no two pieces of text overlap (tick labels,
axis labels, titles, legend entries), no legend sits on the axes where the data is, log axes are ticked at
round numbers labelled with their units (0.1 ... 1000 FLOP/B, "1 TFLOP/s", "20 ms"), and a batch axis at the
batches themselves. Landing: inline in a notebook (tests/test_notebooks.py sees the images), a PNG in a folder
when a lesson runs as a script, never over an existing file, and a printed line instead of a crash without
matplotlib.
"""
from __future__ import annotations

import functools
import os
import sys

import pytest
from hypothesis import given, settings, strategies as st

from minitx import Config, plots, serving

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.text import Text  # noqa: E402

LLAMA3 = Config.preset("llama-3-8b")


def _rendered(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _texts(fig, renderer):
    """(text, bbox) of every visible, non-empty piece of text the figure drew."""
    return [(t.get_text(), t.get_window_extent(renderer)) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and (t.axes is None or _drawn(t))]


def _drawn(t) -> bool:
    """A tick label is drawn only when its tick lies inside the axis' view limits."""
    for axis in (t.axes.xaxis, t.axes.yaxis):
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if t in (tick.label1, tick.label2):
                lo, hi = sorted(axis.get_view_interval())
                return tick.get_loc() is not None and lo * (1 - 1e-9) <= tick.get_loc() <= hi * (1 + 1e-9) \
                    and (t is tick.label1 and tick.label1On or t is tick.label2 and tick.label2On)
    return True


def assert_reads_well(fig):
    renderer = _rendered(fig)
    texts = _texts(fig, renderer)
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            for other in fig.axes:
                assert not legend.get_window_extent(renderer).overlaps(other.get_window_extent(renderer)), \
                    "a legend covers the data"
    return renderer


def _labels(axis):
    """The tick labels the axis shows: those of the ticks inside its view limits."""
    lo, hi = sorted(axis.get_view_interval())
    return [tick.label1.get_text() for tick in axis.get_major_ticks()
            if lo * (1 - 1e-9) <= tick.get_loc() <= hi * (1 + 1e-9)]


def test_the_roofline_is_ticked_at_round_intensities_with_units_and_no_label_overlaps():
    rooflines = {"prefill, 1,000 tokens": serving.prefill_roofline(LLAMA3, "h100-sxm", "bf16", 1, 1000),
                 "decode B=1": serving.decode_roofline(LLAMA3, "h100-sxm", "bf16", 1, 1000),
                 "decode B=64": serving.decode_roofline(LLAMA3, "h100-sxm", "bf16", 64, 1000)}
    fig = plots.roofline_chart(rooflines)
    assert_reads_well(fig)
    ax = fig.axes[0]
    assert {"0.1", "1", "10", "100", "1000"} <= set(_labels(ax.xaxis))
    assert all(label.endswith("FLOP/s") for label in _labels(ax.yaxis))
    assert "1 PFLOP/s" in _labels(ax.yaxis)              # the H100's 989 TFLOP/s roof sits just under it
    # every op kind is named once in the legend, not once per point beside the point
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend.count("matmul") == 1 and "decode B=64" in legend
    assert not [t for t in ax.texts if t.get_text() in ("matmul", "norm")]


def test_the_batch_sweep_is_ticked_at_the_batches_with_units():
    points = serving.sweep(LLAMA3, "h100-sxm", "bf16", [1, 8, 64, 256], prompt=1000, gen=200)
    fig = plots.batch_sweep_chart(points)
    assert_reads_well(fig)
    throughput, latency = fig.axes
    assert _labels(throughput.xaxis) == ["1", "8", "64", "256"]
    assert all(label.endswith(" ms") for label in _labels(latency.yaxis))
    assert {line.get_label() for line in latency.lines} == {"TTFT: the batch's prefill", "TPOT: one decode step"}


def test_the_command_lines_figure_reads_well():
    rooflines = {f"{ph} B={b}": fn(LLAMA3, "h100-sxm", "bf16", b, 1000) for b in (1, 8, 64)
                 for ph, fn in (("prefill", serving.prefill_roofline), ("decode", serving.decode_roofline))}
    assert_reads_well(plots.serving_figure(rooflines, serving.sweep(LLAMA3, "h100-sxm", "bf16", [1, 8, 64], 1000,
                                                                     200), title="llama-3-8b"))


def test_the_lesson_charts_read_well():
    contexts = [512 * i for i in range(1, 17)]
    kv = plots.kv_cache_chart({"llama-3-8b (GQA)": (contexts, [131_072 * n for n in contexts]),
                               "llama-2-7b (MHA)": (contexts[:8], [524_288 * n for n in contexts[:8]])})
    assert_reads_well(kv)
    assert _labels(kv.axes[0].xaxis)[:3] == ["0", "1k", "2k"]
    memory = plots.memory_chart({"7B": {"training": {"weights": 14e9, "gradients": 14e9, "Adam": 84e9},
                                        "inference": {"weights": 14e9, "KV cache": 2e9}}})
    assert_reads_well(memory)
    precision = plots.precision_chart({"float32": 27e9, "bfloat16": 13.5e9, "int8": 7.1e9, "int4": 3.9e9},
                                      6_738_415_616, bandwidth=3.35e12, hardware_name="an H100")
    assert_reads_well(precision)
    # 13.5e9 bytes / 3.35e12 bytes/s = 4.03 ms: the floor written on the bfloat16 bar
    assert any("4.03 ms/step" in t.get_text() for t in precision.axes[0].texts)


def test_the_checker_sees_labels_piled_on_each_other():
    """What the old roofline did near intensity 1: op names written beside points that nearly coincide."""
    fig, ax = plots._figure()
    ax.plot([1, 2], [1, 2])
    for name in ("norm", "activation", "matmul"):
        ax.annotate(name, (1.0, 1.0), xytext=(3, -8), textcoords="offset points")
    with pytest.raises(AssertionError, match="overlaps"):
        assert_reads_well(fig)


def test_round_ticks_and_units():
    assert plots.log_ticks(0.05, 2000) == [0.1, 1, 10, 100, 1000]
    assert plots.log_ticks(4, 30) == [5, 10, 20]                 # under three decades: 1, 2, 5 steps
    assert plots.si(2e12, "FLOP/s") == "2 TFLOP/s" and plots.si(5e3) == "5k" and plots.si(0.5) == "0.5"
    assert plots.seconds(2e-6) == "2 µs" and plots.seconds(0.02) == "20 ms"
    with pytest.raises(ValueError, match="0 < lo < hi"):
        plots.log_ticks(10, 1)


@settings(max_examples=50, deadline=None)
@given(lo=st.floats(1e-12, 1e12), ratio=st.floats(1.0001, 1e9))
def test_log_ticks_always_give_at_least_two_ticks_inside_the_axis(lo, ratio):
    ticks = plots.log_ticks(lo, lo * ratio)
    assert len(ticks) >= 2 and all(lo * (1 - 1e-9) <= t <= lo * ratio * (1 + 1e-9) for t in ticks)


# ---- where a picture goes -------------------------------------------------------------------------------------

def _tiny_chart():
    return plots.precision_chart({"float32": 4e6, "bfloat16": 2e6}, 1_000_000)


@functools.lru_cache(maxsize=1)
def _one_chart():
    return _tiny_chart()


def test_as_a_script_a_picture_is_saved_and_never_over_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.setenv(plots.FIGURES_ENV, str(tmp_path))
    mine = tmp_path / "02_memory.png"
    mine.write_bytes(b"a student's own picture")
    line = plots.draw("02_memory", lambda: _tiny_chart())
    assert mine.read_bytes() == b"a student's own picture"
    assert line == f"[picture 02_memory: saved to {tmp_path / '02_memory-2.png'}]"
    assert (tmp_path / "02_memory-2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plots.draw("02_memory", lambda: _tiny_chart())
    assert (tmp_path / "02_memory-3.png").exists()


def test_without_a_chosen_folder_a_run_gets_a_fresh_temporary_one(monkeypatch, tmp_path):
    import tempfile
    monkeypatch.delenv(plots.FIGURES_ENV, raising=False)
    monkeypatch.setattr(plots, "_run_folder", None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))         # the test's own temporary space
    line = plots.draw("05_roofline", lambda: _tiny_chart())
    folder = plots.figures_folder()
    assert os.path.basename(folder).startswith("minitx-figures-") and folder in line
    assert os.listdir(folder) == ["05_roofline.png"]


def test_without_matplotlib_the_lesson_says_what_it_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    line = plots.draw("06_batch_sweep", plots.batch_sweep_chart, [])
    assert "skipped" in line and "pip install 'minitx[plot]'" in line


def test_a_folder_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv(plots.FIGURES_ENV, str(tmp_path / "f"))
    with pytest.raises(ValueError, match="MINITX_FIGURES"):
        plots.draw("x", lambda: _tiny_chart())


@settings(max_examples=25, deadline=None)
@given(name=st.one_of(st.text(max_size=120), st.integers(), st.none(), st.just("../escape"),
                      st.just("a/b"), st.just("x.png"), st.just("")))
def test_a_picture_name_is_a_plain_file_name_or_a_clear_error(name, tmp_path_factory):
    folder = tmp_path_factory.mktemp("figs")
    fig = _one_chart()
    try:
        path = plots.save_new(fig, str(folder), name)
    except ValueError as error:
        assert "picture name" in str(error)
    else:
        assert os.path.dirname(path) == str(folder) and os.path.basename(path) == f"{name}.png"
    with pytest.raises(TypeError, match="chart"):
        plots.draw("ok", "not a chart")


GARBAGE = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
                    st.lists(st.integers(-5, 5), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.one_of(st.floats(allow_nan=True), st.integers(-9, 9),
                                                                   st.text(max_size=3),
                                                                   st.tuples(st.lists(st.integers(-3, 9), max_size=3),
                                                                             st.lists(st.integers(-3, 9), max_size=3))),
                                    max_size=3))


@settings(max_examples=40, deadline=None)
@given(chart=st.sampled_from(["kv", "memory", "precision"]), data=GARBAGE, number=st.one_of(st.integers(), st.none(),
                                                                                          st.floats()))
def test_a_chart_given_garbage_raises_a_clear_error_or_draws(chart, data, number):
    call = {"kv": lambda: plots.kv_cache_chart(data),
            "memory": lambda: plots.memory_chart({"panel": data}),
            "precision": lambda: plots.precision_chart(data, number)}[chart]
    try:
        fig = call()
    except (ValueError, TypeError) as error:
        assert any(arg in str(error) for arg in ("series", "panels", "stored", "parameters")), error
    else:
        assert fig.axes
