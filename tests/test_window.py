"""Sliding-window attention: each query at position i sees keys i − W < j ≤ i (Mistral v0.1's rule).

Decoding past the window with a rolling cache (W + chunk − 1 positions, fused attention) gives the logits of a
full forward over the whole text with the windowed mask (unfused, every key kept), step by step; the rolling
cache is smaller than a full one; and the counts equal the formulas, which charge each step the keys it reads.
Parity with Hugging Face's Mistral on a windowed config is in test_reference.py and test_decode.py
(mistral_window_tiny).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx import Config, KVCache, Transformer, count, formulas
from strategies import TINY_LLAMA, configs


def twins(cfg: Config, seed: int = 0):
    """(unfused, fused) models with the same weights, moved away from the 0.02 init for peaked softmaxes."""
    unfused = Transformer(cfg, seed=seed, dtype="float64")
    unfused.flat += np.random.default_rng(seed).normal(0, 0.5, unfused.flat.shape)
    fused = Transformer(cfg, seed=seed, dtype="float64", attention="fused")
    fused.flat[...] = unfused.flat
    return unfused, fused


@settings(max_examples=15, deadline=None)
@given(configs(family="llama"), st.integers(1, 4), st.integers(1, 3), st.data())
def test_rolling_decode_past_the_window_equals_the_windowed_recompute(cfg, W, B, data):
    cfg = cfg.replace(n_ctx=max(cfg.n_ctx, 12), sliding_window=W)
    prompt = data.draw(st.integers(1, 5), label="prompt")
    unfused, fused = twins(cfg)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (B, cfg.n_ctx))
    cache = fused.new_cache(B, cfg.n_ctx, chunk=prompt)
    assert cache.capacity == min(cfg.n_ctx, W + prompt - 1) < cfg.n_ctx
    logits = fused.prefill(ids[:, :prompt], cache)
    for t in range(prompt, cfg.n_ctx):
        full = unfused.forward(ids[:, :t])[:, -1]                # every key, the window as a mask
        np.testing.assert_allclose(logits, full, rtol=1e-10, atol=1e-10)
        with count() as c:
            logits = fused.decode(ids[:, t], cache)
        assert c.records == formulas.decode_step(cfg, B, t, "float64", "fused").records


def test_the_window_changes_the_logits_only_past_it():
    cfg = TINY_LLAMA.replace(n_ctx=12, sliding_window=4)
    windowed, _ = twins(cfg)
    full = Transformer(cfg.replace(sliding_window=None), dtype="float64")
    full.flat[...] = windowed.flat
    ids = np.arange(12)[None] % cfg.vocab_size
    a, b = windowed.forward(ids), full.forward(ids)
    np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-12)           # positions 0..3: nothing to drop yet
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-3


def test_counts_charge_the_window_not_the_context():
    cfg = Config.preset("mistral-7b")
    near, far = (formulas.decode_step(cfg, 1, t, "bfloat16", "fused") for t in (4095, 30000))
    assert near.reads["kv_cache"] == far.reads["kv_cache"]                  # 4096 keys either way
    unwindowed = formulas.decode_step(cfg.replace(sliding_window=None), 1, 30000, "bfloat16", "fused")
    assert unwindowed.reads["kv_cache"] == 30001 / 4096 * far.reads["kv_cache"]
    assert formulas.kv_cache_bytes(cfg, 1, 32768, "bfloat16", rolling=True, chunk=1) == \
        formulas.kv_bytes_per_token(cfg, "bfloat16") * 4096


def test_a_rolling_cache_needs_fused_attention_and_a_bounded_chunk():
    cfg = TINY_LLAMA.replace(n_ctx=12, sliding_window=3)
    unfused, fused = twins(cfg)
    rolling = KVCache(cfg, 1, 12, "float64", rolling=True, chunk=2)
    fused.prefill([[1, 2]], rolling)
    with pytest.raises(ValueError, match="at most chunk=2"):
        fused.prefill([[1, 2, 3]], KVCache(cfg, 1, 12, "float64", rolling=True, chunk=2))
    with pytest.raises(ValueError, match="attention='fused'"):
        unfused.decode([3], rolling)
    with pytest.raises(ValueError, match="needs a sliding window"):
        KVCache(cfg.replace(sliding_window=None), 1, 12, rolling=True)
