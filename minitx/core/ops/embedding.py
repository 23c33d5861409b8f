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
from ..shaped import empty, is_shaped
from .half import call_f32, is_half, widen


class EmbedCache(NamedTuple):
    # Only the indices: the output is a sum of table rows, so its gradient says nothing about the tables' values,
    # only where to add (see _embed_bwd).
    tokens: np.ndarray        # (N,) int64
    pos: np.ndarray | None    # (N,) int64, learned positions only
    scale: float | None


@njit(cache=True, error_model="numpy")
def _embed_fwd(tokens, pos, wte, wpe, scale, out):
    # tokens (N,), pos (N,) (a stand-in, never read, without learned positions), wte (V, C), wpe (P, C) or
    # (0, C), scale a float (1.0: none), out (N, C).
    # One row per token: copy its wte row (a gather, no arithmetic), then add its position's wpe row and/or
    # scale by √C where the model asks for it: one FLOP per element for each.
    # Which of the four forms applies is decided once per row, outside the c loop, so each inner loop is a
    # straight line of one or two operations per element.
    N = tokens.shape[0]
    C = wte.shape[1]
    use_pos = wpe.shape[0] > 0
    for i in range(N):
        row = wte[tokens[i]]                # a view of the token's row: only N of the V rows are ever read
        if use_pos:
            prow = wpe[pos[i]]              # the token's own position, so packed sequences each start at theirs
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
            out[i, :] = row                 # the plain lookup: a copy of C values


@njit(cache=True, error_model="numpy")
def _embed_bwd(dout, tokens, pos, dwte, dwpe, scale):
    # dout (N, C), tokens (N,), pos (N,) (a stand-in without learned positions), dwte (V, C), dwpe (P, C) or
    # (0, C), scale a float (1.0: none).
    # The forward copied row tokens[i] of wte into row i: so row i's gradient is added back into that row.
    # A token that appears twice receives both gradients (+=), which is why this is a scatter-add, not a copy.
    # In the forward pass this was:  out[i, c] = wte[tokens[i], c] · scale + wpe[pos[i], c]
    # so now we have:                dwte[v, c] = scale · Σ_{i: tokens[i] = v} dout[i, c]
    #                                dwpe[p, c] = Σ_{i: pos[i] = p} dout[i, c]
    # The gradient of a gather is a scatter-add: the sum runs over every row that read the entry. wpe rows
    # repeat in every sequence (each sequence has a position 0), so they always accumulate; rows of tokens that
    # never appear are not touched. The loop runs in row order, one thread, so the sums are deterministic.
    N, C = dout.shape
    use_pos = dwpe.shape[0] > 0
    for i in range(N):
        drow = dwte[tokens[i]]              # a view: += lands in the table
        for c in range(C):
            # (the scale test sits inside the c loop here, unlike the forward; it is the same for every c)
            drow[c] += dout[i, c] * scale if scale != 1.0 else dout[i, c]
        if use_pos:
            prow = dwpe[pos[i]]             # the position add passed the gradient through unscaled
            for c in range(C):
                prow[c] += dout[i, c]


def embedding_forward(tokens: np.ndarray, pos: np.ndarray | None, wte: np.ndarray, wpe: np.ndarray | None,
                      scale: float | None, name: str) -> tuple[np.ndarray, EmbedCache]:
    """tokens (N,), pos (N,) -> x (N, C). Pass pos/wpe only for learned positions, scale only for Gemma."""
    N = tokens.shape[0]
    C = wte.shape[1]
    out = empty((N, C), wte.dtype, like=wte)
    # Numba compiles one signature per argument types and None is a type of its own: "no table" is an empty
    # (0, C) array, "no positions" the tokens again (never read), "no scale" 1.0.
    if not is_shaped(wte) and is_half(wte):
        # 16-bit tables: gather the N rows first (only they are read), then the float32 kernel runs over them
        # in order (ids 0..N-1) and its output is rounded to 16 bits (minitx.core.ops.half)
        rows = np.arange(N, dtype=np.int64)
        table_pos = widen(wpe[pos]) if wpe is not None else np.empty((0, C), dtype=np.float32)
        call_f32(_embed_fwd, rows, rows, widen(wte[tokens]), table_pos, 1.0 if scale is None else scale, out,
                 outputs=(5,))
    elif not is_shaped(wte):
        none = np.empty((0, C), dtype=wte.dtype)
        _embed_fwd(tokens, pos if pos is not None else tokens, wte, wpe if wpe is not None else none,
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
    has_pos = cache.pos is not None
    # A scatter-add needs a zeroed start: the kernel only ever adds, and only into the rows the batch used.
    # Zeroing writes the whole (V, C) table, typically far more bytes than the N rows the scatter touches.
    if not is_shaped(dout, dwte):
        if not accumulate_wte:
            dwte[...] = 0.0
        if has_pos:
            dwpe[...] = 0.0
        none = np.empty((0, C), dtype=dout.dtype)
        _embed_bwd(dout, cache.tokens, cache.pos if has_pos else cache.tokens, dwte,
                   dwpe if has_pos else none, 1.0 if cache.scale is None else cache.scale)
    if counting():
        tables = 1 + has_pos
        rows = N * C * dout.itemsize                           # the rows added into, in each table
        zeroed = (0 if accumulate_wte else nbytes(dwte)) + (nbytes(dwpe) if has_pos else 0)
        ids = nbytes(cache.tokens) + (nbytes(cache.pos) if has_pos else 0)
        record(name, "embedding", cv.ELEMENTWISE * dout.size * (tables + (cache.scale is not None)),
               reads=(("activations", nbytes(dout) + ids), ("gradients", rows * tables)),
               writes=(("gradients", rows * tables + zeroed),))
