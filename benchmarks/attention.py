"""One layer's attention, fused (minitx.core.ops.fused_attention) against unfused (minitx.core.ops.attention).

    python benchmarks/attention.py                    # prefill at T = 256, 1024, 4096 and a decode step
    python benchmarks/attention.py --T 256 1024 --decode-context 8192 --decode-batch 8

Both paths start from the same qkv (N, (NH+2KV)·HS) and the same store, and both run split_forward first (it
writes the new keys and values into the store and lays out q); then
    unfused  per block: scores q kᵀ (BLAS, full rectangle), causal softmax (Numba), mix p v (BLAS), merge heads
    fused    one Numba kernel: online softmax over tiles of keys, no score matrix, output heads side by side
Shapes: NH=8 query heads, KV=2 key/value heads, HS=64, float32, random values, one attention layer. Prefill: B=1
prompt of T tokens at p=0 (one block, causal). Decode: B sequences, one new token each at position
`--decode-context` (one block, n=1), reading that many cached keys each.

Times are the best of a few calls after a warm-up (Numba compiles on the first). Bytes are what the ops record
under minitx.count() (minitx.conventions): the unfused path's include the (NH, T, S) scores and probabilities
written and read back; the fused op reads q, the positions and each key and value once, and writes the output.
The split's cost is the same for both and is left out of the bytes (included in the times).

One thread: the thread variables are set before NumPy loads (and threadpoolctl, when installed, and Numba pin
them again: benchmarks/threads.py). This is a script, not a test: it prints a table and exits 0. About 20-40 s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from threads import THREAD_ENV, limit_threads  # noqa: E402

for _var in THREAD_ENV:                 # before NumPy loads its BLAS: one thread unless told otherwise
    os.environ.setdefault(_var, "1")

sys.path.insert(0, os.path.dirname(HERE))
import numpy as np  # noqa: E402

import minitx  # noqa: E402
from minitx.core.batch import Block, TokenBatch, rectangle  # noqa: E402
from minitx.core.ops.attention import (block_queries, merge_forward, mix_forward, scores_forward,  # noqa: E402
                                       softmax_forward, split_forward)
from minitx.core.ops.fused_attention import fused_attention_forward  # noqa: E402

NH, KV, HS = 8, 2, 64
DTYPE = np.float32
SCALE = 1.0 / np.sqrt(HS)


def unfused(qkv, batch, k_pool, v_pool, table):
    """split, then per block scores, softmax, mix, merge: the model's path (Transformer._block_forward)."""
    q, _ = split_forward(qkv, batch, NH, None, None, k_pool, v_pool, table, "attn.split", "kv_cache")
    heads = np.empty((batch.n_tokens, NH * HS), dtype=qkv.dtype) if len(batch.blocks) > 1 else None
    h = None
    for blk in batch.blocks:
        rows = slice(blk.slot, blk.slot + blk.b)
        k, v = k_pool[rows, :, :blk.keys], v_pool[rows, :, :blk.keys]
        s, _ = scores_forward(block_queries(q, blk, NH, HS), k, "attn.scores", "kv_cache")
        p, _ = softmax_forward(s, batch.block_pos(blk), SCALE, "attn.softmax")
        del s
        o, _ = mix_forward(p, v, "attn.mix", "kv_cache")
        del p
        h = merge_forward(o, "attn.merge", None if heads is None else heads[blk.rows])
    return h if heads is None else heads


def fused(qkv, batch, k_pool, v_pool, table):
    q, _ = split_forward(qkv, batch, NH, None, None, k_pool, v_pool, table, "attn.split", "kv_cache")
    return fused_attention_forward(q, k_pool, v_pool, table, batch, NH, SCALE, None, "attn.fused", "kv_cache")


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def attention_bytes_read(fn) -> int:
    """Bytes read by the attention ops of one call, split left out (the same for both paths)."""
    with minitx.count() as c:
        fn()
    return sum(r.bytes_read for r in c.records if not r.name.endswith("split"))


def case(label: str, batch: TokenBatch, context: int, repeats: int, rng) -> dict:
    B = batch.n_slots
    X = context + batch.blocks[0].n
    # the store: B slots of X positions, earlier positions holding "cached" keys and values
    k_pool = rng.standard_normal((B, KV, X, HS), dtype=np.float32).astype(DTYPE)
    v_pool = rng.standard_normal((B, KV, X, HS), dtype=np.float32).astype(DTYPE)
    table = np.arange(B, dtype=np.int64)[:, None]
    qkv = rng.standard_normal((batch.n_tokens, (NH + 2 * KV) * HS), dtype=np.float32).astype(DTYPE)
    run_u = lambda: unfused(qkv, batch, k_pool, v_pool, table)      # noqa: E731
    run_f = lambda: fused(qkv, batch, k_pool, v_pool, table)        # noqa: E731
    out_u, out_f = run_u(), run_f()                                  # warm-up (Numba compiles), and agreement
    err = float(np.abs(out_u.astype(np.float64) - out_f).max())
    t_u, t_f = best_time(run_u, repeats), best_time(run_f, repeats)
    b_u, b_f = attention_bytes_read(run_u), attention_bytes_read(run_f)
    return dict(label=label, t_u=t_u, t_f=t_f, b_u=b_u, b_f=b_f, err=err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096], help="prefill lengths (B=1)")
    ap.add_argument("--decode-context", type=int, default=8192, help="cached keys per sequence at the decode step")
    ap.add_argument("--decode-batch", type=int, default=4, help="sequences in the decode step")
    args = ap.parse_args()
    how = limit_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
    rng = np.random.default_rng(0)
    print(f"one attention layer: NH={NH} KV={KV} HS={HS} {np.dtype(DTYPE).name}, "
          f"threads={os.environ['OPENBLAS_NUM_THREADS']} ({how}); times: best of a few calls, split included; "
          f"bytes: attention's reads as counted, split excluded")
    rows = []
    for T in args.T:
        rows.append(case(f"prefill T={T}", rectangle(np.zeros((1, T), dtype=np.int64)), 0,
                         3 if T <= 1024 else 2, rng))
    B, S = args.decode_batch, args.decode_context
    decode = TokenBatch(np.zeros(B, dtype=np.int64), np.full(B, S, dtype=np.int64), (Block(0, 0, B, 1, S),))
    rows.append(case(f"decode B={B} S={S + 1}", decode, S, 20, rng))
    head = (f"{'case':<22}{'unfused s':>11}{'fused s':>11}{'speedup':>9}{'unfused read':>15}{'fused read':>13}"
            f"{'read ratio':>12}{'max |diff|':>12}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['label']:<22}{r['t_u']:>11.4f}{r['t_f']:>11.4f}{r['t_u'] / r['t_f']:>8.2f}x"
              f"{r['b_u'] / 2**20:>12.1f} MiB{r['b_f'] / 2**20:>9.1f} MiB{r['b_u'] / r['b_f']:>11.1f}x"
              f"{r['err']:>12.1e}")


if __name__ == "__main__":
    main()
