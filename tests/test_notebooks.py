"""Every lesson runs once, as a notebook in a real Jupyter kernel: the way a workshop opens it.

Each lessons/NN_*.py (jupytext percent format) is converted with jupytext and executed cell by cell by nbclient
in the `python3` kernel of this interpreter (ipykernel installed in the same environment: the dev extra), with
the repository as the working directory and BLAS on one thread (see tests/test_lessons_05_07.py for why). This
replaces running the lessons as scripts: tests/test_lessons_01_04.py and tests/test_lessons_05_07.py check the
numbers each lesson prints, on the notebook's outputs, and the values of its variables, read from the kernel
after the last cell by a probe cell this module appends (`PROBES`: expressions evaluated there, as JSON).

`run_lesson(name)` executes a lesson at most once per test session and returns its printed text and probes;
`pictures(name)` the PNG images its cells displayed (minitx.plots.draw shows them inline in a kernel).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
TIMEOUT = 180            # seconds per cell: the longest cells measure this machine
MARK = "<<minitx-probe>>"

# lesson -> {key: expression evaluated in the kernel after the lesson}: what the lesson tests read
PROBES: dict[str, dict[str, str]] = {
    "01_parameters.py": {
        "gemma_total": "gemma_total", "gemma_non_embedding": "gemma_non_embedding",
        "gemma_embedding": "gemma_embedding", "allocated": "model.num_params()", "by_hand": "by_hand",
        "rule_error": "rule_error", "per_layer": "per_layer"},
    "02_memory.py": {
        "adam_copies": "adam_copies", "saved": "saved", "saved_formula": "saved_formula", "largest": "largest",
        "largest_formula": "largest_formula", "by_depth": "{str(k): list(v) for k, v in by_depth.items()}",
        "weights_by_dtype": "weights_by_dtype", "recipes": "recipes", "train7": "train7", "infer7": "infer7"},
    "03_compute.py": {
        "matmul": "matmul", "matmul_by_formula": "2 * formulas.matmul_params(cfg) * tokens_n",
        "bwd_train": "bwd_train", "fwd_train": "fwd_train", "train_fb": "train_fb", "fwd": "fwd", "P": "P",
        "tokens_n": "tokens_n", "per_token": "per_token", "head": "head", "attention_share": "attention_share"},
    "04_kv_cache.py": {
        "same_tokens": "cached == recomputed", "recompute_flops": "recompute_count.flops",
        "cached_flops": "cached_count.flops", "ratios": "{str(k): v for k, v in ratios.items()}", "kv16": "kv16",
        "mha_error": "mha_error", "fits": "fits"},
}


def lessons() -> list[str]:
    """Every numbered lesson, including those added later (they are run too, with no probe)."""
    return sorted(p.name for p in LESSONS.glob("[0-9][0-9]_*.py"))


def _probe_cell(exprs: dict[str, str]) -> str:
    body = ", ".join(f"{k!r}: ({v})" for k, v in exprs.items())
    return (f"import json as _json\nprint({MARK!r} + _json.dumps({{{body}}}, default=lambda o: "
            "o.item() if hasattr(o, 'item') else str(o)))")


_results: dict[str, tuple[str, dict, float]] = {}
_images: dict[str, list[str]] = {}


def run_lesson(name: str) -> tuple[str, dict]:
    """(everything the lesson printed, the probes' values), executing the lesson as a notebook once."""
    if name not in _results:
        jupytext = pytest.importorskip("jupytext")
        nbclient = pytest.importorskip("nbclient")
        nbformat = pytest.importorskip("nbformat")
        nb = jupytext.read(LESSONS / name)
        nb.cells.append(nbformat.v4.new_code_cell(_probe_cell(PROBES.get(name, {}))))
        env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
                   OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=TIMEOUT,
                                         resources={"metadata": {"path": str(ROOT)}})
        start = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - start
        printed, probes, images = [], {}, []
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "display_data" and "image/png" in out.get("data", {}):
                    images.append(out["data"]["image/png"])
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    text = out["text"]
                    if text.startswith(MARK):
                        probes = json.loads(text[len(MARK):])
                    else:
                        printed.append(text)
        _results[name] = ("".join(printed), probes, seconds)
        _images[name] = images
    text, probes, _ = _results[name]
    return text, probes


def pictures(name: str) -> list[str]:
    """The base64 PNGs the lesson displayed inline, in order."""
    run_lesson(name)
    return _images[name]


# lesson -> the pictures it draws (minitx.plots.draw's names)
PICTURES = {
    "02_memory.py": ("02_memory_small_llama", "02_weights_by_precision", "02_memory_llama_2_7b"),
    "04_kv_cache.py": ("04_kv_cache_growth",),
    "05_prefill_decode.py": ("05_measured_vs_roofline_cpu", "05_roofline_llama_3_8b_h100"),
    "06_batching.py": ("06_decode_batches_on_the_roofline", "06_batch_sweep_h100", "06_batch_sweep_this_cpu"),
    "08_serving.py": ("08_llama_3_8b_h100_serving",),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_pictures_are_drawn_inline_in_a_notebook(name):
    """In a kernel every picture is displayed under its cell (a PNG in the notebook), none is written to disk."""
    import base64
    text, _ = run_lesson(name)
    images = pictures(name)
    assert len(images) == len(PICTURES[name]), name
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    for picture in PICTURES[name]:
        assert f"[picture {picture}: drawn above]" in text
    assert "saved to" not in text


@pytest.mark.parametrize("name", lessons())
def test_every_lesson_runs_as_a_notebook(name):
    # How long each took is printed (pytest -s), not asserted: timings belong in benchmarks, not in tests.
    text, _ = run_lesson(name)
    print(f"{name}: {_results[name][2]:.1f} s as a notebook")
    assert text.strip(), f"{name} printed nothing"


def test_the_kernel_is_this_environment():
    """The notebooks run on the interpreter that runs the tests (ipykernel is installed in the same venv)."""
    jupyter_client = pytest.importorskip("jupyter_client")
    spec = jupyter_client.kernelspec.KernelSpecManager().get_kernel_spec("python3")
    import sys
    assert spec.argv[0] in (sys.executable, "python", "python3") or Path(spec.argv[0]).resolve() == \
        Path(sys.executable).resolve()
