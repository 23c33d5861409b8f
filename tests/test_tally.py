"""The per-element FLOP constants of `minitx.conventions`, checked by counting: run each op's arithmetic as a plain
Python loop over `Tally` numbers, which count every +, -, *, /, unary -, comparison, exp, log, sqrt and tanh done
on them, and assert the tally equals the FLOPs the real op recorded under `minitx.count()` for the same shapes.

A count is trusted only once a second, independent method agrees with it, and this is that method (proxy tracing,
as in GPU-Puzzles): the constants were written by reading the Numba kernels; here the loops are executed and the
operations are counted, not read. Each loop also computes the op's values, and they must equal the real op's
output, so the tally is of a loop that really computes the op and not of something that only looks like it.

Counting rules (the conventions' own): constants (Python floats, e.g. 2·k of GELU) are free, and so is scalar
work done once per op call (Adam's bias corrections, the 1/N of a mean: done on plain floats below); a reduction
of n values starts from 0.0 (or -inf) and costs n. Each loop follows the kernel's algorithm (its passes, what it
recomputes rather than stores); where a looser "natural" loop would count differently, the comment says so.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minitx
from minitx import conventions as cv
import reference_ops as ref
from strategies import TINY_GPT2
from minitx.core.ops.activations import GELU_C, GELU_K, activation_backward, activation_forward
from minitx.core.ops.attention import (mix_forward, rope_tables, scores_forward, softmax_backward, softmax_forward,
                                  split_backward, split_forward)
from minitx.core.ops.embedding import embedding_backward, embedding_forward
from minitx.core.ops.linear import linear_backward, linear_forward, residual_forward
from minitx.core.ops.loss import cross_entropy_backward, cross_entropy_forward
from minitx.core.ops.norms import norm_backward, norm_forward


# ---- the counting number ---------------------------------------------------------------------------------------

class Tally:
    """A float that counts the arithmetic done on it in the class-wide `Tally.ops`."""
    __slots__ = ("v",)
    ops = 0

    def __init__(self, v):
        self.v = float(v)

    def _do(self, other, f):
        Tally.ops += 1
        return Tally(f(self.v, other.v if isinstance(other, Tally) else other))

    def __add__(self, o): return self._do(o, lambda a, b: a + b)
    def __radd__(self, o): return self._do(o, lambda a, b: b + a)
    def __sub__(self, o): return self._do(o, lambda a, b: a - b)
    def __rsub__(self, o): return self._do(o, lambda a, b: b - a)
    def __mul__(self, o): return self._do(o, lambda a, b: a * b)
    def __rmul__(self, o): return self._do(o, lambda a, b: b * a)
    def __truediv__(self, o): return self._do(o, lambda a, b: a / b)
    def __rtruediv__(self, o): return self._do(o, lambda a, b: b / a)

    def __neg__(self):
        Tally.ops += 1
        return Tally(-self.v)

    def _cmp(self, other, f):
        Tally.ops += 1
        return f(self.v, other.v if isinstance(other, Tally) else other)

    def __lt__(self, o): return self._cmp(o, lambda a, b: a < b)
    def __le__(self, o): return self._cmp(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._cmp(o, lambda a, b: a > b)
    def __ge__(self, o): return self._cmp(o, lambda a, b: a >= b)


def _unary(fn):
    def wrapped(x):
        if isinstance(x, Tally):
            Tally.ops += 1
            return Tally(fn(x.v))
        return fn(x)
    return wrapped


exp, log, sqrt, tanh = (_unary(f) for f in (math.exp, math.log, math.sqrt, math.tanh))


def tallied(a: np.ndarray):
    """An ndarray of Tally objects with a's values (float64 arithmetic inside)."""
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape):
        out[idx] = Tally(a[idx])
    return out


def values(t) -> np.ndarray:
    """Back from Tally objects (or plain floats) to a float64 array."""
    t = np.asarray(t, dtype=object)
    out = np.empty(t.shape)
    for idx in np.ndindex(t.shape):
        x = t[idx]
        out[idx] = x.v if isinstance(x, Tally) else x
    return out


