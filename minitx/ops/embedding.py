"""Embedding: token ids -> vectors, plus learned positions (GPT-2) or a √C scale (Gemma).

x[b, t] = wte[tokens[b, t]] (+ wpe[pos[b, t]]) (· √C for Gemma)

A gather, not a matmul: it reads only the B·T rows it selects, and costs no multiply-adds (Chinchilla counts it
as a 2·V·C matmul per token; nobody else does, and no code runs one). Its backward scatter-adds the output
gradient into the selected rows of the (already zeroed or partly written) gradient tables.
Ids and positions are validated by the caller before this runs: the kernels index without checks.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .. import conventions as cv
from ..counting import counting, nbytes, record


class EmbedCache(NamedTuple):
    tokens: np.ndarray        # (B, T) int64
    pos: np.ndarray | None    # (B, T) int64, learned positions only
    scale: float | None


@njit(cache=True, error_model="numpy")
def _embed_fwd(tokens, pos, wte, wpe, scale, out):
    B, T = tokens.shape
    C = wte.shape[1]
    use_pos = wpe.shape[0] > 0
    for b in range(B):
        for t in range(T):
            row = wte[tokens[b, t]]
            if use_pos:
                prow = wpe[pos[b, t]]
                if scale != 1.0:
                    for c in range(C):
                        out[b, t, c] = row[c] * scale + prow[c]
                else:
                    for c in range(C):
                        out[b, t, c] = row[c] + prow[c]
            elif scale != 1.0:
                for c in range(C):
                    out[b, t, c] = row[c] * scale
            else:
                out[b, t, :] = row


@njit(cache=True, error_model="numpy")
def _embed_bwd(dout, tokens, pos, dwte, dwpe, scale):
    B, T, C = dout.shape
    use_pos = dwpe.shape[0] > 0
    for b in range(B):
        for t in range(T):
            drow = dwte[tokens[b, t]]
            for c in range(C):
                drow[c] += dout[b, t, c] * scale if scale != 1.0 else dout[b, t, c]
            if use_pos:
                prow = dwpe[pos[b, t]]
                for c in range(C):
                    prow[c] += dout[b, t, c]


def embedding_forward(tokens: np.ndarray, pos: np.ndarray | None, wte: np.ndarray, wpe: np.ndarray | None,
                      scale: float | None, name: str) -> tuple[np.ndarray, EmbedCache]:
    """tokens (B, T), pos (B, T) -> x (B, T, C). Pass pos/wpe only for learned positions, scale only for Gemma."""
    B, T = tokens.shape
    C = wte.shape[1]
    out = np.empty((B, T, C), dtype=wte.dtype)
    empty = np.empty((0, C), dtype=wte.dtype)
    _embed_fwd(tokens, pos if pos is not None else tokens, wte, wpe if wpe is not None else empty,
               1.0 if scale is None else scale, out)
    if counting():
        rows = B * T * C * wte.itemsize                        # one row of C per selected token
        ids = nbytes(tokens) + (nbytes(pos) if wpe is not None else 0)
        extra = (wpe is not None) + (scale is not None)        # learned-position add, Gemma scale
        record(name, "embedding", cv.ELEMENTWISE * extra * out.size,
               reads=(("activations", ids), ("weights", rows * (1 + (wpe is not None)))),
               writes=(("activations", nbytes(out)),))
    return out, EmbedCache(tokens, pos if wpe is not None else None, scale)


def embedding_backward(dout: np.ndarray, cache: EmbedCache, dwte: np.ndarray, dwpe: np.ndarray | None,
                       name: str, accumulate_wte: bool) -> None:
    """dout (B, T, C): scatter-adds into dwte (and dwpe). Rows hit twice (a repeated token) accumulate.

    The tables are zeroed first, except dwte when `accumulate_wte` (tied embeddings: the LM head's backward has
    already written its share there, and the lookup's share adds to it)."""
    B, T, C = dout.shape
    empty = np.empty((0, C), dtype=dout.dtype)
    has_pos = cache.pos is not None
    if not accumulate_wte:
        dwte[...] = 0.0
    if has_pos:
        dwpe[...] = 0.0
    _embed_bwd(dout, cache.tokens, cache.pos if has_pos else cache.tokens, dwte,
               dwpe if has_pos else empty, 1.0 if cache.scale is None else cache.scale)
    if counting():
        tables = 1 + has_pos
        rows = B * T * C * dout.itemsize                       # the rows added into, in each table
        zeroed = (0 if accumulate_wte else nbytes(dwte)) + (nbytes(dwpe) if has_pos else 0)
        ids = nbytes(cache.tokens) + (nbytes(cache.pos) if has_pos else 0)
        record(name, "embedding", cv.ELEMENTWISE * dout.size * (tables + (cache.scale is not None)),
               reads=(("activations", nbytes(dout) + ids), ("gradients", rows * tables)),
               writes=(("gradients", rows * tables + zeroed),))
