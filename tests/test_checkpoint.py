"""Tests for minitx.io.checkpoint: exact round trips, atomic saves, clear errors."""

import ast
import hashlib
import json
import math
import os
import pickle
import stat
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minitx.io import checkpoint
from minitx.io.checkpoint import CheckpointError, load, save

META = {"config": {"d_model": 64, "n_layers": 2, "name": "tiny"}, "step": 7,
        "seed": 0, "lr": 3e-4, "tags": ["a", "b"], "note": None, "ok": True}


def make_tensors():
    rng = np.random.default_rng(0)
    return {
        "embed.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4), dtype=np.int64),
        "mask": np.array([True, False, True]),
        "steps": np.arange(6, dtype=np.int32).reshape(2, 3),
    }


def assert_same(a, b):
    assert list(a) == list(b)  # same names, same order
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name])


# ---------------------------------------------------------------- round trips

dtypes = st.sampled_from(["float16", "float32", "float64", "int32", "int64", "uint8", "bool"])
arrays = dtypes.flatmap(lambda dtype: hnp.arrays(
    dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1, max_size=10), arrays, max_size=4))
def test_round_trip_is_exact(tmp_path, tensors):
    path = tmp_path / "ck.minitx"
    save(path, tensors, {"step": 1}, overwrite=True)
    loaded, meta = load(path)
    assert meta == {"step": 1}
    assert_same(tensors, loaded)  # NaN == NaN here: assert_array_equal treats them as equal
    for array in loaded.values():
        assert array.flags.writeable and array.dtype.isnative


def test_round_trip_fixed_example_and_meta(tmp_path):
    path = tmp_path / "ck.minitx"
    tensors = make_tensors()
    tensors["nan"] = np.array([np.nan, np.inf, -0.0])  # non-finite values are legal data
    save(path, tensors, META)
    loaded, meta = load(path)
    assert_same(tensors, loaded)
    assert np.signbit(loaded["nan"][2])  # -0.0 survives bit for bit
    assert meta == META
    loaded["embed.weight"][0, 0] = 123.0  # writable, and does not affect the file
    assert load(path)[0]["embed.weight"][0, 0] != 123.0


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    path = tmp_path / "ck.minitx"
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    tensors = {"transposed": base.T, "big_endian": base.astype(">f4")}
    save(path, tensors, {})
    loaded, _ = load(path)
    np.testing.assert_array_equal(loaded["transposed"], base.T)
    np.testing.assert_array_equal(loaded["big_endian"], base)
    assert loaded["big_endian"].dtype == np.float32


def test_save_accepts_str_and_pathlike(tmp_path):
    save(str(tmp_path / "a"), {"x": np.ones(2)}, {})
    save(tmp_path / "b", {"x": np.ones(2)}, {})
    assert load(str(tmp_path / "b"))[0]["x"].tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- save arguments

@pytest.mark.parametrize("bad_array", [np.array(["a"]), np.array([1 + 2j]),
                                       np.array([object()]), np.zeros(2, np.int8)])
def test_rejects_unsupported_dtypes(tmp_path, bad_array):
    with pytest.raises(ValueError, match="unsupported dtype"):
        save(tmp_path / "ck", {"x": bad_array}, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad_meta", [{"t": (1, 2)}, {1: "int key"},
                                      {"x": float("nan")}, {"a": np.float32(1)}])
def test_rejects_meta_that_would_not_round_trip(tmp_path, bad_meta):
    with pytest.raises((TypeError, ValueError)):
        save(tmp_path / "ck", {}, bad_meta)
    assert os.listdir(tmp_path) == []


def test_rejects_more_dimensions_than_load_accepts(tmp_path):
    with pytest.raises(ValueError, match="dimensions"):
        save(tmp_path / "ck", {"x": np.zeros((1,) * (checkpoint.MAX_DIMS + 1))}, {})
    save(tmp_path / "ck", {"x": np.zeros((1,) * checkpoint.MAX_DIMS)}, {})
    assert load(tmp_path / "ck")[0]["x"].ndim == checkpoint.MAX_DIMS


