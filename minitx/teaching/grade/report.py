"""The verdicts as a student reads them (text), as a script reads them (JSON), and a class's table.

    text(grade)                    one line per exercise; under a failure its diagnosis and a few failing cases
    class_table(grades)            students × exercises, for the terminal
    write_class(grades, folder)    grades.csv (students × exercises) and grades.json (everything), refusing to
                                   replace existing files unless overwrite=True
"""
from __future__ import annotations

import csv
import io
import json
import os
import textwrap

from . import PASSED, StudentGrade
from .diagnose import _describe
from .exercises import EXERCISES

SHOWN = 4          # failing cases shown per exercise in the text report (--json has them all)
WIDTH = 110
SHORT = {"passed": "pass", "failed": "FAIL", "not attempted": "not attempted", "error": "ERROR",
         "timeout": "TIMEOUT", "crashed": "CRASHED", "inconclusive": "INCONCLUSIVE"}


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2),
                         break_on_hyphens=False) or [""]


def text(grade: StudentGrade) -> str:
    lines = [f"minitx grade: {grade.student} ({', '.join(os.path.basename(f) for f in grade.files)})"]
    for problem in grade.problems:
        lines += _wrap(f"PROBLEM  {problem}", 0)
    width = max((len(r.name) for r in grade.results), default=0)
    for r in grade.results:
        done = f"{sum(c.ok for c in r.cases)}/{len(r.cases)} configurations" if r.cases else ""
        lines.append(f"{SHORT[r.status]:<13} {r.name:<{width}}  {done}  [{r.exercise.slide}]".rstrip())
        if r.message:
            lines += _wrap(r.message, 6)
        for d in r.diagnosis:
            lines += _wrap(f"diagnosis: {d}", 6)
        lines += [" " * 6 + line for line in r.details]
        for c in (r.failing[:SHOWN] if r.status == "failed" and not r.details else []):   # a table says it all
            got = c.answer.value if c.answer.status == "value" else c.answer.status
            lines += _wrap(f"{c.case.label}: expected {_describe(c.expected)}, got {_describe(got)}"
                           + (f" ({c.hint})" if c.hint and c.hint != r.message else ""), 6)
        if len(r.failing) > SHOWN and r.status == "failed" and not r.details:
            lines.append(f"      ... and {len(r.failing) - SHOWN} more failing configurations (--json lists all)")
    passed = sum(r.status == PASSED for r in grade.results)
    lines.append(f"{passed} of {len(grade.results)} exercise{'s' if len(grade.results) != 1 else ''} pass"
                 + ("." if passed < len(grade.results) or grade.problems else ": well done."))
    return "\n".join(lines)


def _columns(grades: list[StudentGrade]) -> list[str]:
    seen = {r.name for g in grades for r in g.results}
    return [e.name for e in EXERCISES if e.name in seen]


def _cell(grade: StudentGrade, name: str) -> str:
    for r in grade.results:
        if r.name == name:
            return r.status
    return "missing"


def class_rows(grades: list[StudentGrade]) -> tuple[list[str], list[list[str]]]:
    columns = _columns(grades)
    header = ["student"] + columns + ["passed", "of", "problems"]
    rows = []
    for g in grades:
        cells = [_cell(g, n) for n in columns]
        rows.append([g.student] + cells + [str(sum(c == PASSED for c in cells)), str(len(columns)),
                                           "; ".join(g.problems)])
    return header, rows


def class_table(grades: list[StudentGrade]) -> str:
    header, rows = class_rows(grades)
    shown = [[SHORT.get(c, c) if 0 < i < len(header) - 3 else c for i, c in enumerate(row)] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header[:-1], *(r[:-1] for r in shown))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header[:-1], widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + (f"  ({row[-1]})" if row[-1] else "")
            for row in shown]
    return "\n".join(out)


def class_json(grades: list[StudentGrade]) -> dict:
    return {"exercises": _columns(grades), "students": [g.to_dict() for g in grades],
            "all_passed": bool(grades) and all(g.passed for g in grades)}


OUTPUTS = ("grades.csv", "grades.json")


def write_class(grades: list[StudentGrade], folder: str, overwrite: bool = False) -> list[str]:
    """Write grades.csv and grades.json into `folder`. An existing file is refused (a ValueError naming it)
    unless overwrite=True: a teacher's earlier grades are never replaced by accident. Each file is written to a
    temporary name first and then moved into place."""
    paths = [os.path.join(folder, name) for name in OUTPUTS]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise ValueError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass "
                         "--force to replace, or --out DIR to write elsewhere")
    header, rows = class_rows(grades)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    contents = [buffer.getvalue(), json.dumps({"schema_version": 1, **class_json(grades)}, indent=1,
                                              ensure_ascii=False, allow_nan=False, default=str) + "\n"]
    os.makedirs(folder, exist_ok=True)
    for path, content in zip(paths, contents):
        temporary = path + ".partial"
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        os.replace(temporary, path)
    return paths
