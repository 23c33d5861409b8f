"""minitx against PyTorch + Hugging Face transformers, on the recorded fixtures of tests/fixtures (see its README).

For each tiny model (GPT-2, Llama with GQA, Mistral with MQA, Gemma): same weights and inputs, then the logits,
the loss, every parameter's gradient, and five AdamW steps (losses along the way and the final weights) must
agree to float32 rounding. The llm.c pattern (test_gpt2.c), with tolerances derived from float32 instead of
one global constant. Greedy generation (`gen_*`) is tested with the decoder.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minitx.io.hf import export_hf, load_hf
from minitx.core.optim import AdamW

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ("gpt2_tiny", "llama_tiny_gqa", "mistral_tiny", "gemma_tiny", "mistral_window_tiny")
TIED = {"gpt2_tiny": "transformer.wte.weight", "gemma_tiny": "model.embed_tokens.weight"}
ADAM_STEPS = 5

# Tolerance rule, used for every comparison below: atol = K · eps32 · max|reference|.
# Both sides compute in float32, so each result carries rounding of order eps32 times the magnitudes involved;
# sums over n terms grow it by up to n (worst case) and typically √n. Here every sum runs over at most a few
# hundred terms (C = 32, F ≤ 128, B·T = 16, V = 96, two layers), and the worst error measured on the four
# fixtures is ~21 eps32 · max|ref| (gradients; logits ~8, loss ~3). K leaves a factor of ~6 above that while
# staying 3+ orders of magnitude below any real bug (a wrong layout or formula errs by O(max|ref|)).
EPS32 = float(np.finfo(np.float32).eps)
K = 128


def tolerance(reference) -> float:
    return K * EPS32 * float(np.max(np.abs(reference)))


def assert_close(name: str, got, ref, extra_atol=0.0) -> None:
    """Compare against the reference with `tolerance(ref)` (+ an explained per-element extra); on failure
    print the tensor name, shape, max abs error, max rel error and the worst index."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, reference {ref.shape}"
    err = np.abs(got - ref)
    atol = tolerance(ref) + extra_atol
    if np.all(err <= atol):
        return
    excess = np.unravel_index(np.argmax(err - atol), err.shape)
    rel = err / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    worst = tuple(int(i) for i in excess)
    pytest.fail(f"{name} {ref.shape}: max abs err {err.max():.3e} (tolerance {tolerance(ref):.3e}), "
                f"max rel err {rel.max():.3e}; worst at {worst}: got {got[excess]:.8g}, "
                f"reference {ref[excess]:.8g}, allowed {np.broadcast_to(atol, err.shape)[excess]:.3e}")


@lru_cache(maxsize=None)
def fixture(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def section(f: dict, prefix: str) -> dict[str, np.ndarray]:
    """The entries under "prefix/", with the prefix stripped (load_hf takes plain HF names)."""
    return {key[len(prefix) + 1:]: value for key, value in f.items() if key.startswith(prefix + "/")}


def build(name: str):
    f = fixture(name)
    return load_hf(json.loads(str(f["config_json"])), section(f, "param")), f


@pytest.mark.parametrize("name", NAMES)
def test_logits(name):
    model, f = build(name)
    assert_close(f"{name} logits", model.forward(f["tokens"]), f["logits"])


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_every_gradient(name):
    model, f = build(name)
    loss, grads = model.loss_and_grads(f["tokens"], f["targets"])
    assert_close(f"{name} loss", loss, f["loss"])
    ours, theirs = export_hf(model, grads), section(f, "grad")
    assert sorted(ours) == sorted(theirs), "export_hf(grads) must name exactly HF's named_parameters()"
    for hf_name in theirs:
        assert_close(f"{name} grad/{hf_name}", ours[hf_name], theirs[hf_name])


@pytest.mark.parametrize("name", sorted(TIED))
def test_tied_embedding_gradient_holds_both_uses(name):
    """PyTorch lists the shared matrix once, under the embedding's name, with the sum of the gradients from
    the input lookup and the output head; export_hf must give the same single entry."""
    model, f = build(name)
    _, grads = model.loss_and_grads(f["tokens"], f["targets"])
    ours, ref = export_hf(model, grads), f[f"grad/{TIED[name]}"]
    assert "lm_head.weight" not in ours and "grad/lm_head.weight" not in f
    # Rows of tokens absent from the input get gradient only through the head; present rows get both.
    unused = np.setdiff1d(np.arange(ref.shape[0]), f["tokens"])
    assert unused.size and np.all(np.abs(ref[unused]).max(axis=1) > 0)
    assert_close(f"{name} grad/{TIED[name]} (unused rows: head only)", ours[TIED[name]][unused], ref[unused])
    assert_close(f"{name} grad/{TIED[name]} (all rows: lookup + head)", ours[TIED[name]], ref)


@pytest.mark.parametrize("name", NAMES)
def test_adamw_steps(name):
    model, f = build(name)
    lr = float(f["adamw_lr"])
    opt = AdamW(model, lr=lr, betas=(float(f["adamw_beta1"]), float(f["adamw_beta2"])), eps=float(f["adamw_eps"]),
                weight_decay=float(f["adamw_weight_decay"]))
    losses, amplified = [], None
    for _ in range(ADAM_STEPS):
        loss, grads = model.loss_and_grads(f["tokens"], f["targets"])
        losses.append(loss)
        grad_tol = {n: tolerance(g) for n, g in export_hf(model, grads).items()}
        opt.step(grads)
        step_allowance = adam_noise_allowance(model, opt, grad_tol)
        amplified = step_allowance if amplified is None else {n: amplified[n] + step_allowance[n] for n in grad_tol}
    assert_close(f"{name} adamw_losses", losses, f["adamw_losses"])
    after = export_hf(model)
    for hf_name, ref in section(f, "after").items():
        assert_close(f"{name} after/{hf_name}", after[hf_name], ref, extra_atol=amplified[hf_name])


def adam_noise_allowance(model, opt: AdamW, grad_tol: dict[str, float]) -> dict[str, np.ndarray]:
    """Per element, how far one AdamW update can move when the gradient is off by its float32 tolerance δ.

    The update lr·m̂/(√v̂ + ε) changes by about lr·2δ/(√v̂ + ε) when g changes by δ (δ moves m̂ by ≤ δ, and √v̂
    by ≤ δ relative to the ~1 ratio m̂/√v̂), and never by more than 2·lr, since |m̂/√v̂| ≲ 1 over a few steps.
    Where the gradient is far above δ this is tiny. Where it sits at float32's noise floor, Adam divides noise
    by noise and takes a step of ±lr in an arbitrary direction: e.g. GPT-2's key bias, whose true gradient is
    exactly 0 (softmax ignores a constant added to every score; both sides' gradients there are ~1e-9, noise),
    and elements with |g| ~ ε = 1e-8 (Llama's down_proj has one at 1.3e-7). There the two trajectories
    legitimately differ by up to a few lr, and only there does this allowance grow that large.
    """
    v_hat = {n: v / (1.0 - opt.betas[1] ** opt.t) for n, v in export_hf(model, opt.state["v"]).items()}
    return {n: opt.lr * np.minimum(2.0, 2.0 * grad_tol[n] / (np.sqrt(v_hat[n]) + opt.eps)) for n in v_hat}
