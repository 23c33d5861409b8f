"""Shared pytest setup for minitx's tests.

* Puts this directory on sys.path, so test modules can `from strategies import configs, shapes` and
  `import reference_ops as ref` under any pytest import mode.
* Registers and loads the hypothesis profiles. `deadline=None` because the first example of a test may include
  Numba's JIT compile (seconds), which is not what a deadline should measure; `max_examples` is kept small
  because every example builds and runs a model. Tests that need more (or fewer) examples say so with their own
  `@settings`.

    HYPOTHESIS_PROFILE=minitx  (default) 20 examples, derandomized: CI sees the same examples every run
    HYPOTHESIS_PROFILE=dev     10 examples, random: quick local runs that explore new examples
    HYPOTHESIS_PROFILE=thorough  200 examples, random: occasional deep runs
"""
from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("minitx", max_examples=20, derandomize=True, **_common)
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("thorough", max_examples=200, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "minitx"))
