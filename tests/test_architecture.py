"""The shape of the package: no import cycles, and the two sources of every number kept apart.

Every import is read, including those inside functions (a lazy import is still a dependency). The rules:
  * no cycle anywhere in minitx/;
  * formulas imports nothing that runs a kernel or counts (the model, the ops, params, the optimizer, the KV
    cache, the counters, the measurements), directly or through another module;
  * counting imports no formulas, directly or not;
  * importing the formulas (the calculator's path) loads neither Numba nor any of the above.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minitx"
RUNS_OR_COUNTS = ("core.model", "core.ops", "core.params", "core.optim", "core.kv_cache", "core.paged_cache",
                  "core.generate", "accounting.counting", "accounting.memory", "measure.inference")


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the minitx modules it imports (relative to the package; "" is minitx/__init__)."""
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = [p for p in package if p]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}".strip(".")
                    deps.add(sub if sub in files else target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    if n.split(".")[0] == "minitx":
                        deps.add(".".join(n.split(".")[1:]))
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_import_cycles():
    graph = import_graph()
    cycles = sorted(m for m in graph if m in reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_formulas_and_counting_stay_apart():
    graph = import_graph()
    below_formulas = reachable(graph, "accounting.formulas")
    bad = sorted(m for m in below_formulas if m.startswith(RUNS_OR_COUNTS))
    assert not bad, f"accounting.formulas reaches {bad}"
    assert "accounting.formulas" not in reachable(graph, "accounting.counting")
    assert {"accounting.ledger", "accounting.conventions"} <= below_formulas      # the shared pieces
    assert "accounting.ledger" in reachable(graph, "accounting.counting")


def test_the_calculator_path_loads_no_kernels():
    code = ("import sys; import minitx; from minitx import formulas, serving; "
            "formulas.training_step(minitx.Config.preset('llama-2-70b'), 1, 8); "
            "bad = sorted(m for m in sys.modules if m == 'numba' or m.startswith(tuple('minitx.' + r for r in "
            f"{RUNS_OR_COUNTS!r}))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