def test_rejects_non_str_names(tmp_path):
    with pytest.raises(TypeError, match="names"):
        save(tmp_path / "ck", {1: np.zeros(1)}, {})


# ---------------------------------------------------------------- overwrite / atomicity

def test_refuses_to_overwrite_by_default(tmp_path):
    path = tmp_path / "ck.minitx"
    save(path, {"x": np.zeros(2)}, {"step": 1})
    with pytest.raises(FileExistsError, match="overwrite=True") as info:
        save(path, {"x": np.ones(2)}, {"step": 2})
    assert str(path) in str(info.value)
    assert load(path)[1] == {"step": 1}


@pytest.mark.parametrize("unclear", ["no", "False", 0, 1, None])
def test_overwrite_must_be_a_bool(tmp_path, unclear):
    # overwrite="no" is truthy: taken as a yes it would replace the file; anything but True/False is refused
    path = tmp_path / "ck.minitx"
    save(path, {"x": np.zeros(2)}, {"step": 1})
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        save(path, {"x": np.ones(2)}, {"step": 2}, overwrite=unclear)
    assert load(path)[1] == {"step": 1}


def test_overwrite_true_replaces(tmp_path):
    path = tmp_path / "ck.minitx"
    save(path, {"x": np.zeros(2)}, {"step": 1})
    save(path, {"y": np.ones(3)}, {"step": 2}, overwrite=True)
    tensors, meta = load(path)
    assert list(tensors) == ["y"] and meta == {"step": 2}
    assert os.listdir(tmp_path) == ["ck.minitx"]  # no temp files left behind


def test_crash_mid_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.minitx"
    save(path, make_tensors(), {"step": 1})
    writes = []

    def crashing_write(file, data):
        writes.append(len(data))
        if len(writes) == 3:  # after the prefix and header: halfway through the data
            raise OSError("disk on fire")
        file.write(data)

    monkeypatch.setattr(checkpoint, "_write", crashing_write)
    with pytest.raises(OSError, match="disk on fire"):
        save(path, {"x": np.ones(1000)}, {"step": 2}, overwrite=True)
    assert len(writes) == 3
    tensors, meta = load(path)  # the old checkpoint is untouched
    assert meta == {"step": 1}
    assert_same(make_tensors(), tensors)
    assert os.listdir(tmp_path) == ["ck.minitx"]


