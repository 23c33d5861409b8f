"""minitx.accounting.memory: measured memory against the closed forms, and the training-vs-inference contrast."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from minitx import AdamW, Config, Transformer
from minitx.accounting.memory import (MemoryReport, largest_activation, measure_inference_peak, measure_saved_activations,
                           report, saved_arrays)

from minitx import formulas
from strategies import TINY_GEMMA

# The tiny presets (GPT-2 MHA tied; Llama GQA untied, head_dim ≠ d_model / n_heads), the shared tiny Gemma (MQA,
# embed_scale, (1 + w), tied) and an untied GPT-2. The Gemma gets the presets' context of 32 so that every shape
# below (up to T = 32) fits all four; no other size matters to these tests.
GEMMA_TINY = TINY_GEMMA.replace(n_ctx=32)
CONFIGS = [Config.preset("tiny-gpt2"), Config.preset("tiny-llama"), GEMMA_TINY,
           Config.preset("tiny-gpt2").replace(tie_embeddings=False, name="tiny-gpt2-untied")]


def _tokens(cfg: Config, B: int, T: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, size=(B, T), dtype=np.int64)


def _formula(name: str):
    return getattr(formulas, name)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B,T", [(1, 1), (2, 7), (3, 32)])
def test_saved_activations_match_formula_exactly(cfg, dtype, B, T):
    saved_activation_bytes = _formula("saved_activation_bytes")
    model = Transformer(cfg, dtype=dtype)
    tokens = _tokens(cfg, B, T)
    assert measure_saved_activations(model, tokens) == saved_activation_bytes(cfg, B, T, dtype, include_loss=True)
    assert (measure_saved_activations(model, tokens, include_loss=False)
            == saved_activation_bytes(cfg, B, T, dtype, include_loss=False))


def test_reference_config_numbers():
    """The reference configuration at batch 4, sequence 128, float32 (the figures the benchmarks quote)."""
    cfg = Config.preset("reference")
    model = Transformer(cfg)
    tokens = _tokens(cfg, 4, 128)
    saved = measure_saved_activations(model, tokens)
    # By hand: N = B·T = 512 rows, C = 256, F = 1024, NH = 4, T = 128, V = 512, 4 bytes each. Per layer:
    # four (N, C) arrays (block input, ln_1 out, residual after attention, ln_2 out)   4·512·256·4 = 2,097,152
    # LayerNorm mean + rstd for ln_1 and ln_2                                           4·512·4     =     8,192
    # q, k, v and the merged heads, (N, C) each                                         4·512·256·4 = 2,097,152
    # attention probabilities (B, NH, T, T)                                             4·4·128·128·4 = 1,048,576
    # MLP up output and activation output, (N, F) each                                  2·512·1024·4 = 4,194,304
    # = 9,445,376 per layer, 37,781,504 for 4 layers; plus token ids and positions (2·512·8 = 8,192),
    # ln_f's input and stats (524,288 + 4,096), the head's input (524,288), and the loss's logits, int64
    # targets and lse (1,048,576 + 4,096 + 2,048): 39,897,088 in all.
    assert saved == 39_897_088
    assert saved == formulas.saved_activation_bytes(cfg, 4, 128, "float32", include_loss=True)
    # the largest single array: the MLP's hidden activation (B·T, 4·C) = 512·1024·4 bytes, twice the
    # attention probabilities (B, NH, T, T) = 4·4·128·128·4 bytes
    assert largest_activation(model, tokens) == 4 * 128 * 4 * 256 * 4


def test_saved_arrays_counts_each_buffer_once_and_skips_constants():
    cfg = Config.preset("tiny-llama")
    model = Transformer(cfg)
    a = np.zeros((4, 6), dtype=np.float32)
    b = np.ones(5)
    caches = (a, [a.reshape(6, 4), a[:2], (a.T, {"x": b})], model.params["wte"], model.flat[3:9],
              model.rope[0], model.rope[1][:2], 1.5, "name", None)
    kept = saved_arrays(model, caches)
    assert sorted(x.nbytes for x in kept) == sorted([a.nbytes, b.nbytes])
    assert not any(np.shares_memory(x, model.flat) for x in kept)


def test_no_counted_array_overlaps_another_or_the_parameters():
    from minitx.accounting.memory import _training_caches
    cfg = Config.preset("tiny-gpt2")
    model = Transformer(cfg)
    caches = _training_caches(model, _tokens(cfg, 2, 16))
    kept = saved_arrays(model, caches)
    for i, x in enumerate(kept):
        assert not np.shares_memory(x, model.flat)
        for y in kept[i + 1:]:
            assert not np.shares_memory(x, y)


def test_largest_activation_matches_formula():
    activation_sizes = _formula("activation_sizes")
    for cfg in CONFIGS:
        model = Transformer(cfg)
        for B, T in [(2, 5), (3, 32)]:
            assert largest_activation(model, _tokens(cfg, B, T)) == max(activation_sizes(cfg, B, T).values())


# Deep and narrow on purpose, since the factors asserted below depend on these sizes: 12 layers (against the 2 of
# DEEP.replace(n_layers=2)) so that training's saved activations, which grow with depth, exceed inference's peak,
# which does not, by more than 8x (4 layers give about 4.5x); and a vocabulary of only 64 so that the logits, held
# once whatever the depth, do not swamp the per-layer arrays (at vocab_size 1024 deep/shallow saved falls below 4x).
DEEP = Config(name="deep-narrow", vocab_size=64, n_ctx=64, d_model=32, n_layers=12, n_heads=4)


def test_inference_peak_is_far_below_training_and_does_not_grow_with_depth():
    B, T = 4, 64
    tokens = _tokens(DEEP, B, T)
    deep = Transformer(DEEP)
    peak = measure_inference_peak(deep, tokens)
    saved = measure_saved_activations(deep, tokens)
    # training keeps every layer's arrays; inference frees each one once the next op has read it
    assert saved > 8 * peak, (saved, peak)
    shallow = Transformer(DEEP.replace(n_layers=2))
    peak_shallow = measure_inference_peak(shallow, tokens)
    assert peak < 1.5 * peak_shallow, (peak, peak_shallow)
    assert measure_saved_activations(deep, tokens) > 4 * measure_saved_activations(shallow, tokens)


@pytest.mark.parametrize("cfg", [Config.preset("tiny-gpt2"), Config.preset("tiny-llama")], ids=lambda c: c.name)
def test_inference_peak_covers_the_largest_activation(cfg):
    B, T = 3, cfg.n_ctx
    model = Transformer(cfg)
    tokens = _tokens(cfg, B, T)
    peak = measure_inference_peak(model, tokens)
    s = model.dtype.itemsize
    logits, probs = B * T * cfg.vocab_size * s, B * cfg.n_heads * T * T * s
    largest = largest_activation(model, tokens)
    assert peak >= max(logits, probs)
    assert peak >= largest
    # "inference needs only about the largest activation": a few arrays alive at a time, whatever the depth
    assert peak <= 4 * largest, (peak, largest)


def test_inference_peak_leaves_an_outer_tracemalloc_running():
    cfg = Config.preset("tiny-gpt2")
    model = Transformer(cfg)
    tracemalloc.start()
    try:
        assert measure_inference_peak(model, _tokens(cfg, 2, 8)) > 0
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert measure_inference_peak(model, _tokens(cfg, 2, 8)) > 0
    assert not tracemalloc.is_tracing()


def test_report_reference():
    cfg = Config.preset("tiny-llama")
    model = Transformer(cfg)
    opt = AdamW(model)
    r = report(model, 2, 16, optimizer=opt)
    assert isinstance(r, MemoryReport)
    assert r.params == model.flat.nbytes == r.grads
    assert r.optimizer_state == 2 * r.params and r.optimizer_measured
    assert r.saved_activations == measure_saved_activations(model, _tokens(cfg, 2, 16))
    assert 0 < r.largest_activation <= r.inference_peak
    assert r.kv_cache is None
    assert r.training_total == r.params + r.grads + r.optimizer_state + r.saved_activations
    d = r.to_dict()
    for key in ("params", "grads", "optimizer_state", "saved_activations", "inference_peak", "kv_cache",
                "training_total", "inference_total", "largest_activation"):
        assert key in d
    text = r.table()
    for word in ("parameters", "gradients", "optimizer state", "saved activations", "inference peak"):
        assert word in text
    with pytest.raises(Exception):
        r.params = 0                                      # frozen
    assert r.predicted["saved_activations"] == r.saved_activations
    assert r.predicted["params"] == r.params


def test_report_without_optimizer_and_with_a_kv_cache():
    from minitx import KVCache
    cfg = Config.preset("tiny-gpt2")
    model = Transformer(cfg)
    cache = KVCache(cfg, 2, 24)
    r = report(model, 2, 8, cache=cache)
    assert not r.optimizer_measured and r.optimizer_state == 2 * model.flat.nbytes
    assert r.kv_cache == cache.nbytes == 2 * cfg.n_layers * 2 * cfg.n_kv_heads * 24 * cfg.head_dim * 4
    assert r.inference_total == r.params + r.inference_peak + r.kv_cache
    assert "KV cache" in r.table()


@pytest.mark.parametrize("B,T", [(0, 4), (2, 0), (2, 33), (True, 4), (2.0, 4)])
def test_report_rejects_bad_shapes(B, T):
    model = Transformer(Config.preset("tiny-gpt2"))
    with pytest.raises(ValueError):
        report(model, B, T)


def test_measure_rejects_bad_tokens():
    model = Transformer(Config.preset("tiny-gpt2"))
    with pytest.raises(ValueError):
        measure_saved_activations(model, np.full((1, 4), 64))
    with pytest.raises(ValueError):
        measure_inference_peak(model, np.zeros((1, 40), dtype=np.int64))
