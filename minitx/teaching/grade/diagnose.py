"""Comparing a student's answers with the truth, case by case, and saying what the failures have in common.

    compare(exercise, case, expected, answer) -> CaseResult      one case: right or wrong, and why
    diagnose(exercise, results) -> list[str]                      the failing cases, read together

A diagnosis tries, in order:

1. The exercise's catalogue of usual mistakes (minitx.teaching.grade.exercises): each is an alternative truth,
   the answer the mistake would give. A mistake that reproduces the answer of *every* failing case is named
   (several that each explain some of the cases are named with the cases they explain).
2. The grid (minitx.teaching.grade.grid) read as an experiment: when every failing case has a feature (GQA/MQA,
   a free head_dim, biases, tied embeddings, a 16-bit format...) and every case without it passes, the formula
   is "wrong only with" that feature.
3. The shape of the error: the same ratio on every case (off by a constant factor), or the same whole number of
   V×C tables on every failing case (the embedding or the LM head counted once too often, or not at all).

Integers must be ints (a float, even 1.2e10, is reported with a hint) and match exactly; floats must fall within
the exercise's relative tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .grid import Case


@dataclass(frozen=True)
class Answer:
    """What the student's function did on one case."""
    status: str          # "value" | "raised" | "not_implemented" | "timeout" | "crashed" | "not_run"
    value: Any = None    # int, float or None when status is "value"; a description for "other" values
    kind: str = ""       # "int" | "float" | "none" | "other" (a value of another type, described in `value`)
    message: str = ""    # the exception, the timeout, the crash


@dataclass(frozen=True)
class CaseResult:
    case: Case
    expected: Any
    answer: Answer
    ok: bool
    hint: str = ""

    def to_dict(self) -> dict:
        got = self.answer.value if self.answer.status == "value" else None
        return {"case": self.case.label, "config": self.case.to_dict(), "expected": _plain(self.expected),
                "got": _plain(got), "got_type": self.answer.kind or self.answer.status, "hint": self.hint}