def count_loop(loop, *args):
    """(result, operations counted) of running loop(*args)."""
    Tally.ops = 0
    result = loop(*args)
    return result, Tally.ops


def recorded(fn, *args, **kw):
    """(result, FLOPs recorded) of calling a real op: exactly one record expected."""
    with minitx.count() as c:
        result = fn(*args, **kw)
    assert len(c.records) == 1, c.records
    return result, c.flops


def close(a, b):
    np.testing.assert_allclose(values(a), np.asarray(b, dtype=np.float64), rtol=1e-9, atol=1e-12)


rng = np.random.default_rng(1234)
N, C, EPS = 3, 5, 1e-5


# ---- matmul --------------------------------------------------------------------------------------------------

def matmul_loop(x, w):
    """(N, K) @ (K, M) accumulating from zero: K multiplies and K adds per output."""
    n, k = x.shape
    m = w.shape[1]
    out = np.empty((n, m), dtype=object)
    for i in range(n):
        for j in range(m):
            acc = 0.0
            for p in range(k):
                acc = acc + x[i, p] * w[p, j]
            out[i, j] = acc
    return out


@pytest.mark.parametrize("bias", [False, True])
def test_linear_is_2NKM_plus_bias(bias):
    n, k, m = 3, 4, 5
    x, w, b = rng.normal(size=(n, k)), rng.normal(size=(k, m)), rng.normal(size=m)

    def loop(x, w, b):
        out = matmul_loop(x, w)
        if b is not None:
            for i in range(n):
                for j in range(m):
                    out[i, j] = out[i, j] + b[j]
        return out

    (y, _), flops = recorded(linear_forward, x, w, b if bias else None, "lin")
    out, ops = count_loop(loop, tallied(x), tallied(w), tallied(b) if bias else None)
    close(out, y)
    assert ops == flops == 2 * n * k * m + (n * m if bias else 0)


@pytest.mark.parametrize("bias", [False, True])
def test_linear_backward_is_two_matmuls_plus_bias_sum(bias):
    n, k, m = 3, 4, 2
    x, w, dout = rng.normal(size=(n, k)), rng.normal(size=(k, m)), rng.normal(size=(n, m))
    b = rng.normal(size=m) if bias else None
    _, cache = linear_forward(x, w, b, "lin")
    dw, db = np.empty_like(w), (np.empty(m) if bias else None)
    dx, flops = recorded(linear_backward, dout, cache, dw, db, "lin")

    def loop(dout, x, w):
        dx = matmul_loop(dout, w.T)                  # (N, M) @ (M, K)
        dw = matmul_loop(x.T, dout)                  # (K, N) @ (N, M)
        db = None
        if bias:
            db = [0.0] * m
            for i in range(n):
                for j in range(m):
                    db[j] = db[j] + dout[i, j]       # the bias gradient sums the rows
        return dx, dw, db

    (tdx, tdw, tdb), ops = count_loop(loop, tallied(dout), tallied(x), tallied(w))
    close(tdx, dx)
    close(tdw, dw)
    if bias:
        close(tdb, db)
    assert ops == flops == 4 * n * k * m + (n * m if bias else 0)


