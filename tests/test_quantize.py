"""int8 / int4 weights, executed: the quantizer against the rule it documents, the kernels against a float64
reference of the matrix they stand for, the counts of a quantized model against shape-only runs and the formulas,
exact round trips, accuracy against float32 on the fixtures, and bad input (group sizes, formats, corrupted
checkpoints) refused by name.

The reference dequantizes here, independently of minitx: int4 nibbles are unpacked with Python's own arithmetic
on the bytes, scales widened by NumPy. The kernels multiply exact float32 weights (q · scale, an int of ≤ 8 bits
times a float16: exact in float32) by float32 inputs and accumulate in float32: over K terms, plus the bias.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minitx
from minitx import Transformer, count, export_hf, formulas, hf_config, load_hf
from minitx.core.ops.half_linear import GEMV_MAX_ROWS
from minitx.core.quantize import QMAX, QuantizedWeight, quantize_matrix, quantized_matmul
from minitx.dtypes import Precision
from minitx.io.checkpoint import CheckpointError, load, load_model, save, save_model
from reference_ops import assert_close
from strategies import TINY, configs

FIXTURES = Path(__file__).parent / "fixtures"
FORMATS = ("int8", "int4")


def reference_dequantize(qw: QuantizedWeight) -> np.ndarray:
    """(K, M) float64 from the stored bytes, by the layout's definition (minitx.core.quantize)."""
    K, M = qw.shape
    if qw.fmt == "int8":
        q = qw.values.astype(np.float64)
    else:
        b = qw.values.astype(np.int64)
        lo, hi = b % 16, b // 16
        nib = np.empty((K, 2 * b.shape[1]), dtype=np.int64)
        nib[:, 0::2], nib[:, 1::2] = lo, hi
        q = np.where(nib >= 8, nib - 16, nib)[:, :M].astype(np.float64)
    return q * np.repeat(qw.scales.astype(np.float64), qw.group_size, axis=0)


@st.composite
def matrices(draw, max_k_groups: int = 4, max_m: int = 40):
    g = draw(st.sampled_from([1, 2, 4, 8]))
    K, M = g * draw(st.integers(1, max_k_groups)), draw(st.integers(1, max_m))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    w = rng.standard_normal((K, M)) * draw(st.sampled_from([0.02, 1.0, 300.0]))
    w[rng.random((K, M)) < 0.1] = 0.0                               # whole zero groups happen too
    return w.astype(np.float32), g


# ---- the quantizer ------------------------------------------------------------------------------------------------

