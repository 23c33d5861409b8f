"""Every lesson reaches minitx through its public names only (`minitx.__all__`): in its imports, and in every
`minitx.<name>` it spells out in the code (`minitx.measure.timing...` would reach past the API into a module
layout that is free to change). Read from the source (ast), so it costs nothing to run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import minitx

LESSONS = sorted((Path(__file__).resolve().parent.parent / "lessons").glob("[0-9][0-9]_*.py"))
PUBLIC = set(minitx.__all__)


def test_every_lesson_is_checked():
    assert len(LESSONS) >= 9, [p.name for p in LESSONS]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_a_lesson_uses_only_public_names(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minitx":
            assert node.module == "minitx", f"{path.name}:{node.lineno} imports from {node.module}"
            names = {a.name for a in node.names}
            assert names <= PUBLIC, f"{path.name}:{node.lineno} imports non-public {sorted(names - PUBLIC)}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name == "minitx" or not alias.name.startswith("minitx."), \
                    f"{path.name}:{node.lineno} imports {alias.name}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "minitx":
            assert node.attr in PUBLIC or node.attr == "__version__", \
                f"{path.name}:{node.lineno} uses minitx.{node.attr}, which is not in minitx.__all__"
