"""Running a student's file in a spawned process, with a timeout per exercise.

The student's code never runs in the grader's process: an infinite loop, a crash, `sys.exit`, a flood of prints
or a function that never returns costs the grader nothing but the timeout. The process is started with
multiprocessing's "spawn" method, the one Windows and macOS use (a fresh interpreter, nothing inherited), so the
grader behaves the same in every room.

    parent                                       child (a fresh interpreter)
    start the child ------------------------->   load the file (runpy: its top level runs once)
                     <------------------------   ("loaded", names of the exercise functions it defines)
    send the jobs: [(name, [args, ...]), ...] ->
                     <------------------------   ("answer", name, i, packed answer), one per case, as they come
                     <------------------------   ("end", name) after each exercise
    per exercise: a deadline; past it the child is killed and a new one takes the remaining exercises

Answers are packed in the child before they travel (`_pack`): ints, floats and None as they are (an int of
more than 10,000 bits, a bool, a list or any other object as a short description), so nothing the student
returns can be too big or too strange to send back. Prints go to a small buffer whose overflow is dropped.
"""
from __future__ import annotations

import io
import multiprocessing
import numbers
import os
import reprlib
import runpy
import sys
import time
import traceback
from typing import Any

from .diagnose import Answer

MAX_INT_BITS = 10_000
LOAD_STATUS = ("loaded", "load_error")


class _Sink(io.TextIOBase):
    """stdout/stderr of the child: keeps the first few thousand characters, drops the rest."""

    def __init__(self, limit: int = 4000):
        self.kept, self.limit = [], limit
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        if self.size < self.limit:
            self.kept.append(text[:self.limit - self.size])
        self.size += len(text)
        return len(text)


def _pack(value: Any) -> tuple[str, Any]:
    """(kind, value) that is safe to send: "int", "float", "none", or "other" with a description."""
    if isinstance(value, bool):
        return "other", f"a bool ({value})"
    if value is None:
        return "none", None
    if isinstance(value, numbers.Integral):
        v = int(value)
        return ("int", v) if v.bit_length() <= MAX_INT_BITS else ("other", f"an int of {v.bit_length():,} bits")
    if isinstance(value, numbers.Real):
        return "float", float(value)
    try:
        shown = reprlib.repr(value)
    except Exception:                      # a __repr__ that raises is the student's too
        shown = "?"
    return "other", f"a {type(value).__name__} ({shown})"


def _where(error: BaseException, path: str) -> str:
    """' (line N of the student's file)' from the traceback's last frame in that file."""
    if isinstance(error, SyntaxError):
        return ""                          # its message names the line already
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == path]
    return f" (line {frames[-1].lineno})" if frames else ""


def _message(error: BaseException, path: str) -> str:
    try:
        text = str(error)[:300]
    except Exception:
        text = ""
    return f"{type(error).__name__}{': ' + text if text else ''}{_where(error, path)}"


def _child(path: str, known: list[str], conn) -> None:
    """The spawned process: load the file, report its exercise functions, answer the jobs sent."""
    sink = _Sink()
    sys.stdout = sys.stderr = sink
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(path))
    try:
        namespace = runpy.run_path(path, run_name="__student__")
    except BaseException as error:         # SyntaxError, an exception at import, sys.exit, KeyboardInterrupt
        if isinstance(error, SystemExit):
            message = f"the file called sys.exit({error.code!r}) while loading"
        else:
            message = f"the file does not load: {_message(error, path)}"
        conn.send(("load_error", message))
        return
    found = [name for name in known if callable(namespace.get(name))]
    conn.send(("loaded", found))
    jobs = conn.recv()
    for name, calls in jobs:
        fn = namespace[name]
        for i, args in enumerate(calls):
            try:
                kind, value = _pack(fn(*args))
                packed = ("value", kind, value, "")
            except NotImplementedError:
                packed = ("not_implemented", "", None, "not attempted: the stub still raises NotImplementedError")
            except SystemExit as error:
                packed = ("raised", "", None, f"called sys.exit({error.code!r})")
            except BaseException as error:       # anything the student's code raises, RecursionError included
                packed = ("raised", "", None, f"raised {_message(error, path)}")
            conn.send(("answer", name, i, packed))
        conn.send(("end", name))


class StudentFile:
    """A student's file run in spawned processes. `exercises()` loads it and lists the exercise functions it
    defines; `answers(jobs, timeout)` calls them."""

    def __init__(self, path: str, known: list[str]):
        self.path = os.path.abspath(path)
        self.known = list(known)
        self.load_error = ""
        self.found: list[str] = []
        self._process = self._conn = None

    def _start(self, timeout: float) -> bool:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=_child, args=(self.path, self.known, child), daemon=True)
        self._process.start()
        child.close()
        message = self._receive(time.monotonic() + timeout)
        if message is None or message[0] not in LOAD_STATUS:
            self.load_error = self._why_no_answer("while loading", timeout, message)
            self.stop()
            return False
        if message[0] == "load_error":
            self.load_error = message[1]
            self.stop()
            return False
        self.found = message[1]
        return True

    def _receive(self, deadline: float):
        """The next message, None past the deadline, or ("crashed",) when the child ended without one."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                if self._conn.poll(min(left, 0.1)):
                    return self._conn.recv()
            except (EOFError, OSError):
                return ("crashed",)
            if not self._process.is_alive() and not self._conn.poll():
                return ("crashed",)

    def _why_no_answer(self, during: str, timeout: float, message) -> str:
        if message is None:
            return f"no answer within {timeout:g} s {during} (an infinite loop? a very slow formula?)"
        code = self._process.exitcode if self._process is not None else None
        if code is None and self._process is not None:
            self._process.join(1)
            code = self._process.exitcode
        return f"the process ended (exit code {code}) {during} without answering: a crash, or os._exit"

    def exercises(self, timeout: float) -> list[str]:
        """The exercise functions the file defines ([] and `load_error` set if it does not load)."""
        if self._process is None:
            self._start(timeout)
        return self.found

    def answers(self, jobs: list[tuple[str, list[tuple]]], timeout: float) -> dict[str, list[Answer]]:
        """Call each exercise on its cases; `timeout` seconds per exercise, loading included for the first."""
        out: dict[str, list[Answer]] = {}
        todo = [(name, calls) for name, calls in jobs]
        while todo:
            if self._process is None and not self._start(timeout):
                for name, calls in todo:
                    out[name] = [Answer("crashed", message=self.load_error)] * len(calls)
                return out
            self._conn.send(todo)
            while todo:
                name, calls = todo[0]
                got: list[Answer] = []
                deadline = time.monotonic() + timeout
                while True:
                    message = self._receive(deadline)
                    if message is None or message[0] == "crashed":
                        status = "timeout" if message is None else "crashed"
                        reason = self._why_no_answer(f"in {name} on case {len(got) + 1} of {len(calls)}",
                                                     timeout, message)
                        got += [Answer(status, message=reason)] * (len(calls) - len(got))
                        out[name] = got
                        todo.pop(0)
                        self.stop()           # a fresh process takes the remaining exercises
                        break
                    if message[0] == "answer":
                        status, kind, value, text = message[3]
                        got.append(Answer(status, value, kind, text))
                    elif message[0] == "end":
                        out[name] = got
                        todo.pop(0)
                        break
                if self._process is None:
                    break
        return out

    def stop(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(2)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join(2)
            self._conn.close()
        self._process = self._conn = None

    def __enter__(self) -> "StudentFile":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
