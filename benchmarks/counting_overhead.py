"""What counting costs: the reference training step timed with and without an active `minitx.count()`.

    python benchmarks/counting_overhead.py                 # 1 thread, 40 pairs of steps
    python benchmarks/counting_overhead.py --pairs 100 --threads 2

Configuration: `Config.preset("reference")`, batch 4, sequence 128, float32, forward + backward + AdamW.
The two variants alternate step by step (plain, counted, plain, counted, ...; the order inside each pair flips
every pair), so slow drifts of the machine (other processes, turbo, thermal) hit both alike. Reported:

* timed overhead: median(counted) / median(plain) − 1, and the median of the per-pair ratios;
* accounted overhead: (records per step × the cost of one `record` call into an active counter, timed in a
  tight loop) / the plain step time. Free of timing noise, but a lower bound: it leaves out the byte sums
  (`nbytes`) that the ops compute only when a counter is active.

Target: < 3%. Outside a `count()` block `record` returns after one truthiness test, so uncounted runs pay
nothing measurable; this measures the counted case.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from threads import limit_threads, thread_env




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=40, help="pairs of (plain, counted) steps (default 40)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each variant first")
    p.add_argument("--threads", type=int, default=1, help="BLAS / Numba threads (default 1)")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--pairs and --threads must be >= 1, --warmup >= 0")
    limit_threads(args.threads)

    import numpy as np

    import minitx
    from minitx import AdamW, Config, Transformer
    from minitx import counting

    cfg = Config.preset("reference")
    model = Transformer(cfg, seed=0, dtype="float32")
    opt = AdamW(model, lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, size=(4, 129), dtype=np.int64)
    tokens, targets = np.ascontiguousarray(x[:, :-1]), np.ascontiguousarray(x[:, 1:])

    def plain() -> float:
        t0 = time.perf_counter()
        _, g = model.loss_and_grads(tokens, targets)
        opt.step(g)
        return time.perf_counter() - t0

    n_records = [0]

    def counted() -> float:
        t0 = time.perf_counter()
        with minitx.count() as c:
            _, g = model.loss_and_grads(tokens, targets)
            opt.step(g)
        dt = time.perf_counter() - t0
        n_records[0] = len(c.records)
        return dt

    for _ in range(args.warmup):
        plain()
        counted()
    t_plain, t_counted, ratios = [], [], []
    for i in range(args.pairs):
        if i % 2 == 0:
            a, b = plain(), counted()
        else:
            b, a = counted(), plain()
        t_plain.append(a)
        t_counted.append(b)
        ratios.append(b / a)
    med_plain, med_counted = statistics.median(t_plain), statistics.median(t_counted)
    timed = med_counted / med_plain - 1.0
    paired = statistics.median(ratios) - 1.0

    # The cost of one record() into an active counter, with arguments shaped like a linear layer's.
    reads = (("activations", 1 << 20), ("weights", 1 << 18))
    writes = (("activations", 1 << 20),)
    reps = 20000
    with minitx.count():
        counting.record("warm", "matmul", 1, 1, reads=reads, writes=writes)
        t0 = time.perf_counter()
        for _ in range(reps):
            counting.record("layers.0.attn.qkv", "matmul", 123456789, 61728394, reads=reads, writes=writes)
        per_record = (time.perf_counter() - t0) / reps
    accounted = n_records[0] * per_record / med_plain

    print(f"reference config, batch 4, seq 128, float32, forward + backward + AdamW, {args.threads} thread(s), "
          f"{args.pairs} interleaved pairs")
    print(f"plain step       median {med_plain * 1e3:8.2f} ms   min {min(t_plain) * 1e3:8.2f} ms")
    print(f"counted step     median {med_counted * 1e3:8.2f} ms   min {min(t_counted) * 1e3:8.2f} ms")
    print(f"timed overhead     {100 * timed:+.2f}% (ratio of medians), {100 * paired:+.2f}% (median of paired ratios), "
          f"{100 * (min(t_counted) / min(t_plain) - 1):+.2f}% (ratio of minima)")
    print(f"accounted overhead {100 * accounted:+.3f}% (lower bound): {n_records[0]} records per step x "
          f"{per_record * 1e6:.2f} us per record() call")
    print("target: < 3%")
    print(json.dumps({"counting_overhead": {
        "plain_ms": round(med_plain * 1e3, 3), "counted_ms": round(med_counted * 1e3, 3),
        "timed_pct": round(100 * timed, 3), "paired_pct": round(100 * paired, 3),
        "accounted_pct": round(100 * accounted, 4), "records_per_step": n_records[0],
        "us_per_record": round(per_record * 1e6, 3), "threads": args.threads, "pairs": args.pairs}}))
    return 0


if __name__ == "__main__":
    # Thread counts must be in the environment before NumPy loads its BLAS.
    if "--threads" in sys.argv:
        n = sys.argv[sys.argv.index("--threads") + 1]
    else:
        n = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1")
    os.environ.update(thread_env(int(n), base={}))
    sys.exit(main())
