"""The ops of a transformer, each an `<op>_forward` / `<op>_backward` pair that records its own cost.

Dimension legend (used in every shape comment in minitx):
    B   batch                 T   sequence length (queries)     S   KV-cache length (keys available)
    C   d_model               V   vocabulary                    L   layers
    NH  query heads           KV  key/value heads               HS  head size
    G   NH // KV (query heads per key/value head)               F   MLP hidden size
    N   rows = B·T when an op does not care about the split

Contract (after llm.c's doc/layernorm): `<op>_forward(..., name) -> (out, cache)` where the cache holds exactly
what the backward needs, and `<op>_backward(dout, cache, ...) -> gradients`. Weight gradients are written into
the views of the flat gradient buffer that the caller passes in. Every call reports its cost to
`minitx.counting.record` under `name`, computed from the shapes and dtypes it received, per
`minitx.conventions`.
"""
