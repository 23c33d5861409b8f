"""How long counting a real model takes: a shape-only run (arrays with shapes and no data: every op records its
cost, no kernel runs) against the closed forms (minitx.formulas) for the same phase, in the same process.

    python benchmarks/count_speed.py                        # Llama-3-70B prefill of 8,192 tokens, and a decode step
    python benchmarks/count_speed.py --model llama-2-70b --seq 4096 --batch 8

Prints, per phase: seconds for the formulas, seconds for the shape-only run (model built, cache allocated by
shape, the phase run under minitx.count()), their ratio, the largest Python allocation the run traced
(tracemalloc), and whether the two ledgers agree to the FLOP and the byte; then the process's peak resident memory.
The decode step is the one that fills the context: T − 1 tokens cached, T keys read. Timings are the median of a
few runs after a warm-up (minitx.timed). A script, not a test: about 5-10 s.
"""
from __future__ import annotations

import argparse
import tracemalloc

import numpy as np

import minitx
from minitx import Config, Transformer, count, formulas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3-70b")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args(argv)
    cfg = Config.preset(args.model)
    B, T = args.batch, args.seq
    if not 2 <= T <= cfg.n_ctx:
        ap.error(f"--seq must be in [2, {cfg.n_ctx}] (the model's context)")
    tokens = np.zeros((B, T), dtype=np.int64)

    def prefill():
        model = Transformer(cfg, dtype=args.dtype, attention="fused", shape_only=True)
        with count() as c:
            model.prefill(tokens, model.new_cache(B, T))
        return c

    def decode():
        model = Transformer(cfg, dtype=args.dtype, attention="fused", shape_only=True)
        cache = model.new_cache(B, T)
        cache.lengths[:] = T - 1                  # T − 1 tokens cached: the step writes the T-th, reads T keys
        with count() as c:
            model.decode(tokens[:, -1], cache)
        return c

    closed = {"prefill": lambda: formulas.prefill(cfg, B, T, args.dtype, "fused"),
              "decode": lambda: formulas.decode_step(cfg, B, T - 1, args.dtype, "fused")}
    print(f"{cfg.name}, {args.dtype}, fused attention, B={B}, T={T:,}: "
          f"{formulas.num_params(cfg):,} parameters ({formulas.param_bytes(cfg, args.dtype) / 1e9:,.1f} GB never held)")
    print(f"{'phase':<8} {'formulas':>12} {'shape-only':>12} {'ratio':>7} {'traced peak':>12} {'equal':>6}")
    for phase, run in (("prefill", prefill), ("decode", decode)):
        f_time = minitx.timed(closed[phase], repeats=5, warmup=1)
        s_time = minitx.timed(run, repeats=5, warmup=1)
        tracemalloc.start()
        counted = run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        want = closed[phase]()
        equal = counted.flops == want.flops and counted.bytes == want.bytes
        print(f"{phase:<8} {f_time.median * 1e3:>9.1f} ms {s_time.median * 1e3:>9.1f} ms "
              f"{s_time.median / f_time.median:>6.1f}x {peak / 1e6:>9.1f} MB {'yes' if equal else 'NO':>6}")
        for t in (f_time, s_time):
            if t.noisy:
                print(f"  (noisy: {t})")
    import resource             # POSIX; the figure the issue bounds: resident memory of the whole process
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
