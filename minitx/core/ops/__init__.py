"""The ops of a transformer, each an `<op>_forward` / `<op>_backward` pair that records its own cost.

Dimension legend (used in every shape comment in minitx):
    B   batch (sequences)     T   sequence length (queries)     S   keys a query block attends over
    C   d_model               V   vocabulary                    L   layers
    NH  query heads           KV  key/value heads               HS  head size
    G   NH // KV (query heads per key/value head)               F   MLP hidden size
    N   tokens in the call, packed one row each (minitx.core.batch): B·T for a training batch, any mix of
        prompt chunks and single decode tokens when serving. Every op but attention treats the N rows alike.
    b, n, p  one attention Block: b sequences of n tokens each, at positions p..p+n-1. The per-block ops
        (scores, softmax, mix, merge) take one block at a time, so inside them B = b, T = n and S = p + n.
    R, X  a KV store's pools are (R, KV, X, HS): R rows of X positions each (a contiguous cache has one row
        per sequence slot, X = its max_len)
    n_ctx  rows of the RoPE tables (one per position; P stays the parameter count, as in minitx.formulas)

Contract (after llm.c's doc/layernorm): `<op>_forward(..., name) -> (out, cache)` where the cache holds exactly
what the backward needs, and `<op>_backward(dout, cache, ...) -> gradients`. Ops with nothing to keep (the
residual add, merging heads) return just `out`, and their backward takes what it needs in place of a
cache (merge: the block; residual: nothing). Weight gradients are written into the views of the flat gradient
buffer that the caller passes in. Every call reports its cost to `minitx.counting.record` under `name`, computed
from the shapes and dtypes it received, per `minitx.conventions`.
"""
