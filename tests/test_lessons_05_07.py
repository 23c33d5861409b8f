"""Lessons 5–7 run to completion, use only the public API, and print their key numbers.

Each lesson runs once as a notebook in a real kernel (tests/test_notebooks.py, with a timeout per cell), as a
workshop opens it; the checks read what it printed. The check is on a number the lesson derives from formulas,
not on a timing, which depends on the machine.

BLAS runs single-threaded here (OPENBLAS_NUM_THREADS=1 and friends, for the lesson's whole process, so the
machine's measured peak and the model's runs agree on it). On a shared test machine a multi-threaded BLAS call
can wait a whole scheduler slice for its second thread, which turned 20 µs matmuls into 200 ms ones and
lessons into minutes; one thread keeps their runtime and their measured factors steady.
"""
import ast
import re
from pathlib import Path

import pytest

import minitx

LESSONS = Path(__file__).resolve().parent.parent / "lessons"

# (lesson file, regular expressions its output must match)
KEY_OUTPUT = [
    ("05_prefill_decode.py", [
        r"llama-2-7b: every parameter read 4\.02 ms .* one row per token: 3\.94 ms",
        r"llama-3-8b: every parameter read 4\.79 ms .* one row per token: 4\.48 ms",
        r"\(2 FLOPs for every parameter\): 16\.5 ms",
        r"\(embedding lookup costs no FLOPs\): 15\.4 ms",
        r"decode step: roofline [\d.]+ ms, measured [\d.]+ ms -> factor [\d.]+",
    ]),
    ("06_batching.py", [
        r"h100-sxm\s+bf16\s+295\.3\s+2\.000\s+295\.3\s+326",
        r"h100-sxm\s+int8\s+295\.3\s+1\.144\s+169\.0\s+177",      # W8A16: the bf16 ridge, test_roofline's b
        r"context 2048: at most 238 sequences fit in 80 GB \(by hand 238\)",
        r"critical batch here: ridge · 4 / 2 = [\d.]+; from the ops \d+",
    ]),
    ("07_self_hosting.py", [
        r"\n\s+8\s+5\.435\s+1,472\s+0\.47\s+0\.47\n",
        r"B=256 would need 84\.8 GB",
        r"self-hosted output/input price ratio [\d.]+x; the API's 3\.0x",
        r"decode\s+roofline\s+[\d,]+ tok/s\s+measured\s+[\d,]+ tok/s",
    ]),
]


def _run(name: str) -> str:
    from test_notebooks import run_lesson
    return run_lesson(name)[0]


@pytest.mark.parametrize("name, patterns", KEY_OUTPUT, ids=[n for n, _ in KEY_OUTPUT])
def test_lesson_runs_and_prints_its_key_numbers(name, patterns):
    out = _run(name)
    for pattern in patterns:
        assert re.search(pattern, out), f"{name}: no match for {pattern!r} in:\n{out}"
    if name == "05_prefill_decode.py":
        factor = float(re.search(r"decode step: .* factor ([\d.]+)", out).group(1))
        print(f"\nreference decode step on this CPU: measured / roofline = {factor:.2f}")
        assert 0.02 < factor < 50


@pytest.mark.parametrize("name", [n for n, _ in KEY_OUTPUT])
def test_lesson_imports_only_the_public_api(name):
    tree = ast.parse((LESSONS / name).read_text())
    public = set(minitx.__all__)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minitx"):
            assert node.module == "minitx", f"{name} imports from {node.module}: use `from minitx import ...`"
            assert {a.name for a in node.names} <= public, f"{name} imports non-public names"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("minitx.") , f"{name} imports {alias.name}"


@pytest.mark.parametrize("name", [n for n, _ in KEY_OUTPUT])
def test_lesson_is_jupytext_percent_format(name):
    text = (LESSONS / name).read_text()
    assert text.startswith("# %% [markdown]")
    cells = re.split(r"^# %%", text, flags=re.M)[1:]
    assert sum(c.startswith(" [markdown]") for c in cells) >= 5
    assert sum(not c.startswith(" [markdown]") for c in cells) >= 5
    for cell in cells:
        if cell.startswith(" [markdown]"):
            body = [line for line in cell.splitlines()[1:] if line.strip()]
            assert all(line.startswith("#") for line in body), "markdown cells must be #-commented"


@pytest.mark.parametrize("name", [n for n, _ in KEY_OUTPUT])
def test_lesson_never_rebinds_an_imported_name(name):
    """`measured = measured.measure_...(...)` breaks a notebook on the cell's second run: a lesson keeps every
    name it imports from minitx bound to what it imported."""
    tree = ast.parse((LESSONS / name).read_text())
    imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "minitx" for a in node.names}
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign, ast.For)) else []
        for target in targets:
            for n in ast.walk(target):
                assert not (isinstance(n, ast.Name) and n.id in imported), f"{name} rebinds {n.id}"
