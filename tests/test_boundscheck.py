"""Run the kernel, decoder and bad-input tests once more with Numba's bounds checking on, so an out-of-bounds index inside a kernel
fails loudly (IndexError) instead of reading garbage.

It needs a fresh Numba cache directory: with the usual on-disk cache, Numba would load the unchecked builds it
cached earlier and nothing would be checked (`test_ops.test_boundscheck_mode_is_live` guards against that).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") == "1", reason="already running bounds-checked")
def test_kernels_under_numba_boundscheck(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ops.py",
                           "tests/test_decode.py", "tests/test_bad_input.py", "tests/test_fused_attention.py",
                           "tests/test_paged_cache.py", "tests/test_engine.py", "tests/test_quantize.py",
                           "tests/test_step_overhead.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
