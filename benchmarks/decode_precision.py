"""Decode is bound by bytes: one model decoded at B = 1 in float32, bfloat16, int8 and int4 weights, timed next to
the bytes each step reads and the time this machine's measured bandwidth predicts for them.

    python benchmarks/decode_precision.py                 # the default model: ~410 MB of float32 weights
    python benchmarks/decode_precision.py --layers 4 --steps 16 --repeats 5
    python benchmarks/decode_precision.py --threads 1     # every kernel on one core (a shared machine)

The model: Llama-style, C = 1024, 8 layers, 16 heads, gated MLP of 2 · 2816, vocabulary 2048 (untied head):
102 M parameters, 410 MB in float32, more than this CPU's L2 and beyond what a shared L3 keeps for one process.
Weights random (the speed does not depend on them). bfloat16 is the float32 model rounded to 16 bits (weights,
activations, KV cache); int8 and int4 are `minitx.quantize(bf16 model, fmt, group_size=128)`: W8A16 / W4A16,
the embedding and head staying in bfloat16. Attention is fused (what servers run) for all four.

Each figure: `minitx.timed` over `--repeats` runs of `--steps` decode steps after a prompt of 16 tokens (a
warm-up run first: Numba compilation, page faults), per step: the median, with its spread and a warning when the
machine was too noisy to conclude. Bytes per step are counted by the ops themselves (`minitx.count()` around one
step: reads and writes, weights, activations and KV cache); the prediction is bytes / the copy bandwidth that
`minitx.hardware.get("this-machine")` measured (a roofline: the best this machine's memory allows). Ratios are
tokens/s against float32's, in the same process. Threads: every kernel uses the same count (Numba's and BLAS's
pools: all logical CPUs, 2 on the machine this was written on, or `--threads N`, set in the environment before
NumPy loads its BLAS); the pools' idle threads are given a moment to go to sleep between precisions, so one
precision's spinning workers do not steal the next one's cores. The load average (other programs' demand for
the cores) is printed beside the figures: on a machine whose every core is busy elsewhere, a kernel split
over all cores waits for the slowest one to be scheduled (a few ms per kernel, dozens of kernels per step), and
`--threads 1` measures the kernels instead of the scheduler.

This is a script, not a test: it prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from threads import thread_env  # noqa: E402


def threads_asked(argv: list[str]) -> int:
    """--threads N (or --threads=N) from the command line, 0 when absent or not a number."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.partition("=")[2]
        else:
            continue
        return int(value) if value.isdigit() else 0
    return 0


# A thread count must be in the environment before NumPy loads its BLAS and Numba starts its pool: here, above
# their imports (benchmarks/threads.py).
if __name__ == "__main__" and threads_asked(sys.argv) > 0:
    os.environ.update(thread_env(threads_asked(sys.argv), base={}))

import numpy as np  # noqa: E402

import minitx  # noqa: E402
from minitx import Config, Transformer, count  # noqa: E402

PRECISIONS = ("float32", "bfloat16", "int8", "int4")
GOALS = {"bfloat16": 1.6, "int8": 2.5}          # tokens/s against float32 (the goals)
PROMPT = 16


def bench_config(layers: int = 8) -> Config:
    return Config(name="decode-bench", vocab_size=2048, n_ctx=256, d_model=1024, n_layers=layers, n_heads=16,
                  d_ff=2816, norm="rmsnorm", mlp="gated", activation="silu", position="rope", bias=False,
                  tie_embeddings=False)


def build(cfg: Config, group_size: int = 128) -> dict[str, Transformer]:
    """The four models; the bfloat16 one is the float32 one rounded, int8/int4 quantize the bfloat16 one."""
    f32 = Transformer(cfg, seed=0, attention="fused")
    bf16 = Transformer(cfg, dtype="bfloat16", attention="fused", init=False)
    for name, view in bf16.params.items():
        view[...] = f32.params[name]
    return {"float32": f32, "bfloat16": bf16, "int8": minitx.quantize(bf16, "int8", group_size),
            "int4": minitx.quantize(bf16, "int4", group_size)}