def test_crash_before_first_save_leaves_nothing(tmp_path, monkeypatch):
    def crashing_write(file, data):
        raise KeyboardInterrupt  # even a Ctrl-C mid-save cleans up

    monkeypatch.setattr(checkpoint, "_write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "ck", {"x": np.ones(3)}, {})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- corrupted files

@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "ck.minitx"
    save(path, make_tensors(), META)
    return path


def rewrite(path, data):
    path.write_bytes(data)
    return path


def expect_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_empty_file(good_file):
    expect_error(rewrite(good_file, b""), "empty")


def test_wrong_magic(good_file):
    expect_error(rewrite(good_file, b"NOTMINIT" + good_file.read_bytes()[8:]),
                 "not a minitx checkpoint")
    expect_error(rewrite(good_file, b"\x93NUMPY\x01\x00 some npy file"), "not a minitx")


def test_wrong_version(good_file):
    data = bytearray(good_file.read_bytes())
    data[8:12] = struct.pack("<I", 99)
    expect_error(rewrite(good_file, bytes(data)), "version 99")


@pytest.mark.parametrize("keep", [9, 20, 40, 200, -1, -33, -40])
def test_truncated(good_file, keep):
    data = good_file.read_bytes()
    expect_error(rewrite(good_file, data[:keep]), "truncated|checksum")


def test_trailing_garbage(good_file):
    expect_error(rewrite(good_file, good_file.read_bytes() + b"x"), "trailing")


def test_every_flipped_byte_is_detected(good_file):
    data = good_file.read_bytes()
    for position in range(len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x01
        with pytest.raises(CheckpointError):
            load(rewrite(good_file, bytes(corrupted)))


def _with_header(path, header_bytes, body=b""):
    prefix = struct.pack("<8sIQ", b"MINITXCK", 1, len(header_bytes))
    return rewrite(path, prefix + header_bytes + body + b"\0" * 32)


@pytest.mark.parametrize("header, match", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b"[]", "lacks 'meta'"),
    (b'{"meta": {}}', "lacks"),
    (b'{"meta": {}, "tensors": [42]}', "bad tensor entry"),
    (b'{"meta": {}, "tensors": [{"name": "x", "dtype": "object", "shape": [], '
     b'"offset": 0, "nbytes": 8}]}', "unsupported dtype"),
    (b'{"meta": {}, "tensors": [{"name": "x", "dtype": "int64", "shape": [-1], '
     b'"offset": 0, "nbytes": 8}]}', "bad shape"),
    (b'{"meta": {}, "tensors": [{"name": "x", "dtype": "int64", "shape": [2], '
     b'"offset": 0, "nbytes": 8}]}', "offset/size"),
    (b'{"meta": {}, "tensors": [{"name": "x", "dtype": "int64", "shape": [99999999999], '
     b'"offset": 0, "nbytes": 799999999992}]}', "truncated"),
])
def test_garbage_headers(tmp_path, header, match):
    expect_error(_with_header(tmp_path / "bad", header), match)


def test_header_length_past_end(tmp_path):
    path = rewrite(tmp_path / "bad", struct.pack("<8sIQ", b"MINITXCK", 1, 2**63) + b"\0" * 40)
    expect_error(path, "truncated")


def test_valid_structure_with_wrong_checksum(tmp_path):
    header = json.dumps({"meta": {}, "tensors": [
        {"name": "x", "dtype": "uint8", "shape": [2], "offset": 0, "nbytes": 2}]}).encode()
    expect_error(_with_header(tmp_path / "bad", header, b"\1\2"), "checksum")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "ck"
    for candidate in (blob, b"MINITXCK\x01\0\0\0" + blob):
        path.write_bytes(candidate)
        with pytest.raises(CheckpointError):
            load(path)


# ---------------------------------------------------------------- no code execution

def test_module_never_uses_pickle():
    source = open(checkpoint.__file__, encoding="utf-8").read()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import)
                              else [ast.alias(node.module or "")])}
    assert imported.isdisjoint({"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"})
    assert "import pickle" not in source and "allow_pickle=True" not in source
    # No NumPy file loaders (np.load/np.fromfile) and no code evaluation at all.
    called = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert called.isdisjoint({"np.load", "np.fromfile", "eval", "exec", "compile"})


def test_load_works_with_pickle_disabled(good_file, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    tensors, meta = load(good_file)
    assert meta == META and "embed.weight" in tensors


# ---------------------------------------------------------------- permissions, atomic no-overwrite, temp files

def test_overwrite_keeps_the_files_permission_bits(tmp_path):
    path = tmp_path / "ck.minitx"
    save(path, {"x": np.zeros(2)}, {"step": 1})
    os.chmod(path, 0o600)                                   # the user made it private
    save(path, {"x": np.ones(2)}, {"step": 2}, overwrite=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    save(path, {"x": np.ones(2)}, {"step": 3}, overwrite=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640)])
def test_a_new_file_gets_the_usual_mode_under_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save(tmp_path / "ck", {"x": np.zeros(2)}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "ck").st_mode) == mode