def _plain(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _describe(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.1f}" if x.is_integer() and abs(x) < 1e16 else f"{x:.6g}"
    return str(x)


def same(exercise, expected: Any, got: Any) -> bool:
    """Whether `got` is right: exactly for integers (and None), within the tolerance for floats, within a
    factor for a measured truth."""
    if expected is None or got is None:
        return expected is None and got is None
    if exercise.integer:
        return isinstance(got, int) and got == expected
    if not isinstance(got, (int, float)) or not math.isfinite(got):
        return False
    if exercise.within:
        return expected > 0 and got > 0 and 1 / exercise.within <= got / expected <= exercise.within
    if expected == 0:
        return got == 0
    return abs(got / expected - 1) <= exercise.tolerance + 1e-12


def compare(exercise, case: Case, expected: Any, answer: Answer) -> CaseResult:
    """One case: the answer's type first (an int where an int belongs), then its value."""
    if answer.status != "value":
        return CaseResult(case, expected, answer, False, answer.message)
    got, kind = answer.value, answer.kind
    if kind == "other":
        return CaseResult(case, expected, answer, False, f"returned {got}; expected "
                          f"{'an int' if exercise.integer else 'a number'}" +
                          (" (or None)" if expected is None else ""))
    if exercise.integer and kind == "float":
        right = math.isfinite(got) and float(got).is_integer() and expected is not None and int(got) == expected
        return CaseResult(case, expected, answer, False,
                          f"returned a float ({got!r}) where a whole number of {exercise.unit} belongs"
                          + (": the value is right, the type is not" if right else "")
                          + "; return an int (use // rather than /, or int(...) of an exact value)")
    if same(exercise, expected, got):
        return CaseResult(case, expected, answer, True)
    if not exercise.integer and expected and isinstance(got, (int, float)) and math.isfinite(got):
        allowed = f"within {exercise.within:g}× of the measurement" if exercise.within else \
            f"tolerance ±{exercise.tolerance:.0%}"
        return CaseResult(case, expected, answer, False, f"{got / expected:.3g}× the truth ({allowed})")
    return CaseResult(case, expected, answer, False)


def diagnose(exercise, results: list[CaseResult]) -> list[str]:
    """What the failing cases have in common (see the module docstring). Empty when every case passes."""
    failing = [r for r in results if not r.ok]
    if not failing:
        return []
    kinds = ("int", "none") if exercise.integer else ("int", "float", "none")
    if any(r.answer.status != "value" or r.answer.kind not in kinds for r in failing):
        return []            # errors, timeouts, wrong types: their own hints say what happened
    found = _named(exercise, failing)
    if found:
        return found
    return (_only_with(results, failing) + _constant_factor(exercise, results, failing)
            + _vocabulary_tables(exercise, failing)) or [
        "no usual mistake explains these answers: compare expected and got on the failing configurations"]


def _named(exercise, failing: list[CaseResult]) -> list[str]:
    whole, partial = [], []
    for mistake in exercise.mistakes:
        explained, distance = [], 0.0
        for r in failing:
            try:
                alt = mistake.alt(exercise.truth, r.case, r.expected)
            except (ValueError, TypeError, ZeroDivisionError):
                alt = None          # the changed model does not exist (e.g. a head size RoPE cannot rotate)
            if alt is not None and same(exercise, alt, r.answer.value):
                explained.append(r.case.label)
                distance += _log_distance(alt, r.answer.value)
        if len(explained) == len(failing):
            whole.append((distance / len(failing), f"[{mistake.key}] {mistake.hint}"))
        elif explained:
            partial.append((0.0, f"[{mistake.key}] {mistake.hint} (explains {', '.join(explained)})"))
    if exercise.within and whole:
        # A measured truth is matched within a factor, so two mistakes can both fit: name the one whose answers
        # come closest to the student's (the step that never grows, not the roofline that happens to be near it).
        best = min(d for d, _ in whole)
        whole = [(d, line) for d, line in whole if d <= best + math.log(1.1)]
    return _unique([line for _, line in whole]) or _unique([line for _, line in partial])


def _log_distance(a, b) -> float:
    """|log(a / b)|: how many times apart two positive answers are (0 for exact integers and equal values)."""
    try:
        return abs(math.log(float(a) / float(b))) if a and b and a / b > 0 else 0.0
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return 0.0


def _unique(lines: list[str]) -> list[str]:
    """Two mistakes with the same effect (3/4 of the truth) on every case are one diagnosis: keep both keys."""
    by_hint: dict[str, list[str]] = {}
    for line in lines:
        key, hint = line[1:].split("] ", 1)
        by_hint.setdefault(hint, []).append(key)
    return [f"[{' or '.join(keys)}] {hint}" for hint, keys in by_hint.items()]


def _only_with(results: list[CaseResult], failing: list[CaseResult]) -> list[str]:
    """Features that every failing case has and every passing case... lacks, or rather: every case without the
    feature passes. The most specific such feature (held by the fewest cases) is named."""
    candidates = []
    for feature in sorted(set().union(*(r.case.features for r in results))):
        holders = [r for r in results if feature in r.case.features]
        if all(feature in r.case.features for r in failing) and all(r.ok for r in results if r not in holders) \
                and len(holders) < len(results):
            candidates.append((len(holders), feature, sum(not r.ok for r in holders)))
    if not candidates:
        return []
    size, feature, bad = min(candidates)
    return [f"wrong only with {feature}: {bad} of the {size} configurations that have it fail, every other one "
            "passes"]


def _ratio(expected, got) -> Fraction | float | None:
    if not expected or got is None or isinstance(got, str):
        return None
    if isinstance(expected, int) and isinstance(got, int):
        return Fraction(got, expected)
    return got / expected


def _constant_factor(exercise, results: list[CaseResult], failing: list[CaseResult]) -> list[str]:
    if len(failing) < len(results) or len(results) < 2:
        return []
    ratios = [_ratio(r.expected, r.answer.value) for r in results]
    if any(q is None for q in ratios):
        return []
    first = ratios[0]
    if all(math.isclose(float(q), float(first), rel_tol=1e-9) for q in ratios):
        shown = str(first) if isinstance(first, Fraction) and first.denominator <= 64 else f"{float(first):.4g}"
        return [f"off by a constant factor on every configuration: your answers are {shown} × the truth. Which "
                "factor of the formula is missing or extra (2 FLOPs per MAC? K *and* V? bits or bytes? a copy "
                "of the weights?)"]
    return []


def _vocabulary_tables(exercise, failing: list[CaseResult]) -> list[str]:
    if exercise.v_table is None or not exercise.integer:
        return []
    ks = set()
    for r in failing:
        unit = exercise.v_table(r.case)
        diff = r.answer.value - r.expected if isinstance(r.answer.value, int) else None
        if diff is None or unit == 0 or diff % unit:
            return []
        ks.add(diff // unit)
    if len(ks) != 1:
        return []
    k = ks.pop()
    what = f"{abs(k)} V×C table{'s' if abs(k) != 1 else ''}"
    return [f"off by a term that scales with V: {what} {'too many' if k > 0 else 'too few'} (the token "
            "embedding, or the LM head: is it tied to the embedding in this model?)"]
