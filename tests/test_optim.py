"""AdamW (minitx/optim.py) against the PyTorch-semantics reference step in tests/reference_ops.py.

* several steps in float64 with changing gradients match the reference to a few ulps, parameters and both moments;
* float32 follows the same trajectory to float32 precision;
* lr = 0 (with weight decay 0, and with it) leaves the parameters bit-for-bit unchanged;
* Adam's state is exactly two more copies of the parameters: m and v are flat buffers of the parameters' dtype and
  size, with named views keyed and shaped like the parameters;
* the three ways to pass gradients (the model's own dict, the flat array, a dict of separate arrays) agree.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_ops as ref
from minitx import AdamW, Transformer
from reference_ops import assert_close
from strategies import TINY_LLAMA, configs

CFG = TINY_LLAMA                  # AdamW sees only the flat parameter vector: any config will do (drawn ones below)
HYPER = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)


def random_grads(model: Transformer, rng, scale: float = 1.0) -> np.ndarray:
    """A flat gradient with a wide range of magnitudes (so eps and the bias corrections both matter)."""
    g = rng.standard_normal(model.flat.size) * scale * 10.0 ** rng.uniform(-4, 1, size=model.flat.size)
    return g.astype(model.dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adamw_matches_reference_over_several_steps(dtype):
    model = Transformer(CFG, seed=0, dtype=dtype)
    opt = AdamW(model, **HYPER)
    rng = np.random.default_rng(0)
    p, m, v = ref.f64(model.flat, opt.m, opt.v)
    for t in range(1, 7):
        g = random_grads(model, rng)
        g[: 5] = 0.0                                           # zero gradients: only decay and momentum move them
        opt.step(g)
        p, m, v = ref.adamw_step(p, g, m, v, t, HYPER["lr"], HYPER["betas"], HYPER["eps"], HYPER["weight_decay"])
        assert opt.t == t
        # each step is a handful of roundings per entry; errors accumulate over the t steps taken so far
        assert_close(model.flat, p, f"params after step {t}", np.dtype(dtype), terms=4 * t)
        assert_close(opt.m, m, f"m after step {t}", np.dtype(dtype), terms=2 * t)
        assert_close(opt.v, v, f"v after step {t}", np.dtype(dtype), terms=2 * t)


def test_adamw_first_step_moves_each_parameter_by_lr():
    """With zero moments, the bias-corrected first step is lr·g/(|g| + eps) ≈ lr·sign(g): Adam's signature."""
    model = Transformer(CFG, seed=0, dtype="float64")
    before = model.flat.copy()
    opt = AdamW(model, lr=1e-3, eps=1e-12)
    g = np.where(np.arange(model.flat.size) % 2, 1.0, -1.0) * 10.0 ** np.linspace(-3, 3, model.flat.size)
    opt.step(g)
    np.testing.assert_allclose(before - model.flat, 1e-3 * np.sign(g), rtol=1e-8)


@settings(max_examples=10)
@given(configs(family="any", max_layers=1), st.sampled_from([0.0, 0.1]), st.sampled_from(["float32", "float64"]))
def test_lr_zero_is_the_identity(cfg, weight_decay, dtype):
    model = Transformer(cfg, seed=1, dtype=dtype)
    before = model.flat.copy()
    opt = AdamW(model, lr=0.0, weight_decay=weight_decay)
    rng = np.random.default_rng(1)
    for _ in range(3):
        opt.step(random_grads(model, rng))
    np.testing.assert_array_equal(model.flat, before)
    assert np.any(opt.m != 0) and np.any(opt.v != 0)          # the moments still track the gradients


@settings(max_examples=10)
@given(configs(family="any"), st.sampled_from(["float32", "float64"]))
def test_state_is_two_copies_of_the_parameters(cfg, dtype):
    model = Transformer(cfg, dtype=dtype)
    opt = AdamW(model)
    assert opt.m.nbytes + opt.v.nbytes == 2 * model.flat.nbytes
    assert opt.m.dtype == opt.v.dtype == model.flat.dtype and opt.m.shape == opt.v.shape == model.flat.shape
    assert not np.shares_memory(opt.m, opt.v) and not np.shares_memory(opt.m, model.flat)
    for key, buf in (("m", opt.m), ("v", opt.v)):
        views = opt.state[key]
        assert list(views) == list(model.params), f"opt.state[{key!r}] keys differ from model.params"
        for name, view in views.items():
            p = model.params[name]
            assert view.shape == p.shape and np.shares_memory(view, buf), name
            off = view.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
            assert off == p.__array_interface__["data"][0] - model.flat.__array_interface__["data"][0], name


def test_state_views_see_the_updates():
    model = Transformer(CFG, dtype="float64")
    opt = AdamW(model, lr=1e-2)
    g = np.ones_like(model.flat)
    opt.step(g)
    for name in model.params:
        np.testing.assert_allclose(opt.state["m"][name], 0.1)   # (1 − β1)·1
        np.testing.assert_allclose(opt.state["v"][name], 1e-3)  # (1 − β2)·1²


def test_gradient_forms_agree():
    """opt.step accepts model.loss_and_grads' dict, the flat gradient, or a dict of separate arrays: same result."""
    results = []
    for form in ("model dict", "flat", "separate dict"):
        model = Transformer(CFG, seed=2, dtype="float64")
        opt = AdamW(model, **HYPER)
        tokens = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
        for _ in range(2):
            _, grads = model.loss_and_grads(tokens, tokens[:, ::-1])
            if form == "flat":
                grads = model.grad_flat.copy()
            elif form == "separate dict":
                grads = {k: g.copy() for k, g in reversed(list(grads.items()))}
            opt.step(grads)
        results.append(model.flat.copy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_state_dict_reports_hyper_parameters_and_step():
    model = Transformer(CFG, dtype="float64")
    opt = AdamW(model, **HYPER)
    opt.step(np.ones_like(model.flat))
    sd = opt.state_dict()
    assert sd["t"] == 1 and sd["lr"] == HYPER["lr"] and sd["betas"] == list(HYPER["betas"])
    assert sd["eps"] == HYPER["eps"] and sd["weight_decay"] == HYPER["weight_decay"]
    assert sd["m"] is opt.m and sd["v"] is opt.v
