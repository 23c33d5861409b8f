"""Pinning a benchmark to a thread count, shared by the scripts in this folder.

BLAS sizes its thread pool when the library loads, so a thread count is only certain in a process started with
the environment variables already set (`thread_env`); inside that process `limit_threads` pins the same count
again through threadpoolctl (when installed) and Numba, and PyTorch's workers call torch.set_num_threads.
"""
from __future__ import annotations

import os

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")


def thread_env(n: int, base: dict | None = None) -> dict:
    """A copy of the environment (or `base`) with every thread-count variable set to n, for a subprocess."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_ENV:
        env[var] = str(n)
    return env


def limit_threads(n: int) -> str:
    """Pin BLAS and Numba to n threads inside this process; returns how ("env+threadpoolctl+numba"): "env" only
    when the environment already asks for n (it must, before NumPy loads, unless threadpoolctl is installed)."""
    how = ["env"] if os.environ.get("OPENBLAS_NUM_THREADS") == str(n) else []
    import numpy  # noqa: F401  (load the BLAS first, so that threadpoolctl finds it)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n)
        how.append("threadpoolctl")
    except ImportError:
        pass
    try:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        how.append("numba")
    except ImportError:
        pass
    return "+".join(how)