def test_attention_matmuls_are_2_B_NH_T_S_HS():
    B, NH, KV, T, S, HS = 1, 2, 1, 2, 3, 2
    q, k, v = rng.normal(size=(B, NH, T, HS)), rng.normal(size=(B, KV, S, HS)), rng.normal(size=(B, KV, S, HS))
    p = rng.random((B, NH, T, S))
    (s, _), flops_s = recorded(scores_forward, q, k, "scores")
    (o, _), flops_m = recorded(mix_forward, p, v, "mix")
    G = NH // KV

    def loop(q, k, v, p):
        s = np.empty((B, NH, T, S), dtype=object)
        o = np.empty((B, NH, T, HS), dtype=object)
        for h in range(NH):
            s[0, h] = matmul_loop(q[0, h], k[0, h // G].T)
            o[0, h] = matmul_loop(p[0, h], v[0, h // G])
        return s, o

    (ts, to), ops = count_loop(loop, tallied(q), tallied(k), tallied(v), tallied(p))
    close(ts, s)
    close(to, o)
    assert ops == flops_s + flops_m == 2 * (2 * B * NH * T * S * HS)


def test_residual_add_is_one_per_element():
    x, y = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    out, flops = recorded(residual_forward, x, y, "res")
    t, ops = count_loop(lambda a, b: a + b, tallied(x), tallied(y))
    close(t, out)
    assert ops == flops == cv.ELEMENTWISE * N * C


# ---- norms ---------------------------------------------------------------------------------------------------

def layernorm_fwd_loop(x, w, b):
    out = np.empty(x.shape, dtype=object)
    for i in range(x.shape[0]):
        m = 0.0
        for c in range(C):
            m = m + x[i, c]
        m = m / C
        var = 0.0
        for c in range(C):
            d = x[i, c] - m
            var = var + d * d
        var = var / C
        r = 1.0 / sqrt(var + EPS)
        for c in range(C):
            out[i, c] = (x[i, c] - m) * r * w[c] + b[c]
    return out


def layernorm_bwd_loop(dout, x, w, dres):
    """llm.c's two passes: the second recomputes norm and dnorm (3 FLOPs per element) rather than storing
    them. A loop that kept them in a row buffer would count 13·C + 2 per row instead of 16·C + 2."""
    n = x.shape[0]
    dx = np.empty(x.shape, dtype=object)
    dw, db = [0.0] * C, [0.0] * C
    for i in range(n):
        m = 0.0                                   # the saved statistics: their cost belongs to the forward
        for c in range(C):
            m += x[i, c].v
        m /= C
        r = 1.0 / math.sqrt(sum((x[i, c].v - m) ** 2 for c in range(C)) / C + EPS)
        dmean, dnmean = 0.0, 0.0
        for c in range(C):
            norm = (x[i, c] - m) * r
            dnorm = w[c] * dout[i, c]
            dmean = dmean + dnorm
            dnmean = dnmean + dnorm * norm
        dmean, dnmean = dmean / C, dnmean / C
        for c in range(C):
            norm = (x[i, c] - m) * r
            dnorm = w[c] * dout[i, c]
            db[c] = db[c] + dout[i, c]
            dw[c] = dw[c] + norm * dout[i, c]
            g = (dnorm - dmean - norm * dnmean) * r
            dx[i, c] = g + dres[i, c] if dres is not None else g
    return dx, dw, db


def rmsnorm_fwd_loop(x, w, unit_offset):
    w = [1.0 + wc for wc in w] if unit_offset else w        # Gemma's (1 + w): C adds per call
    out = np.empty(x.shape, dtype=object)
    for i in range(x.shape[0]):
        ss = 0.0
        for c in range(C):
            ss = ss + x[i, c] * x[i, c]
        r = 1.0 / sqrt(ss / C + EPS)
        for c in range(C):
            out[i, c] = x[i, c] * r * w[c]
    return out


def rmsnorm_bwd_loop(dout, x, w_eff, dres):
    """w_eff is the scale the forward applied and cached ((1 + w) for Gemma): nothing recomputes it here."""
    n = x.shape[0]
    dx = np.empty(x.shape, dtype=object)
    dw = [0.0] * C
    for i in range(n):
        r = 1.0 / math.sqrt(sum(x[i, c].v ** 2 for c in range(C)) / C + EPS)   # saved rstd: free
        s = 0.0
        for c in range(C):
            s = s + dout[i, c] * w_eff[c] * x[i, c]
        s = s / C
        for c in range(C):
            norm = x[i, c] * r
            dw[c] = dw[c] + dout[i, c] * norm
            g = r * (w_eff[c] * dout[i, c] - norm * r * s)
            dx[i, c] = g + dres[i, c] if dres is not None else g
    return dx, dw


def test_layernorm_forward():
    x, w, b = rng.normal(size=(N, C)), rng.normal(size=C), rng.normal(size=C)
    (y, _), flops = recorded(norm_forward, x, w, b, "layernorm", EPS, False, "ln")
    t, ops = count_loop(layernorm_fwd_loop, tallied(x), tallied(w), tallied(b))
    close(t, y)
    per_elem, per_row = cv.LAYERNORM_FWD
    assert ops == flops == N * (per_elem * C + per_row)


@pytest.mark.parametrize("residual", [False, True])
def test_layernorm_backward(residual):
    x, w, b, dout = rng.normal(size=(N, C)), rng.normal(size=C), rng.normal(size=C), rng.normal(size=(N, C))
    dres = rng.normal(size=(N, C)) if residual else None
    _, cache = norm_forward(x, w, b, "layernorm", EPS, False, "ln")
    dw, db = np.empty(C), np.empty(C)
    dx, flops = recorded(norm_backward, dout, cache, dw, db, dres, "ln")
    (tdx, tdw, tdb), ops = count_loop(layernorm_bwd_loop, tallied(dout), tallied(x), tallied(w),
                                      tallied(dres) if residual else None)
    close(tdx, dx)
    close(tdw, dw)
    close(tdb, db)
    per_elem, per_row = cv.LAYERNORM_BWD
    assert ops == flops == N * (per_elem * C + per_row) + (cv.RESIDUAL_GRAD_ADD * N * C if residual else 0)


@pytest.mark.parametrize("unit_offset", [False, True])
def test_rmsnorm_forward(unit_offset):
    x, w = rng.normal(size=(N, C)), rng.normal(size=C)
    (y, _), flops = recorded(norm_forward, x, w, None, "rmsnorm", EPS, unit_offset, "rms")
    t, ops = count_loop(rmsnorm_fwd_loop, tallied(x), tallied(w), unit_offset)
    close(t, y)
    per_elem, per_row = cv.RMSNORM_FWD
    assert ops == flops == N * (per_elem * C + per_row) + (cv.NORM_UNIT_OFFSET * C if unit_offset else 0)


@pytest.mark.parametrize("residual", [False, True])
def test_rmsnorm_backward(residual):
    x, w, dout = rng.normal(size=(N, C)), rng.normal(size=C), rng.normal(size=(N, C))
    dres = rng.normal(size=(N, C)) if residual else None
    _, cache = norm_forward(x, w, None, "rmsnorm", EPS, False, "rms")
    dw = np.empty(C)
    dx, flops = recorded(norm_backward, dout, cache, dw, None, dres, "rms")
    (tdx, tdw), ops = count_loop(rmsnorm_bwd_loop, tallied(dout), tallied(x), tallied(w),
                                 tallied(dres) if residual else None)
    close(tdx, dx)
    close(tdw, dw)
    per_elem, per_row = cv.RMSNORM_BWD
    assert ops == flops == N * (per_elem * C + per_row) + (cv.RESIDUAL_GRAD_ADD * N * C if residual else 0)


def test_rmsnorm_backward_unit_offset():
    x, w, dout = rng.normal(size=(N, C)), rng.normal(size=C), rng.normal(size=(N, C))
    _, cache = norm_forward(x, w, None, "rmsnorm", EPS, True, "rms")
    dw = np.empty(C)
    dx, flops = recorded(norm_backward, dout, cache, dw, None, None, "rms")
    (tdx, tdw), ops = count_loop(rmsnorm_bwd_loop, tallied(dout), tallied(x), tallied(cache.w_eff), None)
    close(tdx, dx)
    close(tdw, dw)
    assert ops == flops


# ---- activations ---------------------------------------------------------------------------------------------
# The kernels' GELU (ops/activations.py `_gelu`): t = tanh(k·(x³·c + x)), gelu = 0.5·x·(1 + t),
# gelu' = 0.5·(1 + t) + x·(0.5·k)·(1 − t²)·(1 + 3c·x²). A tanh is 1 FLOP however it is evaluated (float64 here:
# the exact np.tanh; a float32 model evaluates a rational approximation, counted the same).
HK, C3 = 0.5 * GELU_K, 3.0 * GELU_C      # constants: folded, free


def gelu_t(x):
    return tanh(GELU_K * (x * x * x * GELU_C + x))           # 5 + tanh 1


def gelu_value(x, t):
    return 0.5 * x * (1.0 + t)                                # 3


def gelu_half_and_grad(x, t):
    """(0.5·(1 + t), gelu'): the half is shared by the value and the derivative."""
    half_1pt = 0.5 * (1.0 + t)                                # 2
    sech2 = 1.0 - t * t                                       # 2
    return half_1pt, half_1pt + x * HK * sech2 * (1.0 + C3 * (x * x))   # 7


def act_fwd_loop(u, kind):
    n = u.shape[0]
    F = u.shape[1] if kind == "gelu_tanh" else u.shape[1] // 2
    out = np.empty((n, F), dtype=object)
    for i in range(n):
        for j in range(F):
            if kind == "gelu_tanh":
                out[i, j] = gelu_value(u[i, j], gelu_t(u[i, j]))              # 6 + 3 = 9
            elif kind == "geglu":
                g, up = u[i, j], u[i, F + j]
                out[i, j] = gelu_value(g, gelu_t(g)) * up                     # 10
            else:
                g, up = u[i, j], u[i, F + j]
                out[i, j] = g / (1.0 + exp(-g)) * up                          # 5
    return out


def act_bwd_loop(dout, u, kind):
    """The kernels' literal expressions (`_gelu` returns the value x·half and the derivative; the plain GELU
    backward uses only the derivative, so the value's multiply is not executed there)."""
    n, F = dout.shape
    du = np.empty(u.shape, dtype=object)
    for i in range(n):
        for j in range(F):
            dy = dout[i, j]
            if kind == "gelu_tanh":
                x = u[i, j]
                _, grad = gelu_half_and_grad(x, gelu_t(x))                    # 6 + 11
                du[i, j] = dy * grad                                          # + 1 = 18
                continue
            g, up = u[i, j], u[i, F + j]
            if kind == "geglu":
                half_1pt, da = gelu_half_and_grad(g, gelu_t(g))               # 6 + 11
                a = g * half_1pt                                              # + 1
            else:
                sig = 1.0 / (1.0 + exp(-g))                                   # 4
                a, da = g * sig, sig * (1.0 + g * (1.0 - sig))                # 1 + 4
            du[i, F + j] = dy * a
            du[i, j] = dy * up * da                                           # + 3
    return du


ACT = {"gelu_tanh": (cv.GELU_FWD, cv.GELU_BWD), "geglu": (cv.GEGLU_FWD, cv.GEGLU_BWD),
       "swiglu": (cv.SWIGLU_FWD, cv.SWIGLU_BWD)}


@pytest.mark.parametrize("kind", list(ACT))
def test_activation_forward_and_backward(kind):
    F = 4
    u = rng.normal(size=(N, F if kind == "gelu_tanh" else 2 * F)) * 2
    dout = rng.normal(size=(N, F))
    (y, cache), flops_f = recorded(activation_forward, u, kind, "act")
    du, flops_b = recorded(activation_backward, dout, cache, "act")
    t, ops_f = count_loop(act_fwd_loop, tallied(u), kind)
    close(t, y)
    td, ops_b = count_loop(act_bwd_loop, tallied(dout), tallied(u), kind)
    close(td, du)
    per_f, per_b = ACT[kind]
    assert ops_f == flops_f == per_f * N * F
    assert ops_b == flops_b == per_b * N * F


# ---- causal softmax ------------------------------------------------------------------------------------------

def softmax_fwd_loop(s, pos, scale):
    B, NH, T, S = s.shape
    p = np.zeros(s.shape, dtype=object)
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(int(pos[b, t]) + 1, S)        # keys at positions 0..pos: the causal part only
                m = -math.inf
                for j in range(n):
                    m = max(m, s[b, h, t, j] * scale)          # 2
                total, e = 0.0, [None] * n
                for j in range(n):
                    e[j] = exp(s[b, h, t, j] * scale - m)      # 3
                    total = total + e[j]                       # 1
                inv = 1.0 / total                              # 1 per row
                for j in range(n):
                    p[b, h, t, j] = e[j] * inv                 # 1
    return p


def softmax_bwd_loop(dp, p, pos, scale):
    B, NH, T, S = p.shape
    ds = np.zeros(p.shape, dtype=object)
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(int(pos[b, t]) + 1, S)
                dot = 0.0
                for j in range(n):
                    dot = dot + p[b, h, t, j] * dp[b, h, t, j]                   # 2
                for j in range(n):
                    ds[b, h, t, j] = scale * p[b, h, t, j] * (dp[b, h, t, j] - dot)   # 3
    return ds


@pytest.mark.parametrize("T, S, pos", [
    (4, 4, [[0, 1, 2, 3], [0, 1, 2, 3]]),     # training: the causal triangle, T(T+1)/2 per head
    (1, 5, [[4], [4]]),                       # decode: one query sees all S cached keys
    (3, 5, [[0, 1, 2], [2, 3, 4]]),           # ragged positions over a longer cache
])
def test_causal_softmax(T, S, pos):
    B, NH, scale = 2, 2, 0.5
    pos = np.array(pos, dtype=np.int64)
    s, dp = rng.normal(size=(B, NH, T, S)), rng.normal(size=(B, NH, T, S))
    (p, cache), flops_f = recorded(softmax_forward, s, pos, scale, "sm")
    ds, flops_b = recorded(softmax_backward, dp, cache, "sm")
    tp, ops_f = count_loop(softmax_fwd_loop, tallied(s), pos, scale)
    close(tp, p)
    td, ops_b = count_loop(softmax_bwd_loop, tallied(dp), tallied(p), pos, scale)
    close(td, ds)
    visible = NH * int(np.minimum(pos + 1, S).sum())
    (fe, fr), (be, br) = cv.SOFTMAX_FWD, cv.SOFTMAX_BWD
    assert ops_f == flops_f == fe * visible + fr * B * NH * T
    assert ops_b == flops_b == be * visible + br * B * NH * T


# ---- cross-entropy -------------------------------------------------------------------------------------------

def xent_fwd_loop(logits, targets):
    n, V = logits.shape
    total, lse = 0.0, [None] * n
    for i in range(n):
        m = -math.inf
        for v in range(V):
            m = max(m, logits[i, v])                       # V compares
        s = 0.0
        for v in range(V):
            s = s + exp(logits[i, v] - m)                  # 3·V
        lse[i] = m + log(s)                                # 2
        total = total + (lse[i] - logits[i, targets[i]])   # 2
    return values([total])[0] / n, lse                     # the mean's 1/N: once per call, free


def xent_bwd_loop(logits, targets, lse):
    n, V = logits.shape
    scale = 1.0 / n                                        # once per call, free
    d = np.empty(logits.shape, dtype=object)
    for i in range(n):
        for v in range(V):
            d[i, v] = exp(logits[i, v] - lse[i]) * scale   # 3·V
        d[i, targets[i]] = d[i, targets[i]] - scale        # 1
    return d


def test_cross_entropy():
    n, V = 4, 7
    logits, targets = rng.normal(size=(n, V)) * 3, rng.integers(0, V, n).astype(np.int64)
    (loss, cache), flops_f = recorded(cross_entropy_forward, logits, targets, "loss")
    dlogits, flops_b = recorded(cross_entropy_backward, 1.0, cache, "loss")
    (tloss, tlse), ops_f = count_loop(xent_fwd_loop, tallied(logits), targets)
    assert tloss == pytest.approx(loss, rel=1e-12)
    td, ops_b = count_loop(xent_bwd_loop, tallied(logits), targets, tallied(cache.lse))
    close(td, dlogits)
    (fv, fr), (bv, br) = cv.CROSS_ENTROPY_FWD, cv.CROSS_ENTROPY_BWD
    assert ops_f == flops_f == n * (fv * V + fr)
    assert ops_b == flops_b == n * (bv * V + br)


# ---- RoPE (and the plain split) ------------------------------------------------------------------------------

def rope_loop(qkv, pos, cos, sin, NH, KV, HS, inverse=False):
    """Rotate each (x_j, x_{j+HS/2}) pair of q and k by the position's angle (back by it for the gradient)."""
    B, T, _ = qkv.shape
    half = HS // 2
    out = np.empty((B, T, (NH + KV) * HS), dtype=object)
    for b in range(B):
        for t in range(T):
            p = int(pos[b, t])
            for h in range(NH + KV):
                base = h * HS
                for j in range(half):
                    x1, x2 = qkv[b, t, base + j], qkv[b, t, base + half + j]
                    c, s = cos[p, j], sin[p, j]
                    if inverse:
                        out[b, t, base + j], out[b, t, base + half + j] = x1 * c + x2 * s, x2 * c - x1 * s
                    else:
                        out[b, t, base + j], out[b, t, base + half + j] = x1 * c - x2 * s, x2 * c + x1 * s
    return out


@pytest.mark.parametrize("rope", [True, False])
def test_rope_and_split(rope):
    B, T, NH, KV, HS = 2, 3, 2, 1, 4
    pos = np.array([[0, 1, 2], [1, 2, 3]], dtype=np.int64)
    qkv = rng.normal(size=(B, T, (NH + 2 * KV) * HS))
    cos, sin = rope_tables(8, HS, 10000.0, np.float64) if rope else (None, None)
    k_dst, v_dst = np.zeros((B, KV, 4, HS)), np.zeros((B, KV, 4, HS))
    batch, table = ref.packed(pos), np.arange(B)[:, None]
    (q, cache), flops_f = recorded(split_forward, qkv.reshape(B * T, -1), batch, NH, cos, sin, k_dst, v_dst,
                                   table, "split")
    q = ref.by_sequence(q, batch, NH, HS, B, T)
    dq, dk, dv = rng.normal(size=q.shape), rng.normal(size=k_dst.shape), rng.normal(size=v_dst.shape)
    dqkv, flops_b = recorded(split_backward, ref.to_blocks(dq, batch), dk, dv, cache, "split")
    dqkv = dqkv.reshape(B, T, -1)
    if not rope:
        assert flops_f == flops_b == 0            # a copy: no arithmetic
        return
    t, ops_f = count_loop(rope_loop, tallied(qkv), pos, cos, sin, NH, KV, HS)
    tq = values(t)[:, :, :NH * HS].reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
    close(tq, q)
    # the gradient: gather dq, dk at each token's rows into (B, T, (NH + KV)·HS), rotate back
    g = np.concatenate([dq.transpose(0, 2, 1, 3).reshape(B, T, NH * HS),
                        np.stack([dk[b, :, pos[b]] for b in range(B)]).reshape(B, T, KV * HS)], axis=2)
    td, ops_b = count_loop(rope_loop, tallied(g), pos, cos, sin, NH, KV, HS, True)
    close(td, dqkv[:, :, :(NH + KV) * HS])
    assert ops_f == flops_f == cv.ROPE * B * T * (NH + KV) * HS
    assert ops_b == flops_b == cv.ROPE * B * T * (NH + KV) * HS


# ---- embedding -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("learned, scale", [(True, None), (False, 2.0), (False, None), (True, 2.0)])
def test_embedding(learned, scale):
    B, T, V, P = 2, 3, 5, 4
    tokens = rng.integers(0, V, (B, T)).astype(np.int64)
    pos = np.array([[0, 1, 2], [0, 1, 2]], dtype=np.int64)
    wte, wpe = rng.normal(size=(V, C)), rng.normal(size=(P, C))
    (x, cache), flops_f = recorded(embedding_forward, tokens.reshape(-1), pos.reshape(-1) if learned else None,
                                   wte, wpe if learned else None, scale, "embed")
    x = x.reshape(B, T, C)

    def fwd(wte, wpe):
        out = np.empty((B, T, C), dtype=object)
        for b in range(B):
            for t in range(T):
                for c in range(C):
                    e = wte[tokens[b, t], c]
                    e = e * scale if scale is not None else e            # Gemma's √C (here 2.0)
                    out[b, t, c] = e + wpe[pos[b, t], c] if learned else e
        return out

    t, ops_f = count_loop(fwd, tallied(wte), tallied(wpe))
    close(t, x)
    assert ops_f == flops_f == (int(learned) + (scale is not None)) * B * T * C

    dout = rng.normal(size=(B, T, C))
    dwte, dwpe = np.zeros((V, C)), np.zeros((P, C))
    _, flops_b = recorded(embedding_backward, dout.reshape(B * T, C), cache, dwte, dwpe if learned else None,
                          "embed", accumulate_wte=False)

    def bwd(dout):
        gte = [[0.0] * C for _ in range(V)]
        gpe = [[0.0] * C for _ in range(P)]
        for b in range(B):
            for t in range(T):
                for c in range(C):                                       # scatter-add into the selected rows
                    d = dout[b, t, c] * scale if scale is not None else dout[b, t, c]
                    gte[tokens[b, t]][c] = gte[tokens[b, t]][c] + d
                    if learned:
                        gpe[pos[b, t]][c] = gpe[pos[b, t]][c] + dout[b, t, c]
        return gte, gpe

    (gte, gpe), ops_b = count_loop(bwd, tallied(dout))
    close(gte, dwte)
    if learned:
        close(gpe, dwpe)
    assert ops_b == flops_b == (1 + int(learned) + (scale is not None)) * B * T * C


# ---- AdamW ---------------------------------------------------------------------------------------------------

def test_adamw():
    model = minitx.Transformer(TINY_GPT2, dtype="float64")   # AdamW sees only the flat vector: any config will do
    opt = minitx.AdamW(model, lr=0.1, weight_decay=0.01)
    P = model.flat.size
    g = rng.normal(size=P)
    m0, v0 = rng.normal(size=P), rng.random(P)
    opt.m[:], opt.v[:] = m0, v0
    opt.t = 2                                            # the step below is step 3: bias corrections ≠ 0
    p0 = model.flat.copy()
    _, flops = recorded(opt.step, g)

    lr, (b1, b2), eps, wd, t = opt.lr, opt.betas, opt.eps, opt.weight_decay, 3
    decay, bc1, bc2 = 1.0 - lr * wd, 1.0 - b1 ** t, 1.0 - b2 ** t   # once per call: free
    omb1, omb2 = 1.0 - b1, 1.0 - b2

    def loop(p, g, m, v):
        for i in range(P):
            p[i] = p[i] * decay                                       # 1
            m[i] = b1 * m[i] + omb1 * g[i]                            # 3
            v[i] = b2 * v[i] + omb2 * g[i] * g[i]                     # 4
            p[i] = p[i] - lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps)   # 7
        return p, m, v

    (tp, tm, tv), ops = count_loop(loop, tallied(p0), tallied(g), tallied(m0), tallied(v0))
    close(tp, model.flat)
    close(tm, opt.m)
    close(tv, opt.v)
    assert ops == flops == cv.ADAMW * P
