"""`minitx grade` and `minitx exercises`: the workshop's exercises, graded against counts from execution.

    minitx exercises DIR                   copy the exercise files out of the installed package into DIR
    minitx grade FILE [FILE ...]           grade one student's exercise functions (their files run in separate,
                                           spawned processes, --timeout seconds per exercise)
    minitx grade DIR [--out DIR] [--force] a class: every .py file (one student each) or sub-folder (one
                                           student's files) in DIR; writes grades.csv and grades.json
    --json                                 the verdicts as JSON

Exit status: 0 when every exercise found passes; 1 when any fails (wrong, not attempted, raised, timed out,
crashed, or a float where an int belongs), when the measured exercise (decode_tokens_per_s) is inconclusive
because this machine was too noisy to measure, or when a file does not load (a syntax error, an exception or
sys.exit at its top level); 2 for a usage error (no such file, a file that loads but defines no exercise, an
existing grades file without --force).
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import resources

from .common import CommandError, print_json


def add_arguments_grade(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="FILE|DIR",
                   help="a student's exercise file(s), or a class folder (one .py or one sub-folder per student)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds each exercise may run before it is stopped (default 30)")
    p.add_argument("--out", metavar="DIR", help="class mode: where grades.csv and grades.json go (default: DIR)")
    p.add_argument("--force", action="store_true", help="class mode: replace existing grades.csv / grades.json")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def grade(args) -> int:
    from ..teaching import grade as grader
    from ..teaching.grade import report
    if not (0 < args.timeout <= 3600):
        raise ValueError(f"--timeout must be in (0, 3600] seconds, got {args.timeout:g}")
    for path in args.paths:
        if not os.path.exists(path):
            raise CommandError(f"{path!r}: no such file or folder")
    folders = [p for p in args.paths if os.path.isdir(p)]
    if folders:
        if len(args.paths) != 1:
            raise CommandError("give one class folder, or one student's files, not both")
        return _grade_class(grader, report, args.paths[0], args)
    if args.out or args.force:
        raise CommandError("--out and --force are for a class folder (minitx grade DIR)")
    for path in args.paths:
        if not path.endswith(".py"):
            raise CommandError(f"{path!r} is not a Python file (.py)")
    result = grader.grade_files(args.paths, args.timeout)
    if not result.results and not result.load_failed:
        raise CommandError("; ".join(result.problems) or "no exercise function found")
    if args.json:
        print_json(result.to_dict())
    else:
        print(report.text(result))
    return 0 if result.passed else 1


def _grade_class(grader, report, folder: str, args) -> int:
    students = grader.students_in(folder)
    if not students:
        raise CommandError(f"{folder!r} holds no student: put one .py file, or one folder of .py files, per "
                           "student in it")
    out = args.out or folder
    existing = [os.path.join(out, n) for n in report.OUTPUTS if os.path.exists(os.path.join(out, n))]
    if existing and not args.force:     # refuse before grading, not after minutes of it
        raise CommandError(f"{' and '.join(existing)} already exist; pass --force to replace, or --out DIR")
    grades = grader.grade_class(folder, args.timeout, progress=lambda m: print(m, file=sys.stderr, flush=True))
    paths = report.write_class(grades, out, overwrite=args.force)
    if args.json:
        print_json({**report.class_json(grades), "written": paths})
    else:
        print(report.class_table(grades))
        print(f"wrote {' and '.join(paths)}")
    return 0 if all(g.passed for g in grades) else 1


def add_arguments_exercises(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder to copy the exercise files into (created if missing)")
    p.add_argument("--force", action="store_true", help="replace exercise files already in DIR")


def exercise_files() -> list:
    """The exercise files shipped in the package (minitx.exercises, from lessons/exercises/), sorted."""
    folder = resources.files("minitx.exercises")
    return sorted((f for f in folder.iterdir() if f.name.startswith("ex") and f.name.endswith(".py")),
                  key=lambda f: f.name)


def exercises(args) -> int:
    files = exercise_files()
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise CommandError(f"{args.dir!r} exists and is not a folder")
    targets = [os.path.join(args.dir, f.name) for f in files]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.force:
        raise CommandError(f"{len(existing)} exercise file(s) already in {args.dir!r} ({os.path.basename(existing[0])}"
                           "...): your work is not overwritten; pass --force to replace them, or choose another "
                           "folder")
    os.makedirs(args.dir, exist_ok=True)
    for source, target in zip(files, targets):
        with open(target, "w", encoding="utf-8") as out:
            out.write(source.read_text(encoding="utf-8"))
    print(f"copied {len(files)} exercise files to {args.dir}: {', '.join(f.name for f in files)}")
    print(f"edit them, then: minitx grade {os.path.join(args.dir, files[0].name) if files else args.dir}")
    return 0
