"""minitx.io.checkpoint across processes: concurrent savers to one path, and a saver killed mid-write.

Each child is a fresh `python -c` that imports only minitx.io.checkpoint (a tenth of a second), so the whole
module runs in a few seconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from minitx.io import checkpoint
from minitx.io.checkpoint import load, save

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file semantics")


def _child(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_savers_without_overwrite_exactly_one_wins(tmp_path):
    """Every saver starts together, checks that the target is missing, and writes slowly: with a check-then-rename
    save each would report success and silently replace the others; an exclusive save lets exactly one win."""
    path, go = tmp_path / "ck.minitx", tmp_path / "go"
    n = 4
    children = []
    for i in range(n):
        children.append(_child(f"""
            import os, sys, time
            import numpy as np
            from minitx.io import checkpoint
            real = checkpoint._write
            def slow(file, data):
                time.sleep(0.05)                 # every saver is past any existence check before one finishes
                real(file, data)
            checkpoint._write = slow
            print("ready", flush=True)
            while not os.path.exists({str(go)!r}):
                time.sleep(0.002)
            try:
                checkpoint.save({str(path)!r}, {{"x": np.full(10, {i})}}, {{"who": {i}}})
            except FileExistsError as error:
                print("exists", error, flush=True)
                sys.exit(3)
            print("saved", flush=True)
        """))
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    go.write_bytes(b"")
    results = [child.communicate(timeout=60) for child in children]
    codes = [child.returncode for child in children]
    assert sorted(codes) == [0] + [3] * (n - 1), results
    winner = codes.index(0)
    for code, (out, err) in zip(codes, results):
        if code == 3:
            assert "overwrite=True" in out and str(path) in out
    tensors, meta = load(path)
    assert meta == {"who": winner} and np.all(tensors["x"] == winner)
    assert sorted(os.listdir(tmp_path)) == ["ck.minitx", "go"]     # no temp files left behind


def test_kill_9_mid_save_keeps_the_old_file_and_the_leftover_is_cleaned_later(tmp_path):
    path = tmp_path / "ck.minitx"
    save(path, {"x": np.arange(100.0)}, {"step": 1})
    before = path.read_bytes()
    child = _child(f"""
        import sys, time
        import numpy as np
        from minitx.io import checkpoint
        real, calls = checkpoint._write, []
        def stalling(file, data):
            real(file, data)
            calls.append(1)
            if len(calls) == 2:              # prefix and header written, data not yet
                file.flush()
                print("writing", flush=True)
                time.sleep(60)
        checkpoint._write = stalling
        checkpoint.save({str(path)!r}, {{"x": np.zeros(10**5)}}, {{"step": 2}}, overwrite=True)
    """)
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before                        # untouched, byte for byte
    tensors, meta = load(path)
    assert meta == {"step": 1} and np.array_equal(tensors["x"], np.arange(100.0))

    leftovers = [name for name in os.listdir(tmp_path) if name != "ck.minitx"]
    assert len(leftovers) == 1 and leftovers[0].startswith(checkpoint.TEMP_PREFIX)
    leftover = tmp_path / leftovers[0]
    save(tmp_path / "other", {"x": np.ones(1)}, {})           # a fresh leftover may be a live save: kept
    assert leftover.exists()
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 1
    os.utime(leftover, (old, old))
    save(tmp_path / "third", {"x": np.ones(1)}, {})           # a stale one is removed by the next save here
    assert sorted(os.listdir(tmp_path)) == ["ck.minitx", "other", "third"]