def test_no_overwrite_is_atomic_against_a_concurrent_writer(tmp_path, monkeypatch):
    """Another process creates the target while we write: we must refuse, not silently replace its file."""
    path = tmp_path / "ck.minitx"
    real_write = checkpoint._write

    def racing_write(file, data):
        if not path.exists():
            path.write_bytes(b"the other process's checkpoint")
        real_write(file, data)

    monkeypatch.setattr(checkpoint, "_write", racing_write)
    with pytest.raises(FileExistsError, match="overwrite=True") as info:
        save(path, {"x": np.ones(3)}, {"step": 1})
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"the other process's checkpoint"
    assert os.listdir(tmp_path) == ["ck.minitx"]            # our temp file is gone


def test_no_overwrite_without_hard_links_still_refuses(tmp_path, monkeypatch):
    """Where the file system has no hard links (os.link fails with EPERM/ENOTSUP), the fallback is still
    exclusive: an existing target is refused, a missing one is created."""
    import errno

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted", src)

    monkeypatch.setattr(checkpoint.os, "link", no_links)
    path = tmp_path / "ck.minitx"
    save(path, {"x": np.zeros(2)}, {"step": 1})
    assert load(path)[1] == {"step": 1}
    real_write = checkpoint._write

    def racing_write(file, data):
        if not (tmp_path / "other").exists():
            (tmp_path / "other").write_bytes(b"theirs")
        real_write(file, data)

    monkeypatch.setattr(checkpoint, "_write", racing_write)
    with pytest.raises(FileExistsError):
        save(tmp_path / "other", {"x": np.ones(2)}, {"step": 2})
    assert (tmp_path / "other").read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["ck.minitx", "other"]


def test_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", recording_fsync)
    save(tmp_path / "a", {"x": np.zeros(2)}, {})
    assert synced == [False, True]                          # the file's bytes, then the directory entry
    synced.clear()
    save(tmp_path / "a", {"x": np.zeros(2)}, {}, overwrite=True)
    assert synced == [False, True]


def test_stale_temp_files_are_removed_and_fresh_ones_kept(tmp_path):
    prefix = checkpoint.TEMP_PREFIX
    stale = tmp_path / f"{prefix}crashed.tmp"
    fresh = tmp_path / f"{prefix}in-progress.tmp"
    unrelated = tmp_path / "notes.tmp"
    other_suffix = tmp_path / f"{prefix}keep.txt"
    for p in (stale, fresh, unrelated, other_suffix):
        p.write_bytes(b"x")
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 60
    for p in (stale, unrelated, other_suffix):
        os.utime(p, (old, old))
    save(tmp_path / "ck", {"x": np.zeros(2)}, {})
    assert sorted(os.listdir(tmp_path)) == sorted(["ck", fresh.name, unrelated.name, other_suffix.name])


# ---------------------------------------------------------------- bounded, typed parsing

def _raw(path, header, body=b"", digest=True):
    """A file with the given header (an object, encoded as JSON, or bytes) and a VALID checksum, so that the
    parser itself is exercised rather than the checksum."""
    if not isinstance(header, bytes):
        header = json.dumps(header).encode("utf-8")
    data = struct.pack("<8sIQ", b"MINITXCK", 1, len(header)) + header + body
    path.write_bytes(data + (hashlib.sha256(data).digest() if digest else b"\0" * 32))
    return path


def _entry(name="x", dtype="uint8", shape=(2,), offset=0, nbytes=None):
    if nbytes is None:
        itemsize = np.dtype(dtype).itemsize if isinstance(dtype, str) else 1
        nbytes = itemsize * math.prod(shape)
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes}


