"""Embedding: token ids -> vectors, plus learned positions (GPT-2) or a √C scale (Gemma).

x[i] = wte[tokens[i]] (+ wpe[pos[i]]) (· √C for Gemma)        one row per token of the batch

A gather, not a matmul: it reads only the N rows it selects, and costs no multiply-adds (Chinchilla counts it
as a 2·V·C matmul per token; nobody else does, and no code runs one). Its backward scatter-adds the output
gradient into the selected rows of the (already zeroed or partly written) gradient tables.
Ids and positions are validated by the caller before this runs: the kernels index without checks.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ...accounting import conventions as cv
from ...accounting.counting import counting, nbytes, record


class EmbedCache(NamedTuple):
    tokens: np.ndarray        # (N,) int64
    pos: np.ndarray | None    # (N,) int64, learned positions only
    scale: float | None


@njit(cache=True, error_model="numpy")
def _embed_fwd(tokens, pos, wte, wpe, scale, out):
    # One row per token: copy its wte row (a gather, no arithmetic), then add its position's wpe row and/or
    # scale by √C where the model asks for it: one FLOP per element for each.
    N = tokens.shape[0]
    C = wte.shape[1]
    use_pos = wpe.shape[0] > 0
    for i in range(N):
        row = wte[tokens[i]]
        if use_pos:
            prow = wpe[pos[i]]
            if scale != 1.0:
                for c in range(C):
                    out[i, c] = row[c] * scale + prow[c]
            else:
                for c in range(C):
                    out[i, c] = row[c] + prow[c]
        elif scale != 1.0:
            for c in range(C):
                out[i, c] = row[c] * scale
        else:
            out[i, :] = row


@njit(cache=True, error_model="numpy")
def _embed_bwd(dout, tokens, pos, dwte, dwpe, scale):
    # The forward copied row tokens[i] of wte into row i: so row i's gradient is added back into that row.
    # A token that appears twice receives both gradients (+=), which is why this is a scatter-add, not a copy.
    N, C = dout.shape
    use_pos = dwpe.shape[0] > 0
    for i in range(N):
        drow = dwte[tokens[i]]
        for c in range(C):
            drow[c] += dout[i, c] * scale if scale != 1.0 else dout[i, c]
        if use_pos:
            prow = dwpe[pos[i]]
            for c in range(C):
                prow[c] += dout[i, c]


def embedding_forward(tokens: np.ndarray, pos: np.ndarray | None, wte: np.ndarray, wpe: np.ndarray | None,
                      scale: float | None, name: str) -> tuple[np.ndarray, EmbedCache]:
    """tokens (N,), pos (N,) -> x (N, C). Pass pos/wpe only for learned positions, scale only for Gemma."""
    N = tokens.shape[0]
    C = wte.shape[1]
    out = np.empty((N, C), dtype=wte.dtype)
    empty = np.empty((0, C), dtype=wte.dtype)
    _embed_fwd(tokens, pos if pos is not None else tokens, wte, wpe if wpe is not None else empty,
               1.0 if scale is None else scale, out)
    if counting():
        rows = N * C * wte.itemsize                            # one row of C per selected token
        ids = nbytes(tokens) + (nbytes(pos) if wpe is not None else 0)
        extra = (wpe is not None) + (scale is not None)        # learned-position add, Gemma scale
        record(name, "embedding", cv.ELEMENTWISE * extra * out.size,
               reads=(("activations", ids), ("weights", rows * (1 + (wpe is not None)))),
               writes=(("activations", nbytes(out)),))
    return out, EmbedCache(tokens, pos if wpe is not None else None, scale)


def embedding_backward(dout: np.ndarray, cache: EmbedCache, dwte: np.ndarray, dwpe: np.ndarray | None,
                       name: str, accumulate_wte: bool) -> None:
    """dout (N, C): scatter-adds into dwte (and dwpe). Rows hit twice (a repeated token) accumulate.

    The tables are zeroed first, except dwte when `accumulate_wte` (tied embeddings: the LM head's backward has
    already written its share there, and the lookup's share adds to it)."""
    N, C = dout.shape
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
        rows = N * C * dout.itemsize                           # the rows added into, in each table
        zeroed = (0 if accumulate_wte else nbytes(dwte)) + (nbytes(dwpe) if has_pos else 0)
        ids = nbytes(cache.tokens) + (nbytes(cache.pos) if has_pos else 0)
        record(name, "embedding", cv.ELEMENTWISE * dout.size * (tables + (cache.scale is not None)),
               reads=(("activations", nbytes(dout) + ids), ("gradients", rows * tables)),
               writes=(("gradients", rows * tables + zeroed),))
