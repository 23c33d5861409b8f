"""Serving: the batching engine on this CPU, continuous vs static batching at the same offered load.

    python benchmarks/serving.py                             # small-llama, 64 requests, max batch 8, 1 thread
    python benchmarks/serving.py --model reference --requests 96 --max-batch 16 --gen 8-128 --repeats 5

Workload: `--requests` requests, all offered at step 0 (a batch job: the same load for both policies), prompts
of a uniform length in `--prompt` tokens, output lengths in `--gen` with a long tail (`--gen-dist exponential`:
most answers short, a few long, as chat outputs are; or `uniform`), drawn from `--seed`; each request generates
exactly its length (its max_new_tokens, no stop token); greedy, float32, random weights; fused attention, a
paged KV cache with room for every batch. Each policy runs the very same requests through
`minitx.Engine(model, policy, ...)`: output tokens/s = all generated tokens / wall time of
`engine.run()` (prefills included), after a warm-up run, the two policies timed in alternation `--repeats`
times (a burst of load from elsewhere then hits both alike): the median per policy with its spread, and the
median of the pairs' ratios. Both policies generate the same tokens (each request's greedy continuation); what
differs is how the steps are filled: static batching runs each batch until its longest member ends, its finished
members' places empty, while continuous batching (Orca) refills every place at every step.

Printed: per policy, steps, mean sequences per step, wall time, tokens/s; then the ratio continuous / static
(the issue's target: ≥ 1.5×) and the same ratio in steps (tokens per step), which does not depend on the machine.
The wall-time ratio is below the steps ratio where a step's time grows with its batch: on a CPU a small model's
step is a fixed cost (Python, one BLAS call per layer) plus a share per sequence, so a fuller step costs more; on
a GPU, where a decode step reads all the weights whatever the batch, it would cost nearly the same.

This is a script, not a test: about 10-30 s. A section at the end is left for the serving simulator's speed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from threads import limit_threads, thread_env  # noqa: E402


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def engine_benchmark(args) -> dict:
    """Continuous vs static on one workload: {policy: {...}} and the ratios."""
    import numpy as np

    import minitx
    from minitx.measure.timing import Timing, timed

    cfg = minitx.Config.preset(args.model)
    model = minitx.Transformer(cfg, seed=0, dtype="float32", attention="fused")
    rng = np.random.default_rng(args.seed)
    (p_lo, p_hi), (g_lo, g_hi) = _range(args.prompt), _range(args.gen)
    if p_hi + g_hi > cfg.n_ctx:
        raise SystemExit(f"--prompt {args.prompt} and --gen {args.gen} pass {args.model}'s context {cfg.n_ctx}")
    work = []
    for _ in range(args.requests):
        prompt = rng.integers(0, cfg.vocab_size, int(rng.integers(p_lo, p_hi + 1))).tolist()
        if args.gen_dist == "uniform":
            gen = int(rng.integers(g_lo, g_hi + 1))
        else:          # a long tail: LO + an exponential of mean (HI − LO) / 5, cut at HI
            gen = int(min(g_hi, g_lo + rng.exponential((g_hi - g_lo) / 5)))
        work.append((prompt, gen))

    def engine(policy: str):
        e = minitx.Engine(model, policy, "paged", block_size=16, max_batch=args.max_batch)
        for prompt, gen in work:
            e.submit(prompt, gen)
        return e

    out = {}
    engines = {policy: engine(policy) for policy in ("static", "continuous")}
    results = {policy: e.run() for policy, e in engines.items()}             # warm-up: compiles, faults pages in
    assert [r.tokens for r in results["static"].requests] == [r.tokens for r in results["continuous"].requests]
    # Alternate the two, a pair per repeat, so that a burst of load from elsewhere hits both alike; the ratio is
    # the median of the pairs' ratios.
    samples = {"static": [], "continuous": []}
    for _ in range(args.repeats):
        for policy, e in engines.items():
            samples[policy].append(timed(e.run, repeats=1, warmup=0).median)
    for policy in engines:
        t = Timing(tuple(samples[policy]))
        s = results[policy].summary
        out[policy] = {"steps": s["steps"], "output_tokens": s["output_tokens"],
                       "mean_batch": float(np.mean([st.sequences for st in results[policy].steps])),
                       "tokens_per_step": s["throughput_tok_step"], "seconds": t.median, "spread": t.spread,
                       "noisy": t.noisy, "tokens_per_s": s["output_tokens"] / t.median,
                       "ttft_p50_steps": s["ttft_p50_steps"], "tpot_p50_steps": s["tpot_p50_steps"]}
    pairs = [a / b for a, b in zip(samples["static"], samples["continuous"])]
    out["ratio_tokens_per_s"] = float(np.median(pairs))
    out["ratio_spread"] = Timing(tuple(pairs)).spread
    out["ratio_tokens_per_step"] = out["continuous"]["tokens_per_step"] / out["static"]["tokens_per_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="small-llama")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prompt", default="2-8", help="prompt lengths: N or LO-HI (uniform)")
    p.add_argument("--gen", default="2-120", help="caps on new tokens: N or LO-HI")
    p.add_argument("--gen-dist", default="exponential", choices=["exponential", "uniform"],
                   help="output lengths in --gen: exponential (LO + an exponential of mean (HI - LO)/5, cut at "
                        "HI: most short, a few long, as chat answers are; default) or uniform")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simulator-requests", type=int, default=10_000,
                   help="requests in the simulator's speed test (Llama-3-8B on an H100); 0 skips it")
    args = p.parse_args(argv)
    if "numpy" not in sys.modules:
        # BLAS sizes its pool when NumPy loads it: the count must be in the environment first (without
        # threadpoolctl, limit_threads cannot change it afterwards, and --threads 1 left BLAS on every core)
        os.environ.update(thread_env(args.threads, base={}))
    how = limit_threads(args.threads)

    res = engine_benchmark(args)
    print(f"engine: {args.model}, {args.requests} requests at step 0, prompts {args.prompt}, gen {args.gen} "
          f"({args.gen_dist}), max batch {args.max_batch}, {args.threads} thread(s) ({how})")
    print(f"{'policy':<12} {'steps':>6} {'mean batch':>10} {'tokens/step':>11} {'wall s':>8} {'spread':>7} "
          f"{'tokens/s':>9}")
    for policy in ("static", "continuous"):
        r = res[policy]
        print(f"{policy:<12} {r['steps']:>6} {r['mean_batch']:>10.2f} {r['tokens_per_step']:>11.2f} "
              f"{r['seconds']:>8.3f} {r['spread']:>7.0%} {r['tokens_per_s']:>9.1f}" + ("  (noisy)" * r["noisy"]))
    print(f"continuous / static: {res['ratio_tokens_per_s']:.2f}x tokens/s on this CPU (median of "
          f"{args.repeats} alternating pairs, spread {res['ratio_spread']:.0%}) "
          f"({res['ratio_tokens_per_step']:.2f}x tokens per step); target >= 1.5x")
    print(json.dumps({"engine": res}))

    # ==========================================================================================================
    # The serving simulator's speed (10,000 simulated requests of Llama-3-8B on an H100): E2's section, below.
    # ==========================================================================================================
    if args.simulator_requests:
        sim = simulator_benchmark(args.simulator_requests, args.repeats)
        print_simulator(sim)
        print(json.dumps({"simulator": sim}))
    return 0


# ==============================================================================================================
# The serving simulator's speed (E2's section)

def simulator_benchmark(requests: int, repeats: int) -> dict:
    """Wall time to simulate `requests` requests of Llama-3-8B on an H100 (target: 10,000 in under 10 s), and the
    fast step cost against its baseline, the formulas' Ledger of the step placed on the roofline.

    Workload: Poisson arrivals at 50 requests/s (near the server's capacity, so batches of ~200 sequences),
    prompts of 512 tokens, outputs uniform in 16-512, seed 0; continuous batching, paged KV cache, bf16, fused
    attention. The baseline is what the simulator would do without minitx.serving.step_cost: build the step's
    Ledger with formulas.step and sum its roofline (what minitx.Engine does with a counted Ledger); both are timed
    on the same typical step, 255 decode tokens beside one 512-token prompt."""
    import numpy as np

    import minitx
    from minitx.measure.timing import Timing, timed
    from minitx.serving import simulator, workload
    from minitx.serving.step_cost import StepCost

    cfg = minitx.Config.preset("llama-3-8b")
    jobs = workload.poisson(50.0, requests, 512, (16, 512), cfg.n_ctx, seed=0)
    result = simulator.simulate(cfg, "h100-sxm", jobs, "bf16")           # warm-up, and the run's figures
    wall = timed(lambda: simulator.simulate(cfg, "h100-sxm", jobs, "bf16"), repeats=repeats, warmup=0)

    cost = StepCost(cfg, "h100-sxm", "bf16", "fused")
    rng = np.random.default_rng(0)
    n = np.array([512] + [1] * 255, dtype=np.int64)
    p = np.array([0] + rng.integers(512, 1024, 255).tolist(), dtype=np.int64)
    fast = timed(lambda: cost.time_unchecked(n, p, 256), repeats=repeats, warmup=1)
    blocks = cost.blocks(n, p)

    def baseline():
        ledger = minitx.formulas.step(cfg, blocks, "bf16", "fused", logits_rows=256)
        return minitx.roofline.analyze(ledger, "h100-sxm", "bf16").time

    slow = timed(baseline, repeats=repeats, warmup=1)
    assert abs(baseline() - cost.time(n, p, 256)) <= 1e-9 * baseline()   # the same number, found two ways
    s = result.summary
    return {"requests": requests, "steps": s.steps, "simulated_s": s.duration_s, "wall_s": wall.median,
            "spread": wall.spread, "noisy": wall.noisy, "steps_per_s": s.steps / wall.median,
            "requests_per_s": requests / wall.median, "step_cost_us": fast.median * 1e6,
            "formulas_roofline_us": slow.median * 1e6, "speedup": slow.median / fast.median,
            "target_wall_s": 10.0 * requests / 10_000}


def print_simulator(sim: dict) -> None:
    print()
    print(f"simulator: llama-3-8b on h100-sxm, {sim['requests']:,} requests (Poisson 50/s, prompt 512, gen 16-512), "
          f"continuous, paged")
    print(f"  {sim['wall_s']:.2f} s wall for {sim['simulated_s']:,.1f} s simulated, {sim['steps']:,} steps "
          f"({sim['steps_per_s']:,.0f} steps/s, {sim['requests_per_s']:,.0f} requests/s; spread "
          f"{sim['spread']:.0%}){'  (noisy)' * sim['noisy']}; target < {sim['target_wall_s']:.1f} s")
    print(f"  one step's cost: StepCost {sim['step_cost_us']:,.1f} µs vs formulas.step + roofline "
          f"{sim['formulas_roofline_us']:,.0f} µs: {sim['speedup']:,.0f}x faster, the same time to float rounding")


if __name__ == "__main__":
    sys.exit(main())