@given(matrices(), st.sampled_from(FORMATS))
def test_quantizing_follows_the_documented_rule(wg, fmt):
    w, g = wg
    qw = quantize_matrix(w, fmt, g)
    K, M = w.shape
    assert qw.values.shape == ((K, M) if fmt == "int8" else (K, -(-M // 2))) and qw.scales.shape == (K // g, M)
    assert qw.nbytes == Precision("float32", fmt, group_size=g).matrix_bytes(K, M)
    deq, w64, qmax = reference_dequantize(qw), w.astype(np.float64), QMAX[fmt]
    # the scale is max|w| / qmax, rounded to float16
    amax = np.abs(w64).reshape(K // g, g, M).max(axis=1)
    np.testing.assert_array_equal(qw.scales, (amax / qmax).astype(np.float16))
    # each weight within half a step of its group's grid, or (clipped at ±qmax, when rounding made the scale a
    # little small) within qmax times the scale's own rounding: |q·s − w| ≤ s/2 + qmax·|s − max|w|/qmax|
    s = qw.scales.astype(np.float64)
    bound = np.repeat(0.5 * s + qmax * np.abs(s - amax / qmax), g, axis=0)
    assert np.all(np.abs(deq - w64) <= bound * (1 + 1e-12))
    # and quantizing the dequantized matrix gives it back (idempotent, for normal float16 scales)
    normal = (qw.scales == 0) | (qw.scales >= np.finfo(np.float16).tiny)
    again = quantize_matrix(qw.dequantize(), fmt, g)
    np.testing.assert_array_equal(again.scales[normal], qw.scales[normal])


@settings(max_examples=30, deadline=None)
@given(matrices(), st.sampled_from(FORMATS), st.integers(1, GEMV_MAX_ROWS + 3), st.booleans(),
       st.integers(0, 2**31))
def test_quantized_kernels_match_a_float64_reference(wg, fmt, N, bias, seed):
    """Decode (N ≤ GEMV_MAX_ROWS: the streaming kernels, one row and several) and prefill (widened tiles, BLAS)."""
    w, g = wg
    qw = quantize_matrix(w, fmt, g)
    rng = np.random.default_rng(seed)
    K, M = w.shape
    x = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if bias else None
    out = np.empty((N, M), np.float32)
    quantized_matmul(x, qw, b, out)
    ref = x.astype(np.float64) @ reference_dequantize(qw) + (0 if b is None else b)
    assert_close(out, ref, f"{fmt} matmul", np.float32, terms=K + 1)


# ---- quantized models: counts, bytes, errors -------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(configs(), st.sampled_from(FORMATS), st.sampled_from(["float32", "bfloat16"]),
       st.sampled_from(["unfused", "fused"]), st.integers(1, 3), st.data())
def test_quantized_counts_equal_shape_only_and_the_formulas(cfg, fmt, act, attention, B, data):
    T = data.draw(st.integers(2, cfg.n_ctx), label="T")
    cfg = cfg.replace(d_model=2 * cfg.d_model, d_ff=2 * cfg.d_ff)     # even widths: groups of 2 divide them
    model = Transformer(cfg, dtype=act, attention=attention, seed=2)
    q = minitx.quantize(model, fmt, group_size=2)
    shaped = minitx.quantize(Transformer(cfg, dtype=act, attention=attention, shape_only=True), fmt, group_size=2)
    pr = Precision(act, fmt, group_size=2)
    stored = q.flat.nbytes + sum(w.nbytes for w in q.quantized.values())
    assert stored == formulas.param_bytes(cfg, pr)                   # packed values + scales + the float rest
    tokens = np.arange(B * T).reshape(B, T) % cfg.vocab_size
    for m in (q, shaped):
        cache = m.new_cache(B, T, chunk=T)
        with count() as pre:
            m.prefill(tokens[:, :T - 1], cache)
        with count() as dec:
            m.decode(tokens[:, 0], cache)
        assert pre.records == formulas.prefill(cfg, B, T - 1, pr, attention).records
        assert dec.records == formulas.decode_step(cfg, B, T - 1, pr, attention).records


def test_a_tied_head_stays_in_the_float_format_and_is_counted_as_stored():
    cfg = TINY["gpt2"]                                               # tied: the head is wte
    q = minitx.quantize(Transformer(cfg), "int4", group_size=4)
    assert "wte" in q.params and q.params["wte"].dtype == np.float32 and "lm_head.w" not in q.quantized
    with count() as c:
        q.forward([[1, 2, 3]])
    head = c.filter("lm_head").reads["weights"]
    assert head == cfg.vocab_size * cfg.d_model * 4                  # V·C float32 weights, read whole


def test_a_quantized_model_built_directly_equals_quantize_of_the_float_one():
    cfg = TINY["llama-gqa"]
    direct = Transformer(cfg, seed=5, weight_dtype="int8", group_size=2)
    via = minitx.quantize(Transformer(cfg, seed=5), "int8", group_size=2)
    assert np.array_equal(direct.flat, via.flat)
    for name, qw in direct.quantized.items():
        assert np.array_equal(qw.values, via.quantized[name].values) and np.array_equal(qw.scales,
                                                                                     via.quantized[name].scales)


@settings(max_examples=20, deadline=None)
@given(st.one_of(st.integers(-3, 0), st.sampled_from([3, 5, 6, 7, 1.5, "2", None, True])),
       st.sampled_from(FORMATS))
def test_bad_group_sizes_are_refused_by_name(group_size, fmt):
    cfg = TINY["gpt2"]                                               # d_model 8, d_ff 32: 3, 5, 6, 7 divide neither
    with pytest.raises((ValueError, TypeError), match="group_size"):
        minitx.quantize(Transformer(cfg), fmt, group_size=group_size)
    with pytest.raises((ValueError, TypeError), match="group_size"):
        Transformer(cfg, weight_dtype=fmt, group_size=group_size)


@pytest.mark.parametrize("fmt", ["int3", "bfloat16", "", None, 8])
def test_bad_formats_are_refused_by_name(fmt):
    with pytest.raises(ValueError, match="fmt"):
        minitx.quantize(Transformer(TINY["gpt2"]), fmt)


def test_quantize_refuses_what_it_cannot_quantize():
    q = minitx.quantize(Transformer(TINY["gpt2"]), "int8", group_size=4)
    with pytest.raises(ValueError, match="already quantized"):
        minitx.quantize(q, "int4", group_size=4)
    with pytest.raises(TypeError, match="model"):
        minitx.quantize("gpt2", "int8")
    with pytest.raises(ValueError, match="inference-only"):
        q.loss_and_grads([[1]], [[1]])
    w = np.ones((4, 3), np.float32)
    w[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize_matrix(w, "int8", 2)
    with pytest.raises(ValueError, match="float16"):
        quantize_matrix(np.full((2, 2), 1e8, np.float32), "int8", 2)


# ---- round trips -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", list(TINY))
def test_quantized_models_round_trip_exactly(tmp_path, family, act, fmt):
    cfg = TINY[family]
    model = Transformer(cfg, dtype=act, seed=3)
    model.flat[:] = np.random.default_rng(0).normal(0.0, 0.5, model.flat.size)   # normal float16 scales
    q = minitx.quantize(model, fmt, group_size=2)
    save_model(tmp_path / "q.ckpt", q)
    back, _, meta = load_model(tmp_path / "q.ckpt")
    again = load_hf(hf_config(cfg), export_hf(q), dtype=act, weight_dtype=fmt, group_size=2)
    for other in (back, again):
        assert other.precision == q.precision
        assert np.array_equal(other.flat.view(np.uint8), q.flat.view(np.uint8))
        for name, qw in q.quantized.items():
            assert np.array_equal(other.quantized[name].values, qw.values), name
            assert np.array_equal(other.quantized[name].scales, qw.scales), name
    tokens = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(back.forward(tokens).astype(np.float32), q.forward(tokens).astype(np.float32))


# ---- corrupted quantized checkpoints --------------------------------------------------------------------------

def _saved(tmp_path, fmt="int4") -> tuple[Path, dict, dict]:
    path = tmp_path / "q.ckpt"
    save_model(path, minitx.quantize(Transformer(TINY["llama-gqa"], seed=1), fmt, group_size=2), overwrite=True)
    tensors, meta = load(path)
    return path, tensors, meta


CORRUPTIONS = {
    "weights int3": lambda t, m: m.update(weights="int3"),
    "weights missing": lambda t, m: m.pop("weights"),
    "group size 0": lambda t, m: m.update(group_size=0),
    "group size 3": lambda t, m: m.update(group_size=3),
    "group size str": lambda t, m: m.update(group_size="2"),
    "group size 4": lambda t, m: m.update(group_size=4),
    "dtype int8": lambda t, m: m.update(dtype="int8"),
    "a matrix missing": lambda t, m: t.pop("quantized/layers.0.mlp.up.w/values"),
    "values misshapen": lambda t, m: t.update({"quantized/layers.0.mlp.up.w/values": np.zeros((3, 3), np.uint8)}),
    "scales as float32": lambda t, m: t.update({"quantized/layers.1.attn.qkv.w/scales":
                                                t["quantized/layers.1.attn.qkv.w/scales"].astype(np.float32)}),
    "a nibble of -8": lambda t, m: t["quantized/layers.0.attn.proj.w/values"].__setitem__((0, 0), 0x88),
    "negative scale": lambda t, m: t["quantized/layers.0.attn.proj.w/scales"].__setitem__((0, 0), -1.0),
    "NaN scale": lambda t, m: t["quantized/layers.0.attn.proj.w/scales"].__setitem__((0, 0), np.nan),
    "adam state": lambda t, m: (m.update(adam={"t": 0}), t.update(adam_m=t["params"], adam_v=t["params"])),
}


@pytest.mark.parametrize("what", list(CORRUPTIONS))
def test_corrupted_quantized_checkpoints_are_refused(tmp_path, what):
    path, tensors, meta = _saved(tmp_path)
    CORRUPTIONS[what](tensors, meta)
    save(path, tensors, meta, overwrite=True)          # a valid file (checksum and all), wrong contents
    with pytest.raises(CheckpointError):
        load_model(path)


def test_an_int8_value_of_minus_128_is_refused(tmp_path):
    path, tensors, meta = _saved(tmp_path, "int8")
    tensors["quantized/layers.0.mlp.down.w/values"][0, 0] = 0x80     # the byte of int8 −128: outside ±127
    save(path, tensors, meta, overwrite=True)
    with pytest.raises(CheckpointError, match="outside"):
        load_model(path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_quantized_checkpoints_load_or_fail_cleanly(tmp_path, data):
    """Random bytes overwritten anywhere in the file: CheckpointError, never a crash or a wrong model."""
    path, _, _ = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(raw))
    try:
        model, _, _ = load_model(bad)
    except CheckpointError:
        return
    assert bytes(raw) == path.read_bytes()             # only an unchanged file may load


# ---- accuracy against float32 on the fixtures ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt2_tiny", "llama_tiny_gqa", "mistral_tiny", "gemma_tiny"])
def test_int8_is_closer_to_float32_than_int4(name):
    """The fixtures' logits (std ≈ 1.7) against float32, with groups of 16 (their widths are 32 to 128): int8's
    grid is 127/7 ≈ 18 times finer than int4's, so its logit error must be the smaller one; lesson 09 prints both."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
        params = {k[len("param/"):]: f[k] for k in f.files if k.startswith("param/")}
        config, tokens, logits = json.loads(str(f["config_json"])), f["tokens"], f["logits"]
    err = {fmt: np.abs(load_hf(config, params, weight_dtype=fmt, group_size=16).forward(tokens) - logits).max()
           for fmt in FORMATS}
    assert 0 < err["int8"] < err["int4"], err
