"""MLP non-linearities: GELU (tanh form, GPT-2's `gelu_new`), and the gated SwiGLU (Llama) and GeGLU (Gemma).

GELU   y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
SwiGLU y = silu(gate)·up,  silu(g) = g / (1 + e^(−g))
GeGLU  y = gelu(gate)·up

The gated forms take one (N, 2F) array laid out [gate | up] (one matmul produced both) and return (N, F).
Saves for backward: the input (recomputing tanh/exp is cheaper than storing its result).

Speed: these loops touch every element of the MLP's widest activation, forward and backward, so they are a
large share of a training step. They run in the model's dtype (float32 arithmetic for a float32 model; Python's
float constants would silently promote every step to float64), and a float32 model
evaluates tanh with a rational approximation (Eigen's, accurate to a few float32 ulps) that the compiler can
vectorise, where a call into libm's tanh cannot be. float64 models (gradient checks) use the exact np.tanh.
By the convention, a tanh is 1 FLOP however it is evaluated.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record
from ..shaped import empty, is_shaped
from .half import call_f32

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


class ActCache(NamedTuple):
    # Only the input: the derivative is a function of it alone, and recomputing tanh or exp (a few FLOPs per
    # element) is cheaper than writing and re-reading another (N, F) array.
    u: np.ndarray   # (N, F) or (N, 2F) the input
    kind: str       # "gelu_tanh", "swiglu", "geglu"


@njit(cache=True, error_model="numpy", inline="always")
def _tanh(z, approx):
    """tanh(z): exact (libm) or, for float32, Eigen's 13/6 rational approximation on the clamped input."""
    # z: one scalar of the model's dtype; approx: True for float32 models.
    if not approx:
        return np.tanh(z)
    # f casts every constant to z's own type: a bare Python float is float64 and would promote the whole
    # expression (and the loop that inlines it) to float64.
    f = type(z)
    # Past |z| ≈ 7.9, tanh(z) rounds to ±1 in float32; clamping there keeps the rational form, which is only
    # fitted on that interval, from drifting away from ±1 for large inputs.
    z = min(max(z, f(-7.90531110763549805)), f(7.90531110763549805))
    # tanh is odd, so it is z times a ratio of even functions: polynomials in z², each evaluated by Horner's
    # rule (one multiply and one add per coefficient), then a single division.
    z2 = z * z
    p = z2 * f(-2.76076847742355e-16) + f(2.00018790482477e-13)
    p = p * z2 + f(-8.60467152213735e-11)
    p = p * z2 + f(5.12229709037114e-08)
    p = p * z2 + f(1.48572235717979e-05)
    p = p * z2 + f(6.37261928875436e-04)
    p = p * z2 + f(4.89352455891786e-03)
    q = z2 * f(1.19825839466702e-06) + f(1.18534705686654e-04)
    q = q * z2 + f(2.26843463243900e-03)
    q = q * z2 + f(4.89352518554385e-03)
    return z * p / q


@njit(cache=True, error_model="numpy", inline="always")
def _gelu(x, approx):
    """gelu(x) and gelu'(x). With t = tanh(k(x + c·x³)): gelu = 0.5·x·(1 + t) and
    gelu' = 0.5·(1 + t) + 0.5·k·x·(1 − t²)·(1 + 3c·x²)."""
    # Derivation: y = 0.5·x·(1 + t), so by the product rule y' = 0.5·(1 + t) + 0.5·x·t', and with
    # t = tanh(u), u = k(x + c·x³): t' = (1 − t²)·u' = (1 − t²)·k·(1 + 3c·x²), as tanh' = 1 − tanh².
    # Both come from one tanh: 0.5·(1 + t) is shared by the value and the derivative.
    f = type(x)
    t = _tanh(f(GELU_K) * (x * x * x * f(GELU_C) + x), approx)
    half_1pt = f(0.5) * (f(1.0) + t)
    sech2 = f(1.0) - t * t                  # 1 − tanh² = sech²: tanh's derivative, from t with no second tanh
    grad = half_1pt + x * f(0.5 * GELU_K) * sech2 * (f(1.0) + f(3.0 * GELU_C) * (x * x))
    return x * half_1pt, grad


@njit(cache=True, error_model="numpy", inline="always")
def _silu(g):
    """silu(g) = g·σ(g) and silu'(g) = σ(1 + g(1 − σ))."""
    # Derivation: σ' = σ(1 − σ), so (g·σ)' = σ + g·σ(1 − σ) = σ(1 + g(1 − σ)): one exp serves both.
    # For g → −∞, exp(−g) overflows to inf and σ = 1/inf = 0: the right limit, no NaN (error_model="numpy").
    f = type(g)
    sig = f(1.0) / (f(1.0) + np.exp(-g))
    return g * sig, sig * (f(1.0) + g * (f(1.0) - sig))


@njit(cache=True, error_model="numpy")
def _gelu_fwd(u, out, approx):
    # u (N, F) the up projection's output, out (N, F).
    # One pass, element by element: gelu has no reduction, so every element is independent. The value path of
    # _gelu is written out here rather than called, so the forward does not also compute the derivative it
    # would then throw away. k·(x·x·x·c + x) is k(x + c·x³) in 5 FLOPs (three multiplies, an add, the k), then
    # the tanh, then 0.5·x·(1 + t) in 3 more: the 9 the convention counts.
    N, F = u.shape
    for i in range(N):
        for j in range(F):
            x = u[i, j]
            t = _tanh(type(x)(GELU_K) * (x * x * x * type(x)(GELU_C) + x), approx)
            out[i, j] = type(x)(0.5) * x * (type(x)(1.0) + t)


