"""The whole Transformer, checked as a whole on fixed and drawn configs: gradients, causality, determinism, layout.

* Gradient check in float64 for both families (and free combinations of switches): central differences of the
  loss on a sample of entries of **every** parameter tensor, after moving every parameter away from its
  initial value (norm scales off 1, biases off 0), since an identity norm or a zero bias hides bugs.
* The forward against a float64 composition of the reference ops (tests/reference_ops.py): the wiring of the
  model is checked independently of its own kernels.
* Causality: changing the tokens after position t leaves the logits at positions ≤ t bit-for-bit unchanged.
* `forward` and the forward inside `loss_and_grads` agree exactly.
* Determinism: the same seed gives bit-identical losses over several AdamW steps; another seed differs.
* Layout: `model.params` are views of `model.flat`; gradients are keyed like the parameters and live in one
  flat buffer, overwritten (not accumulated) by each call.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_ops as ref
from minitx import AdamW, Config, Transformer
from minitx.core.ops.loss import cross_entropy_forward
from reference_ops import H, assert_close, assert_fd_close
from strategies import TINY, TINY_GEMMA as GEMMA, TINY_GPT2 as GPT2, TINY_LLAMA as LLAMA, config_and_shape, configs

FIXED = TINY                                                    # GPT-2 MHA tied, Llama GQA untied, Gemma MQA tied


def perturbed_model(cfg: Config, seed: int = 0, dtype: str = "float64", std: float = 0.3) -> Transformer:
    """A model whose every parameter is random: weights N(0, std²), norm scales 1 + N(0, std²) (N(0, std²) for
    Gemma's (1 + w)), biases N(0, std²). Nothing sits at an identity or a zero that could hide a bug."""
    model = Transformer(cfg, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1000)
    for name, p in model.params.items():
        p += rng.normal(0.0, std, size=p.shape).astype(dtype)
    return model


def batch(cfg: Config, B: int, T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, T))
    tokens[0, -1] = tokens[0, 0]                              # a repeated id: embedding rows accumulate
    return tokens, rng.integers(0, cfg.vocab_size, size=(B, T))


def loss_of(model: Transformer, tokens, targets) -> float:
    logits = model.forward(tokens)
    return cross_entropy_forward(logits.reshape(-1, model.cfg.vocab_size), targets.reshape(-1), "loss")[0]


def sample_entries(name: str, shape, rng, k: int, tokens) -> list[tuple[int, ...]]:
    """k entries of a parameter to difference. For embedding tables, rows that the batch reads (the others have
    exactly zero gradient, which would make the check weak) plus one random row."""
    rows = {"wte": np.unique(tokens), "wpe": np.arange(tokens.shape[1])}.get(name)
    out = []
    for i in range(k):
        idx = tuple(int(rng.integers(0, n)) for n in shape)
        if rows is not None and i < k - 1:
            idx = (int(rng.choice(rows)),) + idx[1:]
        out.append(idx)
    return out


def gradient_check(cfg: Config, B: int, T: int, k: int = 3, seed: int = 0) -> None:
    """Compare loss_and_grads with central differences of the loss at k entries of every parameter tensor."""
    model = perturbed_model(cfg, seed)
    tokens, targets = batch(cfg, B, T, seed)
    loss, grads = model.loss_and_grads(tokens, targets)
    assert set(grads) == set(model.params)
    grads = {n: g.copy() for n, g in grads.items()}
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():
        idxs = sample_entries(name, p.shape, rng, min(k, p.size), tokens)
        numeric = np.empty(len(idxs))
        for j, idx in enumerate(idxs):
            old = p[idx]
            p[idx] = old + H
            plus = loss_of(model, tokens, targets)
            p[idx] = old - H
            minus = loss_of(model, tokens, targets)
            p[idx] = old
            numeric[j] = (plus - minus) / (2 * H)
        analytic = np.array([grads[name][idx] for idx in idxs])
        assert_fd_close(analytic, numeric, f"{cfg.name}: d{name} at {idxs}", loss_scale=abs(loss) + 1.0)


# ---- gradients -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", FIXED.values(), ids=FIXED.keys())
def test_gradient_check_fixed_configs(cfg):
    gradient_check(cfg, B=2, T=5, k=4)


@settings(max_examples=15)
@given(config_and_shape(max_layers=2), st.integers(0, 100))
def test_gradient_check_drawn_configs(cfg_shape, seed):
    cfg, (B, T) = cfg_shape
    gradient_check(cfg, B, T, k=2, seed=seed)


