"""MLP non-linearities: GELU (tanh form, GPT-2's `gelu_new`), and the gated SwiGLU (Llama) and GeGLU (Gemma).

GELU   y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
SwiGLU y = silu(gate)·up,  silu(g) = g / (1 + e^(−g))
GeGLU  y = gelu(gate)·up

The kernels use the identity 0.5·(1 + tanh(z)) = 1 / (1 + e^(−2z)) = σ(2z): the same function, but one exp is
several times cheaper than a libm tanh, and there is no cancellation near z = 0. So gelu(x) = x·σ(2z) and
gelu'(x) = σ + 2k·x·σ(1 − σ)(1 + 3c·x²), with z = k(x + c·x³).

The gated forms take one (N, 2F) array laid out [gate | up] (one matmul produced both) and return (N, F).
Saves for backward: the input (recomputing tanh/exp is cheaper than storing its result).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .. import conventions as cv
from ..counting import counting, nbytes, record

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


class ActCache(NamedTuple):
    u: np.ndarray   # (N, F) or (N, 2F) the input
    kind: str       # "gelu_tanh", "swiglu", "geglu"


@njit(cache=True, inline="always")
def _gelu_sigma(x):
    """σ(2z) = 0.5·(1 + tanh z), z = k(x + c·x³): 4 + 4 FLOPs."""
    u = x * x * x * GELU_C + x
    return 1.0 / (1.0 + np.exp(u * (-2.0 * GELU_K)))


@njit(cache=True, inline="always")
def _gelu_and_grad(x):
    s = _gelu_sigma(x)
    grad = s + (2.0 * GELU_K) * (x * s) * (1.0 - s) * (1.0 + (3.0 * GELU_C) * (x * x))
    return x * s, grad


@njit(cache=True)
def _gelu_fwd(u, out):
    flat_u, flat_o = u.reshape(-1), out.reshape(-1)
    for i in range(flat_u.size):
        x = flat_u[i]
        flat_o[i] = x * _gelu_sigma(x)


@njit(cache=True)
def _gelu_bwd(dout, u, du):
    flat_d, flat_u, flat_g = dout.reshape(-1), u.reshape(-1), du.reshape(-1)
    for i in range(flat_u.size):
        _, grad = _gelu_and_grad(flat_u[i])
        flat_g[i] = flat_d[i] * grad


@njit(cache=True)
def _gated_fwd(u, out, use_gelu):
    N, F = out.shape
    for i in range(N):
        for j in range(F):
            g, up = u[i, j], u[i, F + j]
            if use_gelu:
                a = g * _gelu_sigma(g)
            else:
                a = g / (1.0 + np.exp(-g))
            out[i, j] = a * up


@njit(cache=True)
def _gated_bwd(dout, u, du, use_gelu):
    # Forward: y = act(g)·up. So dup = dy·act(g) and dg = dy·up·act'(g).
    N, F = dout.shape
    for i in range(N):
        for j in range(F):
            g, up, dy = u[i, j], u[i, F + j], dout[i, j]
            if use_gelu:
                a, da = _gelu_and_grad(g)
            else:
                sig = 1.0 / (1.0 + np.exp(-g))
                a = g * sig
                da = sig * (1.0 + g * (1.0 - sig))
            du[i, F + j] = dy * a
            du[i, j] = dy * up * da


def activation_forward(u: np.ndarray, kind: str, name: str) -> tuple[np.ndarray, ActCache]:
    """gelu_tanh: (N, F) -> (N, F); swiglu/geglu: (N, 2F) [gate | up] -> (N, F)."""
    if kind == "gelu_tanh":
        out = np.empty_like(u)
        _gelu_fwd(u, out)
        flops = cv.GELU_FWD * out.size
    else:
        N, F2 = u.shape
        out = np.empty((N, F2 // 2), dtype=u.dtype)
        _gated_fwd(u, out, kind == "geglu")
        flops = (cv.GEGLU_FWD if kind == "geglu" else cv.SWIGLU_FWD) * out.size
    if counting():
        record(name, "activation", flops, reads=(("activations", nbytes(u)),), writes=(("activations", nbytes(out)),))
    return out, ActCache(u, kind)


def activation_backward(dout: np.ndarray, cache: ActCache, name: str) -> np.ndarray:
    """dout (N, F) -> du, shaped like the forward's input."""
    u = cache.u
    du = np.empty_like(u)
    if cache.kind == "gelu_tanh":
        _gelu_bwd(dout, u, du)
        flops = cv.GELU_BWD * dout.size
    else:
        _gated_bwd(dout, u, du, cache.kind == "geglu")
        flops = (cv.GEGLU_BWD if cache.kind == "geglu" else cv.SWIGLU_BWD) * dout.size
    if counting():
        record(name, "activation", flops, reads=(("activations", nbytes(dout, u)),),
               writes=(("activations", nbytes(du)),))
    return du
