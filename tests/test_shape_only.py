"""Three sources agree: a shape-only run, a real run, and the closed forms, to the FLOP and the byte.

A shape-only model (Transformer(..., shape_only=True)) runs the same op functions as a real one, with data-less
arrays: every op skips its kernel and records its cost from the shapes and dtypes it is handed. So
  * for a small float32 model, the shape-only records equal the real run's, record for record;
  * for every precision (bf16, fp16, int8 and int4 weights with their scales, an int8 or bf16 KV cache) and
    every real preset (GPT-2 to Llama-2-70B), they equal `minitx.formulas`, record for record;
  * and a 70B model runs this way in a fraction of a second and a few MB.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx import AdamW, Config, KVCache, Transformer, count, formulas
from minitx.core.config import PRESETS
from minitx.core.shaped import Shaped
from minitx.dtypes import Precision
from strategies import config_and_shape, configs

PRECISIONS = [Precision("float32"), Precision("bfloat16"), Precision("float16"),
              Precision("bfloat16", weights="int8", kv="int8", group_size=2),
              Precision("bfloat16", weights="int4", group_size=2), Precision("float32", kv="bfloat16")]


def model(cfg: Config, pr: Precision = Precision("float32"), attention: str = "unfused", shape_only=True):
    return Transformer(cfg, dtype=pr.activations, weight_dtype=pr.weights, kv_dtype=pr.kv,
                       group_size=pr.group_size, attention=attention, shape_only=shape_only)


def counted_phases(m: Transformer, B: int, T: int, train: bool = True) -> dict:
    """{phase: Ledger} of a training step (float models), a prefill of T − 1 tokens and one decode step."""
    cfg, out = m.cfg, {}
    tokens = np.zeros((B, T), dtype=np.int64)
    if train:
        with count() as c:
            _, grads = m.loss_and_grads(tokens, tokens)
            AdamW(m).step(grads)
        out["train"] = c
    cache = m.new_cache(B, T, chunk=T)
    if T > 1:
        with count() as c:
            m.prefill(tokens[:, :T - 1], cache)
        out["prefill"] = c
        with count() as c:
            m.decode(tokens[:, 0], cache)
        out["decode"] = c
    return out


@settings(max_examples=20, deadline=None)
@given(st.one_of(config_and_shape(), config_and_shape(family="any")), st.sampled_from(["unfused", "fused"]))
def test_shape_only_counts_equal_a_real_run(cfg_bt, attention):
    cfg, (B, T) = cfg_bt
    real = counted_phases(model(cfg, attention=attention, shape_only=False), B, T, train=attention == "unfused")
    fake = counted_phases(model(cfg, attention=attention), B, T, train=attention == "unfused")
    assert list(real) == list(fake)
    for phase in real:
        assert real[phase].records == fake[phase].records, phase


@settings(max_examples=25, deadline=None)
@given(configs(family="llama"), st.sampled_from(PRECISIONS), st.sampled_from(["unfused", "fused"]),
       st.integers(1, 3), st.data())
def test_shape_only_counts_equal_the_formulas_at_every_precision(cfg, pr, attention, B, data):
    T = data.draw(st.integers(2, cfg.n_ctx), label="T")
    cfg = cfg.replace(d_model=2 * cfg.d_model, d_ff=2 * cfg.d_ff,
                      sliding_window=data.draw(st.sampled_from([None, 1, 3])))   # even widths: groups of 2 fit
    m = model(cfg, pr, attention)
    got = counted_phases(m, B, T, train=not pr.quantized and pr.kv == pr.activations and attention == "unfused")
    if "train" in got:
        assert got["train"].records == formulas.training_step(cfg, B, T, pr).records
    assert got["prefill"].records == formulas.prefill(cfg, B, T - 1, pr, attention).records
    assert got["decode"].records == formulas.decode_step(cfg, B, T - 1, pr, attention).records


REAL = sorted(n for n, c in PRESETS.items() if c.d_model >= 768)


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("pr", [Precision("bfloat16"), Precision("bfloat16", weights="int4", kv="bfloat16")],
                         ids=["bf16", "int4"])
def test_every_real_preset_is_counted_exactly(name, pr):
    cfg = PRESETS[name]
    if pr.quantized and cfg.d_model % pr.group_size:
        pytest.skip(f"{name}: d_model {cfg.d_model} is not a multiple of the group size")
    m = model(cfg, pr, "fused")
    assert m.num_params() == formulas.num_params(cfg)
    stored = m.flat.nbytes + sum(q.nbytes for q in m.quantized.values())
    assert stored == formulas.param_bytes(cfg, pr)
    cache = m.new_cache(1, 1001, chunk=1000)
    with count() as pre:
        m.prefill(np.zeros((1, 1000), dtype=np.int64), cache)
    with count() as dec:
        m.decode([0], cache)
    assert pre.records == formulas.prefill(cfg, 1, 1000, pr, "fused").records
    assert dec.records == formulas.decode_step(cfg, 1, 1000, pr, "fused").records
    assert cache.nbytes == formulas.kv_cache_bytes(cfg, 1, 1001, pr, rolling=cache.chunk is not None, chunk=1000)


def test_a_70b_model_runs_by_shape_in_little_time_and_memory():
    cfg = PRESETS["llama-2-70b"]
    tracemalloc.start()
    start = time.perf_counter()
    m = Transformer(cfg, dtype="bfloat16", shape_only=True)
    cache = KVCache(cfg, 1, 4096, "bfloat16", shape_only=True)
    with count() as pre:
        m.prefill(np.zeros((1, 2048), dtype=np.int64), cache)
    with count() as dec:
        m.decode([0], cache)
    with count() as train:                   # and a training step: gradients and Adam's state by shape too
        _, grads = m.loss_and_grads(np.zeros((1, 256), np.int64), np.zeros((1, 256), np.int64))
        AdamW(m).step(grads)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(m.flat, Shaped) and m.flat.nbytes == 2 * 68_976_648_192       # 138 GB that it never holds
    assert peak < 64 * 2**20, f"{peak / 2**20:.1f} MiB"
    assert seconds < 20
    assert pre.flops == formulas.prefill(cfg, 1, 2048, "bfloat16").flops
    assert dec.flops == formulas.decode_step(cfg, 1, 2048, "bfloat16").flops
    assert train.flops == formulas.training_step(cfg, 1, 256, "bfloat16").flops


def test_precision_errors_name_the_problem():
    cfg = Config.preset("tiny-llama")
    with pytest.raises(ValueError, match="runs shape-only"):
        Transformer(cfg, dtype="bfloat16", kv_dtype="int8")
    with pytest.raises(ValueError, match="group_size=128 does not divide"):
        Transformer(cfg, weight_dtype="int4", shape_only=True)
    with pytest.raises(ValueError, match="inference-only"):
        Transformer(cfg, weight_dtype="int8", group_size=4, shape_only=True).loss_and_grads([[1]], [[1]])
    with pytest.raises(TypeError, match="KV format"):
        m = Transformer(cfg, dtype="bfloat16", shape_only=True)
        m.prefill([[1, 2]], KVCache(cfg, 1, 4, "float32", shape_only=True))