@settings(max_examples=12)
@given(config_and_shape(family="any", max_layers=1))
def test_gradient_check_any_combination_of_switches(cfg_shape):
    cfg, (B, T) = cfg_shape
    gradient_check(cfg, B, T, k=2)


def test_gradients_are_overwritten_not_accumulated():
    """A second loss_and_grads on the same batch returns the same gradients (not twice them), in the same buffer."""
    model = perturbed_model(GEMMA)                            # tied: dwte is the one gradient built by accumulation
    tokens, targets = batch(GEMMA, 2, 4)
    _, g1 = model.loss_and_grads(tokens, targets)
    first = model.grad_flat.copy()
    buffer = model.grad_flat
    _, g2 = model.loss_and_grads(tokens, targets)
    assert g2 is g1 and model.grad_flat is buffer
    np.testing.assert_array_equal(model.grad_flat, first)


# ---- the forward against the reference composition -----------------------------------------------------------

def _reference_logits(model: Transformer, tokens) -> np.ndarray:
    cos, sin = model.rope
    return ref.model_forward(model.cfg, model.params, tokens, cos, sin, model.embed_scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cfg", FIXED.values(), ids=FIXED.keys())
def test_forward_matches_reference_composition(cfg, dtype):
    model = perturbed_model(cfg, dtype=dtype)
    tokens, _ = batch(cfg, 2, cfg.n_ctx)
    logits = model.forward(tokens)
    assert logits.dtype == np.dtype(dtype) and logits.shape == (2, cfg.n_ctx, cfg.vocab_size)
    # L layers of sums over ≤ max(d_ff, n_ctx, 3·d_model) terms each: the error bound grows with their product
    terms = cfg.n_layers * max(cfg.d_ff, cfg.n_ctx, 3 * cfg.d_model)
    assert_close(logits, _reference_logits(model, tokens), f"{cfg.name} logits", np.dtype(dtype), terms=terms)


@settings(max_examples=10)
@given(config_and_shape(family="any"))
def test_forward_matches_reference_composition_drawn(cfg_shape):
    cfg, (B, T) = cfg_shape
    model = perturbed_model(cfg)
    tokens, _ = batch(cfg, B, T)
    terms = cfg.n_layers * max(cfg.d_ff, cfg.n_ctx, 3 * cfg.d_model)
    assert_close(model.forward(tokens), _reference_logits(model, tokens), f"{cfg.name} logits", np.float64,
                 terms=terms)


def test_forward_is_the_forward_of_loss_and_grads():
    for cfg in FIXED.values():
        model = perturbed_model(cfg)
        tokens, targets = batch(cfg, 3, 6)
        expected = loss_of(model, tokens, targets)
        loss, _ = model.loss_and_grads(tokens, targets)
        assert loss == expected, f"{cfg.name}: loss_and_grads {loss!r} != cross-entropy of forward {expected!r}"
        ref_loss = ref.cross_entropy_fwd(_reference_logits(model, tokens).reshape(-1, cfg.vocab_size),
                                         targets.reshape(-1))
        assert_close(loss, ref_loss, f"{cfg.name} loss", np.float64, terms=64, scale=1.0)


# ---- causality -----------------------------------------------------------------------------------------------

@given(config_and_shape(family="any"), st.data())
def test_causal_mask(cfg_shape, data):
    """Replacing every token after position t leaves logits[:, :t + 1] exactly unchanged: no position reads the
    future (masked probabilities are exactly 0, so even the matmuls over the full rectangle add exact zeros)."""
    cfg, (B, T) = cfg_shape
    if T < 2:
        T = min(2, cfg.n_ctx)
    model = perturbed_model(cfg)
    tokens, _ = batch(cfg, B, T)
    t = data.draw(st.integers(0, T - 2), label="t")
    changed = tokens.copy()
    changed[:, t + 1:] = (tokens[:, t + 1:] + 1 + data.draw(st.integers(0, cfg.vocab_size - 2), label="shift")) \
        % cfg.vocab_size
    a, b = model.forward(tokens), model.forward(changed)
    np.testing.assert_array_equal(a[:, :t + 1], b[:, :t + 1], err_msg=f"logits ≤ t={t} depend on later tokens")
    assert not np.array_equal(a[:, t + 1:], b[:, t + 1:]), "the later logits should have changed"


def test_sequences_in_a_batch_are_independent():
    model = perturbed_model(LLAMA)
    tokens, _ = batch(LLAMA, 3, 6)
    full = model.forward(tokens)
    for b in range(3):
        np.testing.assert_allclose(model.forward(tokens[b:b + 1])[0], full[b], rtol=1e-12, atol=1e-12)


# ---- determinism ---------------------------------------------------------------------------------------------

def train_losses(cfg: Config, seed: int, dtype: str = "float32", steps: int = 4) -> list[float]:
    model = Transformer(cfg, seed=seed, dtype=dtype)            # a fresh model: the seed decides everything
    opt = AdamW(model, lr=1e-2, weight_decay=0.1)
    tokens, targets = batch(cfg, 2, 6, seed=0)
    losses = []
    for _ in range(steps):
        loss, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
        losses.append(loss)
    return losses


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cfg", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_same_seed_is_bit_identical(cfg, dtype):
    first = train_losses(cfg, seed=7, dtype=dtype)
    assert train_losses(cfg, seed=7, dtype=dtype) == first     # exact equality of Python floats
    assert first[-1] < first[0], f"training should reduce the loss on a fixed batch: {first}"
    assert train_losses(cfg, seed=8, dtype=dtype) != first


def test_same_seed_same_parameters():
    a, b, c = Transformer(LLAMA, seed=3), Transformer(LLAMA, seed=3), Transformer(LLAMA, seed=4)
    np.testing.assert_array_equal(a.flat, b.flat)
    assert not np.array_equal(a.flat, c.flat)


# ---- memory layout -------------------------------------------------------------------------------------------

@settings(max_examples=10)
@given(configs(family="any"))
def test_params_are_views_of_one_flat_buffer(cfg):
    model = Transformer(cfg, dtype="float64")
    flat = model.flat
    assert flat.ndim == 1 and flat.dtype == np.float64 and flat.flags.c_contiguous
    assert sum(p.size for p in model.params.values()) == flat.size == model.num_params()
    offset, starts = 0, {}
    for spec in model.table:                                    # in table order, back to back, no gaps or overlaps
        p = model.params[spec.name]
        assert p.shape == spec.shape and np.shares_memory(p, flat), spec.name
        starts[spec.name] = (p.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // flat.itemsize
        assert starts[spec.name] == offset, f"{spec.name} starts at {starts[spec.name]}, expected {offset}"
        offset += p.size
    assert offset == flat.size
    # writing through the flat buffer is seen by the views, and the other way round
    flat[:] = np.arange(flat.size)
    np.testing.assert_array_equal(model.params["ln_f.w"], np.arange(starts["ln_f.w"], starts["ln_f.w"] + cfg.d_model))
    model.params["ln_f.w"][...] = -1.0
    assert np.all(flat[starts["ln_f.w"]:starts["ln_f.w"] + cfg.d_model] == -1.0)


@settings(max_examples=10)
@given(config_and_shape(family="any", max_layers=1))
def test_grads_keyed_like_params_in_one_flat_buffer(cfg_shape):
    cfg, (B, T) = cfg_shape
    model = Transformer(cfg, dtype="float64")
    tokens, targets = batch(cfg, B, T)
    _, grads = model.loss_and_grads(tokens, targets)
    assert list(grads) == list(model.params)
    gflat = model.grad_flat
    assert gflat.shape == model.flat.shape and gflat.dtype == model.flat.dtype
    assert not np.shares_memory(gflat, model.flat)
    for name, g in grads.items():
        p = model.params[name]
        assert g.shape == p.shape and g.dtype == p.dtype and np.shares_memory(g, gflat), name
        # same offset in the gradient buffer as the parameter in the parameter buffer
        goff = g.__array_interface__["data"][0] - gflat.__array_interface__["data"][0]
        poff = p.__array_interface__["data"][0] - model.flat.__array_interface__["data"][0]
        assert goff == poff, name
    assert np.all(np.isfinite(gflat))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_throughout(dtype):
    model = Transformer(GEMMA, dtype=dtype)
    tokens, targets = batch(GEMMA, 2, 5)
    assert model.forward(tokens).dtype == np.dtype(dtype)
    loss, grads = model.loss_and_grads(tokens, targets)
    assert isinstance(loss, float)
    assert all(g.dtype == np.dtype(dtype) for g in grads.values())