@pytest.mark.parametrize("header, body, match", [
    ({"meta": {}, "tensors": [_entry(dtype=["float32"])]}, b"\0\0", "dtype"),          # unhashable dtype
    ({"meta": {}, "tensors": [_entry(dtype={"a": 1})]}, b"\0\0", "dtype"),
    ({"meta": {}, "tensors": [_entry(shape=[True, 2], nbytes=2)]}, b"\0\0", "shape"),   # bool is not a dim
    ({"meta": {}, "tensors": [_entry(shape=[2.0], nbytes=2)]}, b"\0\0", "shape"),
    ({"meta": {}, "tensors": [_entry(shape=(1,) * 40)]}, b"\0", "dimensions"),          # NumPy allows 64
    ({"meta": {}, "tensors": [_entry(shape=(1,) * 70)]}, b"\0", "dimensions"),          # beyond NumPy's 64
    ({"meta": {}, "tensors": [_entry(dtype="int64", shape=(2**62, 4))]}, b"", "truncated|larger"),
    ({"meta": {}, "tensors": [_entry(dtype="int64", shape=(2**62, 4), nbytes=0)]}, b"", "offset/size"),
    ({"meta": {}, "tensors": [_entry(shape=(2**64,))]}, b"", "truncated|larger"),
    ({"meta": {}, "tensors": [_entry(offset=True)]}, b"\0\0", "offset"),
    ({"meta": {}, "tensors": [_entry(nbytes=2.0)]}, b"\0\0", "offset/size"),
    ({"meta": {}, "tensors": [_entry(name=7)]}, b"\0\0", "bad tensor entry"),
    ({"meta": {}, "tensors": [_entry(), _entry(offset=2)]}, b"\0" * 4, "duplicate"),
    ({"meta": {}, "tensors": [_entry(dtype="bool", shape=(2,))]}, b"\0\2", "bool"),    # bools are 0 or 1
    ({"meta": {}, "tensors": {}}, b"", "lacks"),
    (b'{"meta": {"x": NaN}, "tensors": []}', b"", "NaN|JSON"),                          # save never writes NaN
    (b'{"meta": {"x": Infinity}, "tensors": []}', b"", "Infinity|JSON"),
    (b'{"meta": {"x": 1' + b"9" * 5000 + b'}, "tensors": []}', b"", "JSON"),            # int too long to parse
    ({"meta": {}, "tensors": [_entry(shape=(2,))]}, b"\0\0\0", "trailing"),
])
def test_malformed_headers_with_a_valid_checksum(tmp_path, header, body, match):
    expect_error(_raw(tmp_path / "bad", header, body), match)


def test_header_larger_than_the_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(struct.pack("<8sIQ", b"MINITXCK", 1, 10**12) + b"{}" + b"\0" * 32)
    expect_error(path, "truncated")