def measure(models: dict, steps: int, repeats: int, bandwidth: float) -> list[dict]:
    rows = []
    ids = np.arange(PROMPT, dtype=np.int64)[None, :] % models["float32"].cfg.vocab_size
    for fmt, model in models.items():
        time.sleep(0.5)                         # let the other pool's idle workers stop spinning
        cache = model.new_cache(1, PROMPT + (repeats + 1) * steps + 1)
        model.prefill(ids, cache)
        with count() as one:
            model.decode([1], cache)
        state = {"n": 0}

        def run():
            for _ in range(steps):
                model.decode([state["n"] % 7], cache)
                state["n"] += 1
        t = minitx.timed(run, repeats=repeats, warmup=1).scaled(steps)
        predicted = one.bytes / bandwidth
        rows.append({"precision": fmt, "tokens_per_s": 1 / t.median, "step_ms": t.median * 1e3,
                     "spread": t.spread, "noisy": t.noisy, "bytes_per_step": one.bytes,
                     "weight_bytes": one.reads.get("weights", 0), "predicted_ms": predicted * 1e3,
                     "measured_over_predicted": t.median / predicted, "timing": t})
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8, help="layers of the model (default 8: ~410 MB in float32)")
    parser.add_argument("--steps", type=int, default=8, help="decode steps per timed run (default 8)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per precision (default 7)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of every kernel, Numba's and BLAS's (default 0: all logical CPUs)")
    args = parser.parse_args()
    import numba
    machine = minitx.hardware.get("this-machine")
    cfg = bench_config(args.layers)
    load_before = os.getloadavg()
    print(f"model: {cfg.name}, {minitx.formulas.num_params(cfg) / 1e6:.0f} M parameters, "
          f"{minitx.formulas.param_bytes(cfg) / 1e6:.0f} MB in float32; B = 1, fused attention")
    print(f"this machine: copy bandwidth {machine.bandwidth / 1e9:.1f} GB/s; threads: Numba "
          f"{numba.get_num_threads()}, BLAS {os.environ.get('OPENBLAS_NUM_THREADS', 'default (all)')}, "
          f"{os.cpu_count()} logical CPUs; load average {load_before[0]:.2f} (1 min)")
    rows = measure(build(cfg), args.steps, args.repeats, machine.bandwidth)
    print(f"\n{'precision':<10}{'tokens/s':>10}{'vs fp32':>9}{'MB/step':>9}{'predicted':>11}{'measured':>10}"
          f"{'meas/pred':>10}  spread")
    for r in rows:
        print(f"{r['precision']:<10}{r['tokens_per_s']:>10.1f}{r['speedup']:>8.2f}x{r['bytes_per_step'] / 1e6:>9.1f}"
              f"{r['predicted_ms']:>9.2f}ms{r['step_ms']:>8.2f}ms{r['measured_over_predicted']:>9.2f}x  "
              f"{r['spread']:.0%}")
    for fmt, goal in GOALS.items():
        r = next(r for r in rows if r["precision"] == fmt)
        print(f"goal {fmt}: ≥ {goal}x float32's tokens/s and within 1.5x of its prediction -> "
              f"{r['speedup']:.2f}x, {r['measured_over_predicted']:.2f}x of predicted: "
              f"{'met' if r['speedup'] >= goal and r['measured_over_predicted'] <= 1.5 else 'not met'}")
    warning = minitx.measure.timing.noise_warning([r["timing"] for r in rows], "these decode timings")
    if warning:
        print("WARNING:", warning)
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.2f} (1 min) after, {load_before[0]:.2f} before, on {os.cpu_count()} CPUs")
    print(json.dumps({"threads": numba.get_num_threads(), "bandwidth": machine.bandwidth,
                      "loadavg": [load_before[0], load_after[0]],
                      "rows": [{k: v for k, v in r.items() if k != "timing"} for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
