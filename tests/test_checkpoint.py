"""Tests for minitx.io.checkpoint: exact round trips, atomic saves, clear errors."""

import ast
import json
import os
import pickle
import struct

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