def _load_in_child(target, timeout=30):
    """Run load(target) in a child process with 1 GB of address space and a timeout, so that a regression
    (reading /dev/zero without bound, blocking on a FIFO) fails the test instead of the machine."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from minitx.io.checkpoint import CheckpointError, load
        try:
            load({str(target)!r})
        except CheckpointError as error:
            print("CheckpointError:", error)
        except BaseException as error:
            print("other:", type(error).__name__, error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    return result.stdout.strip()


@pytest.mark.skipif(sys.platform == "win32" or not os.path.exists("/dev/zero"), reason="POSIX devices")
def test_dev_zero_is_refused_without_reading(tmp_path):
    out = _load_in_child("/dev/zero")
    assert out.startswith("CheckpointError: /dev/zero:") and "not a regular file" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    try:
        out = _load_in_child(fifo, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("load() blocked on a FIFO")
    assert out.startswith(f"CheckpointError: {fifo}:") and "not a regular file" in out


def test_a_directory_is_still_an_is_a_directory_error(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        load(tmp_path)
    assert str(tmp_path) in str(info.value)


# ---------------------------------------------------------------- fuzzing the parser behind a valid checksum

_junk = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                  st.text(max_size=5), st.lists(st.integers(-3, 3), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  st.sampled_from([[], {}, ["float32"], 2**64, -1, True, 1.0, "", "object"]))
_dims = st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(-3, -1), st.sampled_from([2**31, 2**62, 2**64]),
                  st.booleans(), st.floats(0, 4), st.text(max_size=2), st.none())
_shapes = st.one_of(st.lists(st.integers(0, 4), max_size=3), st.lists(_dims, max_size=4),
                    st.lists(st.just(1), min_size=30, max_size=80), _junk)


@st.composite
def _header_and_body(draw):
    """(header object, body bytes): valid entries, each with at most one field spoiled, in a header that is
    itself occasionally spoiled, and a body of the right size or a random one."""
    entries, offset = [], 0
    for _ in range(draw(st.sampled_from([1, 1, 2, 3, 0]))):
        dtype = draw(st.sampled_from(sorted(checkpoint.DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        nbytes = np.dtype(dtype).itemsize * math.prod(shape)
        entry = {"name": draw(st.sampled_from(["a", "b", "c"])), "dtype": dtype, "shape": shape,
                 "offset": offset, "nbytes": nbytes}
        spoil = draw(st.sampled_from(["nothing", "name", "dtype", "shape", "shape", "shape", "offset", "nbytes",
                                      "missing", "entry"]))
        if spoil in entry:
            entry[spoil] = draw(_shapes if spoil == "shape" else _junk)
            if spoil == "shape" and draw(st.booleans()):        # a consistent nbytes for the odd shape
                try:
                    entry["nbytes"] = np.dtype(dtype).itemsize * math.prod(entry["shape"])
                except TypeError:
                    pass
        elif spoil == "missing":
            entry.pop(draw(st.sampled_from(sorted(entry))))
        elif spoil == "entry":
            entry = draw(_junk)
        elif spoil == "nothing" and draw(st.booleans()):       # a valid entry with more dimensions than allowed
            entry["shape"] = [1] * draw(st.sampled_from([33, 64, 65, 200]))
            entry["nbytes"] = np.dtype(dtype).itemsize
        entries.append(entry)
        if isinstance(entry, dict) and type(entry.get("nbytes")) is int:
            offset += entry["nbytes"]
    often = st.sampled_from([True] * 7 + [False])         # hypothesis's one_of is not weighted: choose first
    header = {"meta": {} if draw(often) else draw(_junk), "tensors": entries}
    if not draw(often):
        header = draw(st.one_of(_junk, st.just({"meta": {}}), st.just({"tensors": entries})))
    size = offset if 0 <= offset <= 4096 and draw(often) else draw(st.integers(0, 64))
    return header, draw(st.binary(min_size=size, max_size=size))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_header_and_body())
def test_fuzzed_headers_with_valid_checksums_end_in_checkpoint_error(tmp_path, header_and_body):
    header, body = header_and_body
    path = _raw(tmp_path / "fuzz.ckpt", header, body)
    try:
        tensors, meta = load(path)
    except CheckpointError as error:
        assert str(path) in str(error)
        return
    # Occasionally the drawn file is valid: then it must be exactly what the header says.
    assert meta == header["meta"]
    assert [t["name"] for t in header["tensors"]] == list(tensors)
    for entry in header["tensors"]:
        assert tensors[entry["name"]].shape == tuple(entry["shape"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_raw_header_bytes_with_valid_checksums(tmp_path, data):
    """Header bytes that are not JSON of our shape at all (any bytes, deep nesting, huge numbers)."""
    header = data.draw(st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([1, 900, 3000, 100_000]).map(lambda n: b"[" * n + b"]" * n),
        st.sampled_from([1, 4300, 4301, 10_000]).map(lambda n: b'{"meta": {"x": ' + b"9" * n + b'}, "tensors": []}'),
        st.sampled_from([b"NaN", b"-Infinity", b"1e999", b"-0", b'"\\ud800"']).map(
            lambda v: b'{"meta": {"x": ' + v + b'}, "tensors": []}'),
    ))
    path = _raw(tmp_path / "fuzz.ckpt", header, data.draw(st.binary(max_size=16)))
    try:
        _, meta = load(path)
    except CheckpointError as error:
        assert str(path) in str(error)
    else:
        json.dumps(meta, allow_nan=False)                  # what loads is what save could have written
