"""Hugging Face checkpoint files as they ship, and as they break: every failure is one HFLoadError naming the file.

Real checkpoints store their weights in bfloat16 or float16; loading casts them to the model's dtype. A file
that is not what its name says (truncated, not a zip, a directory, a bad safetensors header, pickled arrays)
ends in HFLoadError, a ValueError whose message names the file, never in the reading library's own exception.
"""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from minitx import Config, Transformer, export_hf, hf_config, load_hf
from minitx.io.hf import HFLoadError

CFG = Config.preset("tiny-llama")


def _state(dtype) -> dict:
    return {k: v.astype(dtype) for k, v in export_hf(Transformer(CFG, seed=3)).items()}


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_16_bit_safetensors_load_and_cast(tmp_path, dtype):
    path = str(tmp_path / "model.safetensors")
    state = _state(dtype)
    save_file(state, path)
    model = load_hf(hf_config(CFG), path)
    assert model.dtype == np.float32
    for name, want in export_hf(model).items():        # exactly the 16-bit values, widened
        np.testing.assert_array_equal(want, state[name].astype(np.float32))


def test_bfloat16_in_npz_is_refused_with_a_hint(tmp_path):
    path = str(tmp_path / "model.npz")
    np.savez(path, **_state(ml_dtypes.bfloat16))        # NumPy stores bfloat16 as opaque 2-byte records
    with pytest.raises(HFLoadError, match=r"model\.npz.*\.safetensors"):
        load_hf(CFG, path)


BROKEN = {
    "empty.safetensors": b"",
    "junk.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}",
    "huge-header.safetensors": (2 ** 40).to_bytes(8, "little") + b"{}",
    "empty.npz": b"",
    "junk.npz": b"PK\x03\x04 this is not a zip archive",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_files_name_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BROKEN[name])
    with pytest.raises(HFLoadError, match=name):
        load_hf(CFG, str(path))


def test_a_directory_and_a_missing_file_and_a_pickle(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    for path in (tmp_path / "dir.safetensors", tmp_path / "missing.npz"):
        with pytest.raises(HFLoadError, match=path.name):
            load_hf(CFG, str(path))
    np.savez(tmp_path / "pickled.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(HFLoadError, match="pickled.npz"):
        load_hf(CFG, str(tmp_path / "pickled.npz"))         # object arrays would need pickle: refused


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_are_one_clear_error(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fuzz")
    for name in ("f.safetensors", "f.npz"):
        (d / name).write_bytes(data)
        with pytest.raises(HFLoadError, match=name):
            load_hf(CFG, str(d / name))


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(max_size=30), st.one_of(st.integers(), st.floats(), st.text(max_size=5),
                                                      st.lists(st.integers(), max_size=3)), max_size=6))
def test_random_state_dicts_are_one_clear_error(state):
    with pytest.raises(HFLoadError, match="state dict"):
        load_hf(CFG, state)


def test_hf_config_round_trips_through_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf_config(CFG)))
    assert Config.from_hf(str(path)).replace(name=CFG.name) == CFG