@njit(cache=True, error_model="numpy")
def _gelu_bwd(dout, u, du, approx):
    # dout (N, F), u (N, F) the forward's input, du (N, F) out.
    # in the forward pass this was:  out = 0.5·x·(1 + tanh(k(x + c·x³)))
    # so now we have:                du = dout · gelu'(x)     (gelu' derived in _gelu)
    # An elementwise op has a diagonal Jacobian: each du needs only its own x and dout. tanh is recomputed from
    # the saved input (the value half of _gelu is discarded; the compiler drops what is unused).
    N, F = u.shape
    for i in range(N):
        for j in range(F):
            _, grad = _gelu(u[i, j], approx)
            du[i, j] = dout[i, j] * grad


@njit(cache=True, error_model="numpy")
def _gated_fwd(u, out, use_gelu, approx):
    # u (N, 2F) laid out [gate | up], out (N, F).
    # One matmul of width 2F made both halves (a bigger, more efficient BLAS call than two of width F); the
    # gate of hidden unit j is column j, its partner `up` column F + j.
    N, F = out.shape
    for i in range(N):
        for j in range(F):
            g, up = u[i, j], u[i, F + j]
            # act(g): GELU as in _gelu_fwd (GeGLU), or silu(g) = g·σ(g) written as g / (1 + e^(−g)) (SwiGLU).
            # Then the activated gate scales `up` elementwise: the gate decides how much of each unit passes.
            if use_gelu:
                t = _tanh(type(g)(GELU_K) * (g * g * g * type(g)(GELU_C) + g), approx)
                a = type(g)(0.5) * g * (type(g)(1.0) + t)
            else:
                a = g / (type(g)(1.0) + np.exp(-g))
            out[i, j] = a * up


@njit(cache=True, error_model="numpy")
def _gated_bwd(dout, u, du, use_gelu, approx):
    # dout (N, F), u (N, 2F) the forward's input [gate | up], du (N, 2F) out, laid out like u.
    # Forward: y = act(g)·up. So dup = dy·act(g) and dg = dy·up·act'(g).
    # (The product rule: y is a product of two inputs, so each one's gradient is dy times the other factor.)
    # Both halves of du are written at once, from one recomputation of act(g) and act'(g).
    N, F = dout.shape
    for i in range(N):
        for j in range(F):
            g, up, dy = u[i, j], u[i, F + j], dout[i, j]
            a, da = _gelu(g, approx) if use_gelu else _silu(g)
            du[i, F + j] = dy * a
            du[i, j] = dy * up * da


def activation_forward(u: np.ndarray, kind: str, name: str) -> tuple[np.ndarray, ActCache]:
    """gelu_tanh: (N, F) -> (N, F); swiglu/geglu: (N, 2F) [gate | up] -> (N, F)."""
    # The fast tanh only for float32 arithmetic (16-bit models compute in float32: minitx.core.ops.half):
    # float64 runs (gradient checks) need libm's full precision.
    approx = u.dtype != np.float64
    out = empty((u.shape[0], u.shape[1] if kind == "gelu_tanh" else u.shape[1] // 2), u.dtype, like=u)
    if is_shaped(u):
        pass                              # by shape: nothing to compute, the cost is recorded below
    elif kind == "gelu_tanh":
        call_f32(_gelu_fwd, u, out, approx, outputs=(1,))
    else:
        call_f32(_gated_fwd, u, out, kind == "geglu", approx, outputs=(1,))
    if counting():
        record(name, "activation", _FWD_FLOPS[kind] * out.size, reads=(("activations", nbytes(u)),),
               writes=(("activations", nbytes(out)),))
    return out, ActCache(u, kind)


def activation_backward(dout: np.ndarray, cache: ActCache, name: str) -> np.ndarray:
    """dout (N, F) -> du, shaped like the forward's input."""
    u = cache.u
    du = empty(u.shape, u.dtype, like=u)   # every entry written by the kernel
    approx = u.dtype == np.float32      # the same tanh as the forward, so the derivative matches its function
    if is_shaped(u, dout):
        pass
    elif cache.kind == "gelu_tanh":
        _gelu_bwd(dout, u, du, approx)
    else:
        _gated_bwd(dout, u, du, cache.kind == "geglu", approx)
    if counting():
        record(name, "activation", _BWD_FLOPS[cache.kind] * dout.size, reads=(("activations", nbytes(dout, u)),),
               writes=(("activations", nbytes(du)),))
    return du


# FLOPs per element of the (N, F) output, by kind (minitx.conventions)
_FWD_FLOPS = {"gelu_tanh": cv.GELU_FWD, "geglu": cv.GEGLU_FWD, "swiglu": cv.SWIGLU_FWD}
_BWD_FLOPS = {"gelu_tanh": cv.GELU_BWD, "geglu": cv.GEGLU_BWD, "swiglu": cv.SWIGLU_BWD}
