"""Every op pair in minitx/ops against the plain references in tests/reference_ops.py.

For each op:
  * forward  == reference forward, in float32 and float64, within the tolerance rule of `assert_close`;
  * backward == reference backward (same rule), and
  * backward == central finite differences in float64 of the fake loss L = Σ out · dout (llm.c doc/layernorm:
    the gradient of that L with respect to the inputs is exactly the vector-Jacobian product the backward
    computes), within the rule of `assert_fd_close`.
Plus the cases that are easy to get wrong: grouped-query heads, per-sequence positions (decode with T = 1 and
S > 1, ragged chunks), masked attention entries (exactly zero, never read), repeated token ids in the embedding
backward, tied embeddings accumulating into dwte, and weight gradients overwritten rather than accumulated.

CI also runs this file once with every kernel index bounds-checked, in a fresh Numba cache (otherwise Numba loads
the unchecked build it cached earlier; `test_boundscheck_mode_is_live` fails if that happens):

    NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR="$(mktemp -d)" python -m pytest tests/test_ops.py -q
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference_ops as ref
from reference_ops import assert_close, check_vjp   # the tolerance rules, stated there
from minitx.core.ops.activations import activation_backward, activation_forward
from minitx.core.batch import Block
from minitx.core.ops.attention import (block_queries, merge_backward, merge_forward, mix_backward, mix_forward, rope_tables,
                                  scores_backward, scores_forward, softmax_backward, softmax_forward,
                                  split_backward, split_forward)
from minitx.core.ops.embedding import embedding_backward, embedding_forward
from minitx.core.ops.linear import linear_backward, linear_forward
from minitx.core.ops.loss import cross_entropy_backward, cross_entropy_forward
from minitx.core.ops.norms import norm_backward, norm_forward

DTYPES = (np.float32, np.float64)
SEEDS = st.integers(0, 2**32 - 1)


def randn(rng, shape, dtype=np.float64, scale=1.0, shift=0.0) -> np.ndarray:
    return (shift + scale * rng.standard_normal(shape)).astype(dtype)


# ---- norms ---------------------------------------------------------------------------------------------------

NORM_CASES = [("layernorm", False), ("rmsnorm", False), ("rmsnorm", True)]   # (kind, Gemma's unit offset)


def _norm_inputs(rng, N, C, dtype, kind, unit_offset):
    x = randn(rng, (N, C), dtype, scale=2.0, shift=0.5)   # a non-zero mean, so LayerNorm's centring matters
    w = randn(rng, C, dtype, scale=0.3, shift=0.0 if unit_offset else 1.0)
    b = randn(rng, C, dtype, scale=0.3) if kind == "layernorm" else None
    return x, w, b


def _norm_ref_fwd(x, w, b, kind, unit_offset, eps):
    if kind == "layernorm":
        return ref.layernorm_fwd(x, w, b, eps)
    return ref.rmsnorm_fwd(x, w, eps, unit_offset)


def _norm_ref_bwd(dout, x, w, kind, unit_offset, eps, dres):
    if kind == "layernorm":
        return ref.layernorm_bwd(dout, x, w, eps, dres)
    dx, dw = ref.rmsnorm_bwd(dout, x, w, eps, unit_offset, dres)
    return dx, dw, None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,unit_offset", NORM_CASES)
@given(N=st.integers(1, 6), C=st.integers(1, 12), seed=SEEDS)
def test_norm_forward_matches_reference(kind, unit_offset, dtype, N, C, seed):
    rng = np.random.default_rng(seed)
    x, w, b = _norm_inputs(rng, N, C, dtype, kind, unit_offset)
    out, cache = norm_forward(x, w, b, kind, 1e-5, unit_offset, "norm")
    assert out.dtype == dtype and out.shape == (N, C)
    assert_close(out, _norm_ref_fwd(x, w, b, kind, unit_offset, 1e-5), f"{kind} forward", dtype, terms=C)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("kind,unit_offset", NORM_CASES)
@given(N=st.integers(1, 5), C=st.integers(2, 10), seed=SEEDS)
def test_norm_backward_matches_reference(kind, unit_offset, with_residual, dtype, N, C, seed):
    rng = np.random.default_rng(seed)
    x, w, b = _norm_inputs(rng, N, C, dtype, kind, unit_offset)
    dout = randn(rng, (N, C), dtype)
    dres = randn(rng, (N, C), dtype) if with_residual else None
    _, cache = norm_forward(x, w, b, kind, 1e-5, unit_offset, "norm")
    dw = np.full(C, np.nan, dtype=dtype)                    # garbage: the backward must overwrite, not accumulate
    db = np.full(C, np.nan, dtype=dtype) if kind == "layernorm" else None
    dx = norm_backward(dout, cache, dw, db, dres, "norm")
    rdx, rdw, rdb = _norm_ref_bwd(dout, x, w, kind, unit_offset, 1e-5, dres)
    terms = max(N, C)
    # Floor the bounds at the scale of the terms, not of the (cancelling) result. dx is a difference of terms as
    # large as |dout·w|·rstd; and the backward recomputes norm = (x − mean)·rstd from mean and rstd stored in the
    # kernel's dtype, so norm carries an error of eps·|x|·rstd: large when a row's spread is small next to its
    # values (centring is ill-conditioned then, for any implementation that stores the statistics).
    x64 = ref.f64(x)
    rstd = 1.0 / np.sqrt(np.var(x64, axis=1).min() + 1e-5) if kind == "layernorm" else \
        1.0 / np.sqrt((x64 ** 2).mean(axis=1).min() + 1e-5)
    centring = 1.0 + float(np.abs(x64).max()) * rstd
    dnorm = float(np.abs(ref.f64(dout) * ref.f64(1 + w if unit_offset else w)).max())
    assert_close(dx, rdx, f"{kind} dx", dtype, terms=terms, scale=dnorm * rstd * centring)
    assert_close(dw, rdw, f"{kind} dw", dtype, terms=terms,
                 scale=max(float(np.abs(rdw).max()), float(np.abs(dout).max()) * centring))
    if db is not None:
        assert_close(db, rdb, f"{kind} db", dtype, terms=terms)


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("kind,unit_offset", NORM_CASES)
def test_norm_backward_finite_differences(kind, unit_offset, with_residual):
    rng = np.random.default_rng(1)
    N, C = 3, 7
    x, w, b = _norm_inputs(rng, N, C, np.float64, kind, unit_offset)
    dout = randn(rng, (N, C))
    dres = randn(rng, (N, C)) if with_residual else None
    _, cache = norm_forward(x, w, b, kind, 1e-5, unit_offset, "norm")
    dw, db = np.empty(C), (np.empty(C) if b is not None else None)
    dx = norm_backward(dout, cache, dw, db, dres, "norm")
    if dres is not None:
        # the residual branch is the identity: out_total = norm(x) + x_skip, so d/dx_skip = dout_skip = dres
        dx = dx - dres
    inputs = {"x": x, "w": w} | ({"b": b} if b is not None else {})
    check_vjp(lambda: norm_forward(x, w, b, kind, 1e-5, unit_offset, "norm")[0], inputs, dout,
              {"x": dx, "w": dw, "b": db}, f"{kind} unit_offset={unit_offset}")


def test_norm_eps_matters_for_constant_rows():
    """A constant row has zero variance: LayerNorm must return b (no NaN), using eps in the square root."""
    x = np.full((2, 5), 3.0)
    w, b = np.ones(5), np.arange(5.0)
    out, _ = norm_forward(x, w, b, "layernorm", 1e-5, False, "ln")
    np.testing.assert_array_equal(out, np.broadcast_to(b, (2, 5)))


# ---- activations ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["gelu_tanh", "swiglu", "geglu"])
@given(N=st.integers(1, 5), F=st.integers(1, 9), seed=SEEDS)
def test_activation_matches_reference(kind, dtype, N, F, seed):
    rng = np.random.default_rng(seed)
    width = F if kind == "gelu_tanh" else 2 * F
    u = randn(rng, (N, width), dtype, scale=3.0)
    dout = randn(rng, (N, F), dtype)
    out, cache = activation_forward(u, kind, "act")
    du = activation_backward(dout, cache, "act")
    if kind == "gelu_tanh":
        rout, rdu = ref.gelu_fwd(u), ref.gelu_bwd(dout, u)
    else:
        rout, rdu = ref.gated_fwd(u, kind), ref.gated_bwd(dout, u, kind)
    assert out.dtype == dtype and du.dtype == dtype
    # Elementwise, but GELU's 1 + tanh(·) cancels for x ≪ 0, leaving an error of a few eps times |x| (times |up|
    # for the gated forms) in an output that is tiny: floor the bound at the inputs' magnitude, not the output's.
    mag = float(np.abs(u).max())
    scale = mag * (mag if kind != "gelu_tanh" else 1.0)
    assert_close(out, rout, f"{kind} forward", dtype, terms=4, scale=scale)
    assert_close(du, rdu, f"{kind} backward", dtype, terms=8, scale=max(scale, 1.0) * float(np.abs(dout).max()))


@pytest.mark.parametrize("kind", ["gelu_tanh", "swiglu", "geglu"])
def test_activation_finite_differences(kind):
    rng = np.random.default_rng(2)
    N, F = 3, 5
    u = randn(rng, (N, F if kind == "gelu_tanh" else 2 * F), scale=2.0)
    dout = randn(rng, (N, F))
    _, cache = activation_forward(u, kind, "act")
    du = activation_backward(dout, cache, "act")
    check_vjp(lambda: activation_forward(u, kind, "act")[0], {"u": u}, dout, {"u": du}, kind)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["gelu_tanh", "swiglu", "geglu"])
def test_activation_extreme_inputs_stay_finite(kind, dtype):
    """exp(-g) overflows for g ≪ 0 in SwiGLU; tanh saturates in GELU: outputs and gradients must stay finite and
    approach their limits (0 on the left, the identity / up on the right)."""
    g = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], dtype=dtype)
    u = g[None, :] if kind == "gelu_tanh" else np.concatenate([g, np.ones_like(g)])[None, :]
    with np.errstate(over="ignore"):
        out, cache = activation_forward(u, kind, "act")
        du = activation_backward(np.ones_like(out), cache, "act")
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(du))
    np.testing.assert_allclose(out[0, [0, 1, -2, -1]], [0.0, 0.0, 100.0, 1e4], atol=1e-6)


# ---- attention: split heads (+ RoPE) -------------------------------------------------------------------------

def _ragged_positions(rng, B, T, S):
    """(B, T) int64 positions: each sequence a run offset..offset+T-1 inside [0, S), offsets differing per row."""
    offsets = rng.integers(0, S - T + 1, size=B)
    return (offsets[:, None] + np.arange(T)[None, :]).astype(np.int64)


POS_CASES = {
    # name: (B, T, S) and how positions are laid out
    "training": (2, 5, 5),       # pos = 0..T-1, S = T
    "decode": (3, 1, 6),         # one new token per sequence, each at its own position, S > 1
    "ragged": (3, 3, 7),         # chunked prefill, each sequence at its own offset
}


def _positions(case, rng):
    B, T, S = POS_CASES[case]
    if case == "training":
        return np.tile(np.arange(T, dtype=np.int64), (B, 1)), S
    if case == "decode":
        pos = np.array([[S - 1], [2], [0]], dtype=np.int64)[:B]
        return pos, S
    return _ragged_positions(rng, B, T, S), S


def _split(qkv, pos, NH, KV, S, rope, dtype):
    """split_forward on (B, T, QKV) qkv at (B, T) positions, with q returned as (B, NH, T, HS)."""
    B, T, D = qkv.shape
    HS = D // (NH + 2 * KV)
    cos, sin = rope_tables(S + 3, HS, 10000.0, dtype) if rope else (None, None)
    k = np.zeros((B, KV, S, HS), dtype=dtype)
    v = np.zeros_like(k)
    batch = ref.packed(pos)
    table = np.arange(B, dtype=np.int64)[:, None]
    q, cache = split_forward(qkv.reshape(B * T, D), batch, NH, cos, sin, k, v, table, "split")
    return ref.by_sequence(q, batch, NH, HS, B, T), k, v, cache, cos, sin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (4, 1)], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("case", list(POS_CASES))
def test_split_matches_reference(case, heads, rope, dtype):
    rng = np.random.default_rng(3)
    NH, KV = heads
    HS = 6
    pos, S = _positions(case, rng)
    B, T = pos.shape
    qkv = randn(rng, (B, T, (NH + 2 * KV) * HS), dtype)
    q, k, v, cache, cos, sin = _split(qkv, pos, NH, KV, S, rope, dtype)
    rq, rk, rv = ref.split_fwd(qkv, pos, NH, KV, cos, sin, S)
    assert_close(q, rq, "split q", dtype, terms=2)
    assert_close(k, rk, "split k", dtype, terms=2)
    assert_close(v, rv, "split v", dtype)
    dq = randn(rng, q.shape, dtype)
    dk, dv = randn(rng, k.shape, dtype), randn(rng, v.shape, dtype)
    dqkv = split_backward(ref.to_blocks(dq, cache.batch), dk, dv, cache, "split").reshape(B, T, -1)
    assert_close(dqkv, ref.split_bwd(dq, dk, dv, pos, cos, sin), "split dqkv", dtype, terms=2)


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("case", list(POS_CASES))
def test_split_finite_differences(case, rope):
    rng = np.random.default_rng(4)
    NH, KV, HS = 4, 2, 4
    pos, S = _positions(case, rng)
    B, T = pos.shape
    qkv = randn(rng, (B, T, (NH + 2 * KV) * HS))
    q, k, v, cache, cos, sin = _split(qkv, pos, NH, KV, S, rope, np.float64)
    dq, dk, dv = randn(rng, q.shape), randn(rng, k.shape), randn(rng, v.shape)
    dqkv = split_backward(ref.to_blocks(dq, cache.batch), dk, dv, cache, "split").reshape(B, T, -1)
    check_vjp(lambda: _split(qkv, pos, NH, KV, S, rope, np.float64)[:3], {"qkv": qkv}, (dq, dk, dv),
              {"qkv": dqkv}, f"split rope={rope} {case}")


def test_rope_is_a_rotation_by_relative_position():
    """RoPE rotates each head vector (norms unchanged), so q·k depends only on the distance between positions:
    shifting every position by the same amount leaves the scores unchanged."""
    rng = np.random.default_rng(5)
    NH, KV, HS, T = 2, 1, 8, 4
    qkv = randn(rng, (1, T, (NH + 2 * KV) * HS))
    pos0 = np.arange(T, dtype=np.int64)[None, :]
    q0, k0, _, _, _, _ = _split(qkv, pos0, NH, KV, T + 9, True, np.float64)
    q5, k5, _, _, _, _ = _split(qkv, pos0 + 9, NH, KV, T + 9, True, np.float64)
    raw = qkv.reshape(1, T, NH + 2 * KV, HS)
    np.testing.assert_allclose(np.linalg.norm(q0, axis=-1), np.linalg.norm(raw[:, :, :NH], axis=-1).transpose(0, 2, 1))
    s0 = scores_forward(q0, k0[:, :, :T], "s")[0]
    s5 = scores_forward(q5, k5[:, :, 9:9 + T], "s")[0]
    # cos/sin tables are rounded to float32 as in HF, so the invariance holds to float32 precision
    np.testing.assert_allclose(s5, s0, rtol=1e-5, atol=1e-5)


# ---- attention: scores, mix ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (4, 1), (6, 3)], ids=["MHA", "GQA", "MQA", "GQA3"])
@given(B=st.integers(1, 2), T=st.integers(1, 4), extra=st.integers(0, 3), HS=st.integers(1, 5), seed=SEEDS)
def test_scores_and_mix_match_reference(heads, dtype, B, T, extra, HS, seed):
    rng = np.random.default_rng(seed)
    NH, KV = heads
    S = T + extra                                            # decode and chunked prefill read S ≥ T keys
    q, k, v = randn(rng, (B, NH, T, HS), dtype), randn(rng, (B, KV, S, HS), dtype), randn(rng, (B, KV, S, HS), dtype)
    p = np.abs(randn(rng, (B, NH, T, S), dtype))
    s, sc = scores_forward(q, k, "scores")
    assert_close(s, ref.scores_fwd(q, k), "scores", dtype, terms=HS)
    ds = randn(rng, s.shape, dtype)
    dq, dk = scores_backward(ds, sc, "scores")
    rdq, rdk = ref.scores_bwd(ds, q, k)
    assert_close(dq, rdq, "scores dq", dtype, terms=S)
    assert_close(dk, rdk, "scores dk (summed over the group)", dtype, terms=T * NH // KV)
    o, mc = mix_forward(p, v, "mix")
    assert_close(o, ref.mix_fwd(p, v), "mix", dtype, terms=S)
    do = randn(rng, o.shape, dtype)
    dp, dv = mix_backward(do, mc, "mix")
    rdp, rdv = ref.mix_bwd(do, p, v)
    assert_close(dp, rdp, "mix dp", dtype, terms=HS)
    assert_close(dv, rdv, "mix dv (summed over the group)", dtype, terms=T * NH // KV)


@pytest.mark.parametrize("heads", [(4, 2), (4, 1)], ids=["GQA", "MQA"])
def test_scores_and_mix_finite_differences(heads):
    rng = np.random.default_rng(6)
    NH, KV = heads
    B, T, S, HS = 2, 2, 3, 3
    q, k, v = randn(rng, (B, NH, T, HS)), randn(rng, (B, KV, S, HS)), randn(rng, (B, KV, S, HS))
    p = randn(rng, (B, NH, T, S))
    ds, do = randn(rng, (B, NH, T, S)), randn(rng, (B, NH, T, HS))
    dq, dk = scores_backward(ds, scores_forward(q, k, "s")[1], "s")
    check_vjp(lambda: scores_forward(q, k, "s")[0], {"q": q, "k": k}, ds, {"q": dq, "k": dk}, "scores")
    dp, dv = mix_backward(do, mix_forward(p, v, "m")[1], "m")
    check_vjp(lambda: mix_forward(p, v, "m")[0], {"p": p, "v": v}, do, {"p": dp, "v": dv}, "mix")


# ---- attention: causal softmax -------------------------------------------------------------------------------

def _mask(pos, S):
    """(B, 1, T, S) True where key j is visible to query (b, t): j ≤ pos[b, t]."""
    return (np.arange(S)[None, None, :] <= pos[:, :, None])[:, None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POS_CASES))
def test_softmax_matches_reference_and_masks_exactly(case, dtype):
    rng = np.random.default_rng(7)
    pos, S = _positions(case, rng)
    B, T = pos.shape
    NH, scale = 3, 1 / math.sqrt(5)
    visible = np.broadcast_to(_mask(pos, S), (B, NH, T, S))
    scores = randn(rng, (B, NH, T, S), dtype, scale=4.0)
    clean = scores.copy()
    scores[~visible] = np.nan                                # masked entries must never be read
    probs, cache = softmax_forward(scores, pos, scale, "softmax")
    assert np.all(probs[~visible] == 0.0), "masked probabilities must be exactly 0"
    assert_close(probs, ref.softmax_fwd(clean, pos, scale), "softmax", dtype, terms=S)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=4 * S * np.finfo(dtype).eps)
    dprobs = randn(rng, probs.shape, dtype)
    dprobs[~visible] = np.nan                                # nor may the backward read masked gradients
    dscores = softmax_backward(dprobs, cache, "softmax")
    assert np.all(dscores[~visible] == 0.0), "masked score gradients must be exactly 0"
    clean_dp = np.where(visible, dprobs, 0.0)
    assert_close(dscores, ref.softmax_bwd(clean_dp, probs, pos, scale), "softmax backward", dtype, terms=S,
                 scale=float(np.abs(clean_dp).max() * scale))


@given(B=st.integers(1, 3), NH=st.integers(1, 3), T=st.integers(1, 5), extra=st.integers(0, 3), seed=SEEDS)
def test_softmax_any_positions(B, NH, T, extra, seed):
    """Hypothesis over ragged positions (any per-sequence offset with S ≥ T): reference agreement in float64."""
    rng = np.random.default_rng(seed)
    S = T + extra
    pos = _ragged_positions(rng, B, T, S)
    scores = randn(rng, (B, NH, T, S), scale=3.0)
    probs, cache = softmax_forward(scores, pos, 0.5, "softmax")
    assert_close(probs, ref.softmax_fwd(scores, pos, 0.5), "softmax", np.float64, terms=S)
    dprobs = randn(rng, probs.shape)
    assert_close(softmax_backward(dprobs, cache, "softmax"), ref.softmax_bwd(dprobs, probs, pos, 0.5),
                 "softmax backward", np.float64, terms=S, scale=float(np.abs(dprobs).max()))


@pytest.mark.parametrize("case", list(POS_CASES))
def test_softmax_finite_differences(case):
    rng = np.random.default_rng(8)
    pos, S = _positions(case, rng)
    B, T = pos.shape
    scores = randn(rng, (B, 2, T, S), scale=2.0)
    dprobs = randn(rng, scores.shape)
    _, cache = softmax_forward(scores, pos, 0.7, "softmax")
    ds = softmax_backward(dprobs, cache, "softmax")
    check_vjp(lambda: softmax_forward(scores, pos, 0.7, "softmax")[0], {"scores": scores}, dprobs,
              {"scores": ds}, f"softmax {case}")


def test_softmax_large_scores_are_stable():
    scores = np.array([[[[1e4, -1e4, 3e4]]]], dtype=np.float32)
    probs, _ = softmax_forward(scores, np.array([[2]]), 1.0, "softmax")
    np.testing.assert_array_equal(probs, [[[[0.0, 0.0, 1.0]]]])


# ---- attention: merge ----------------------------------------------------------------------------------------

def test_merge_round_trip():
    rng = np.random.default_rng(9)
    o = randn(rng, (2, 3, 4, 5))
    m = merge_forward(o, "merge")
    np.testing.assert_array_equal(m, o.transpose(0, 2, 1, 3).reshape(2 * 4, 15))
    np.testing.assert_array_equal(merge_backward(m, Block(0, 0, 2, 4, 0), 3, "merge"), o)
    out = np.full((10, 15), -1.0)                    # into rows 1..8 of a larger batch
    merge_forward(o, "merge", out[1:9])
    np.testing.assert_array_equal(out[1:9], m)
    assert (out[0] == -1).all() and (out[9] == -1).all()


# ---- cross-entropy -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 6), V=st.integers(2, 20), seed=SEEDS)
def test_cross_entropy_matches_reference(dtype, N, V, seed):
    rng = np.random.default_rng(seed)
    logits = randn(rng, (N, V), dtype, scale=3.0)
    targets = rng.integers(0, V, size=N)
    loss, cache = cross_entropy_forward(logits, targets, "loss")
    assert isinstance(loss, float)
    assert_close(loss, ref.cross_entropy_fwd(logits, targets), "cross-entropy", dtype, terms=V,
                 scale=float(np.abs(logits).max()))
    dlogits = cross_entropy_backward(1.0, cache, "loss")
    assert_close(dlogits, ref.cross_entropy_bwd(logits, targets), "cross-entropy backward", dtype, terms=V,
                 scale=1.0 / N)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=4 * V * np.finfo(dtype).eps / N)


def test_cross_entropy_finite_differences_and_dloss():
    rng = np.random.default_rng(10)
    logits = randn(rng, (4, 7), scale=2.0)
    targets = np.array([1, 1, 6, 0])                         # a repeated target
    _, cache = cross_entropy_forward(logits, targets, "loss")
    dlogits = cross_entropy_backward(1.0, cache, "loss")
    check_vjp(lambda: np.array(cross_entropy_forward(logits, targets, "loss")[0]), {"logits": logits},
              np.array(1.0), {"logits": dlogits}, "cross-entropy")
    np.testing.assert_allclose(cross_entropy_backward(2.5, cache, "loss"), 2.5 * dlogits, rtol=1e-15)


def test_cross_entropy_extreme_logits_are_stable():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    loss, cache = cross_entropy_forward(logits, np.array([0, 2]), "loss")
    # row 0 has loss 0; row 1 has lse = −1e4 + log 3, stored in float32 (an ulp of 1e4 is ~1e-3)
    np.testing.assert_allclose(loss, math.log(3) / 2, atol=4 * 1e4 * np.finfo(np.float32).eps)
    assert np.all(np.isfinite(cross_entropy_backward(1.0, cache, "loss")))


# ---- embedding -----------------------------------------------------------------------------------------------

EMBED_CASES = {"learned": (True, None), "plain": (False, None), "gemma": (False, 3.0), "learned+scale": (True, 3.0)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(EMBED_CASES))
@pytest.mark.parametrize("accumulate_wte", [False, True])
def test_embedding_matches_reference(case, accumulate_wte, dtype):
    learned, scale = EMBED_CASES[case]
    rng = np.random.default_rng(11)
    V, P, C, B, T = 6, 8, 5, 3, 4
    wte, wpe = randn(rng, (V, C), dtype), (randn(rng, (P, C), dtype) if learned else None)
    tokens = np.array([[1, 1, 1, 1], [0, 5, 1, 5], [2, 2, 3, 1]], dtype=np.int64)   # repeated ids
    pos = _ragged_positions(rng, B, T, P)
    out, cache = embedding_forward(tokens.reshape(-1), pos.reshape(-1) if learned else None, wte, wpe, scale, "embed")
    assert_close(out, ref.embedding_fwd(tokens, pos, wte, wpe, scale).reshape(B * T, C), f"embedding {case}",
                 dtype, terms=2)
    dout = randn(rng, out.shape, dtype)
    prior = randn(rng, (V, C), dtype)                        # what the tied LM head already wrote into dwte
    dwte = prior.copy() if accumulate_wte else np.full((V, C), np.nan, dtype=dtype)
    dwpe = np.full((P, C), np.nan, dtype=dtype) if learned else None
    embedding_backward(dout, cache, dwte, dwpe, "embed", accumulate_wte=accumulate_wte)
    rdwte, rdwpe = ref.embedding_bwd(dout.reshape(B, T, C), tokens, pos, V, P if learned else None, scale)
    if accumulate_wte:
        rdwte = rdwte + prior
    # row 1 is hit 7 times: the scatter-add sums 7 contributions
    assert_close(dwte, rdwte, f"embedding {case} dwte", dtype, terms=B * T)
    if learned:
        assert_close(dwpe, rdwpe, f"embedding {case} dwpe", dtype, terms=B * T)


@pytest.mark.parametrize("case", list(EMBED_CASES))
def test_embedding_finite_differences(case):
    learned, scale = EMBED_CASES[case]
    rng = np.random.default_rng(12)
    V, P, C = 4, 5, 3
    wte, wpe = randn(rng, (V, C)), (randn(rng, (P, C)) if learned else None)
    tokens = np.array([3, 3, 0, 3, 1, 0], dtype=np.int64)
    pos = np.array([0, 1, 2, 2, 3, 4], dtype=np.int64)
    dout = randn(rng, (6, C))
    _, cache = embedding_forward(tokens, pos if learned else None, wte, wpe, scale, "embed")
    dwte, dwpe = np.empty((V, C)), (np.empty((P, C)) if learned else None)
    embedding_backward(dout, cache, dwte, dwpe, "embed", accumulate_wte=False)
    inputs = {"wte": wte} | ({"wpe": wpe} if learned else {})
    check_vjp(lambda: embedding_forward(tokens, pos if learned else None, wte, wpe, scale, "embed")[0], inputs,
              dout, {"wte": dwte, "wpe": dwpe}, f"embedding {case}")


# ---- linear --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_reference(bias, transposed, dtype):
    rng = np.random.default_rng(13)
    N, K, M = 5, 7, 3
    x = randn(rng, (N, K), dtype)
    w = randn(rng, (M, K) if transposed else (K, M), dtype)
    b = randn(rng, M, dtype) if bias else None
    out, cache = linear_forward(x, w, b, "lin", transposed=transposed)
    assert_close(out, ref.linear_fwd(x, w, b, transposed), "linear", dtype, terms=K + 1)
    dout = randn(rng, (N, M), dtype)
    dw = np.full(w.shape, np.nan, dtype=dtype)
    db = np.full(M, np.nan, dtype=dtype) if bias else None
    dx = linear_backward(dout, cache, dw, db, "lin")
    rdx, rdw, rdb = ref.linear_bwd(dout, x, w, transposed)
    assert_close(dx, rdx, "linear dx", dtype, terms=M)
    assert_close(dw, rdw, "linear dw", dtype, terms=N)
    if bias:
        assert_close(db, rdb, "linear db", dtype, terms=N)
    if dtype == np.float64:
        x64, w64 = x.copy(), w.copy()
        check_vjp(lambda: linear_forward(x64, w64, b, "lin", transposed=transposed)[0], {"x": x64, "w": w64},
                  dout, {"x": dx, "w": dw}, "linear")


# ---- the bounds-checked CI run -------------------------------------------------------------------------------

def test_boundscheck_mode_is_live():
    """Under NUMBA_BOUNDSCHECK=1 (with a fresh NUMBA_CACHE_DIR), an out-of-range index must raise IndexError: this
    proves the kernels above really ran bounds-checked, not from an unchecked build in Numba's on-disk cache.
    Skipped in ordinary runs, where the same call would read outside the array."""
    import numba
    if not numba.config.BOUNDSCHECK:
        pytest.skip("only meaningful under NUMBA_BOUNDSCHECK=1")
    from minitx.core.ops.embedding import _embed_fwd
    wte = np.zeros((3, 2))
    with pytest.raises(IndexError):
        _embed_fwd(np.array([5]), np.array([0]), wte, np.zeros((0, 2)), 1.0, np.empty((1, 2)))
