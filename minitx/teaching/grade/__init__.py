"""`minitx grade`: a student's formulas against what minitx counts when it runs the model.

    grid.py        the configurations: small models changing one feature at a time, real presets
    truth.py       the truth of each exercise, from execution (never from minitx.formulas)
    exercises.py   the exercises: function name, cases, truth, the catalogue of usual mistakes
    diagnose.py    answers compared case by case; what the failures have in common
    experiment.py  this machine's decode, measured: the truth of "run your own experiment" (slide 17)
    sandbox.py     the student's file run in spawned processes, a timeout per exercise
    report.py      the verdicts as text, JSON, and a class's grades.csv / grades.json

In a script or a notebook, `check(fn)` grades one function in this process (no sandbox: it is your own code):

    from minitx.teaching.grade import check
    print(check(count_params))
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .diagnose import Answer, CaseResult, compare, diagnose
from .exercises import BY_NAME, EXERCISES, TOPICS, Exercise
from .sandbox import StudentFile, _pack

DEFAULT_TIMEOUT = 30.0      # seconds per exercise
PASSED, FAILED, NOT_ATTEMPTED, ERROR, TIMEOUT, CRASHED, INCONCLUSIVE = (
    "passed", "failed", "not attempted", "error", "timeout", "crashed", "inconclusive")


@dataclass
class ExerciseResult:
    """One exercise of one student: the verdict, every case, and the diagnosis of the failing ones."""
    exercise: Exercise
    status: str
    cases: list[CaseResult] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)
    message: str = ""
    details: list[str] = field(default_factory=list)     # a measured exercise's table, passed or not

    @property
    def name(self) -> str:
        return self.exercise.name

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def failing(self) -> list[CaseResult]:
        return [r for r in self.cases if not r.ok]

    def to_dict(self) -> dict:
        return {"name": self.name, "topic": self.exercise.topic, "slide": self.exercise.slide,
                "passed": self.passed, "status": self.status, "message": self.message,
                "cases": len(self.cases), "cases_passed": sum(r.ok for r in self.cases),
                "diagnosis": self.diagnosis, "failing": [r.to_dict() for r in self.failing],
                "details": self.details}


def grade_answers(exercise: Exercise, answers: list[Answer]) -> ExerciseResult:
    """Compare the answers (one per case, in the order of exercise.cases()) with the truth, and diagnose."""
    cases = exercise.cases()
    if answers and all(a.status == "not_implemented" for a in answers):
        return ExerciseResult(exercise, NOT_ATTEMPTED, message="not attempted: the stub still raises "
                                                               "NotImplementedError")
    for status, verdict in (("timeout", TIMEOUT), ("crashed", CRASHED)):
        stuck = [a for a in answers if a.status == status]
        if stuck:
            return ExerciseResult(exercise, verdict, message=stuck[0].message)
    results = [compare(exercise, case, exercise.truth(case), answer) for case, answer in zip(cases, answers)]
    errors = [r for r in results if r.answer.status in ("raised", "not_implemented")]
    if errors:
        first = errors[0]
        return ExerciseResult(exercise, ERROR, results, [], f"{first.answer.message} on {first.case.label}"
                              + (f" (and {len(errors) - 1} more configurations)" if len(errors) > 1 else ""))
    details = exercise.report(results) if exercise.report else []
    failing = [r for r in results if not r.ok]
    if failing and exercise.noise and all(exercise.noise(r.case) for r in failing):
        # Every miss is on a measurement whose runs disagreed: that cannot fail a student (nor pass one).
        why = "; ".join(exercise.noise(r.case) for r in failing)
        return ExerciseResult(exercise, INCONCLUSIVE, results, [], "this machine was too noisy to grade the "
                              f"cases you missed ({why}): close other programs and grade again", details)
    status = PASSED if not failing else FAILED
    return ExerciseResult(exercise, status, results, diagnose(exercise, results), details=details)


def _call(fn: Callable, args: tuple) -> Answer:
    try:
        kind, value = _pack(fn(*args))
        return Answer("value", value, kind)
    except NotImplementedError:
        return Answer("not_implemented", message="not attempted: the stub still raises NotImplementedError")
    except Exception as error:
        return Answer("raised", message=f"raised {type(error).__name__}: {error}")


def check(fn: Callable, name: str | None = None) -> ExerciseResult:
    """Grade one function in this process, by its name (or `name`): for a notebook, where the code is yours.
    No timeout and no sandbox; `minitx grade FILE` runs a file in a separate process."""
    if not callable(fn):
        raise TypeError(f"fn must be your exercise function (check(count_params)), got {type(fn).__name__} "
                        f"{fn!r:.40}")
    exercise = BY_NAME.get(name or getattr(fn, "__name__", ""))
    if exercise is None:
        raise ValueError(f"{name or getattr(fn, '__name__', fn)!r} is not an exercise; exercises: "
                         f"{', '.join(BY_NAME)}")
    return grade_answers(exercise, [_call(fn, case.args) for case in exercise.cases()])


def grade_functions(functions: Mapping[str, Callable]) -> list[ExerciseResult]:
    """Grade several functions in this process, keyed by exercise name (the tests' fast path)."""
    return [check(fn, name) for name, fn in functions.items()]


@dataclass
class StudentGrade:
    """Every exercise found in one student's files."""
    student: str
    files: list[str]
    results: list[ExerciseResult]
    problems: list[str] = field(default_factory=list)     # files that did not load, or held no exercise
    load_failed: bool = False                               # a file did not load (its student's fault, not usage)

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.problems and all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"student": self.student, "files": self.files, "passed": self.passed, "problems": self.problems,
                "load_failed": self.load_failed,
                "exercises": [r.to_dict() for r in self.results]}


def grade_files(paths: Iterable[str], timeout: float = DEFAULT_TIMEOUT, student: str = "") -> StudentGrade:
    """Grade the exercise functions defined in one student's files, each file run in spawned processes."""
    paths = [os.fspath(p) for p in paths]
    results: dict[str, ExerciseResult] = {}
    problems: list[str] = []
    load_failed = False
    for path in paths:
        with StudentFile(path, list(BY_NAME)) as sandbox:
            found = sandbox.exercises(timeout)
            if sandbox.load_error:
                problems.append(f"{path}: {sandbox.load_error}")
                load_failed = True
                continue
            if not found:
                problems.append(f"{path}: no exercise function found (expected one of: {', '.join(BY_NAME)})")
                continue
            jobs = [(name, [case.args for case in BY_NAME[name].cases()]) for name in found]
            for name, answers in sandbox.answers(jobs, timeout).items():
                results[name] = grade_answers(BY_NAME[name], answers)
    order = list(BY_NAME)
    return StudentGrade(student or os.path.splitext(os.path.basename(paths[0]))[0] if paths else student, paths,
                        sorted(results.values(), key=lambda r: order.index(r.name)), problems, load_failed)


def students_in(directory: str) -> dict[str, list[str]]:
    """A class folder: each .py file is a student (named after the file), and each sub-folder is a student (named
    after the folder) whose .py files hold their exercises. Hidden entries and __pycache__ are skipped."""
    found: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry.startswith((".", "_")):
            continue
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.endswith(".py") and not f.startswith((".", "_")))
            if files:
                found[entry] = files
        elif entry.endswith(".py"):
            found[entry[:-3]] = [path]
    return found


def grade_class(directory: str, timeout: float = DEFAULT_TIMEOUT,
                progress: Callable[[str], None] | None = None) -> list[StudentGrade]:
    """Grade every student of a class folder (see students_in)."""
    grades = []
    for student, files in students_in(directory).items():
        if progress:
            progress(f"grading {student} ({len(files)} file{'s' if len(files) != 1 else ''})")
        grades.append(grade_files(files, timeout, student))
    return grades


__all__ = ["DEFAULT_TIMEOUT", "EXERCISES", "TOPICS", "ExerciseResult", "StudentGrade", "check", "grade_answers",
           "grade_class", "grade_files", "grade_functions", "students_in"]
