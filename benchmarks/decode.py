"""Tokens per second of generation: minitx with the KV cache, minitx without it, and Hugging Face.

    python benchmarks/decode.py                      # B = 1 and 8, 1 thread (+ HF when importable)
    python benchmarks/decode.py --threads 1 2 --batches 1 8 --new 128 --prompt 64 --rounds 3
    python benchmarks/decode.py --no-uncached        # skip the slow recompute decoder

Configuration: `Config.preset("reference")` (GPT-2 family: vocab 512, d_model 256, 4 layers, 4 heads, context
256), float32, random weights, B random prompts of `--prompt` tokens, greedy, exactly `--new` new tokens each
(no stop token). Tokens/s = B · new / wall time of the whole `generate` call (prefill included), after a
warm-up call (Numba compilation, BLAS buffers).

Hugging Face: `GPT2LMHeadModel(GPT2Config(same sizes)).generate(ids, max_new_tokens=new, min_new_tokens=new,
do_sample=False, use_cache=True)` under `torch.no_grad()`, when torch and transformers are importable.

Threads: each (implementation, thread count) runs in a fresh subprocess with OMP/OPENBLAS/MKL/NUMBA thread
variables set before Python starts, then threadpoolctl (when installed), numba.set_num_threads and
torch.set_num_threads pin the same count. Shared machines are noisy, so the workers run `--rounds` times,
alternating implementations, and each figure is the best round (each round the best of `--repeats` calls).

This is a script, not a test: it prints a table and one JSON line, and exits 0.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from threads import limit_threads, thread_env

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---- workers (each in its own subprocess) --------------------------------------------------------------------



def _prompts(B: int, T: int, vocab: int):
    import numpy as np
    return np.random.default_rng(0).integers(0, vocab, size=(B, T), dtype=np.int64)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def worker_minitx(threads: int, B: int, T: int, new: int, repeats: int, uncached: bool) -> dict:
    how = limit_threads(threads)
    sys.path.insert(0, ROOT)
    import minitx
    cfg = minitx.Config.preset("reference")
    model = minitx.Transformer(cfg, seed=0, dtype="float32")
    prompts = _prompts(B, T, cfg.vocab_size)
    minitx.generate(model, prompts, 8)                                 # warm-up: JIT, buffers
    out = minitx.generate(model, prompts, new)
    assert all(len(o) == new for o in out)
    res = {"impl": "minitx cached", "threads": threads, "how": how, "B": B,
           "seconds": _best(lambda: minitx.generate(model, prompts, new), repeats)}
    if uncached:
        minitx.generate(model, prompts, 2, use_cache=False)
        # one call: the recompute decoder takes tens of seconds at B = 8
        res["seconds_uncached"] = _best(lambda: minitx.generate(model, prompts, new, use_cache=False), 1)
    return res


def worker_hf(threads: int, B: int, T: int, new: int, repeats: int) -> dict:
    how = limit_threads(threads)
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=512, n_positions=256, n_embd=256, n_layer=4, n_head=4,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = GPT2LMHeadModel(cfg).eval()
    ids = torch.from_numpy(_prompts(B, T, 512))
    mask = torch.ones_like(ids)

    def run(n):
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, use_cache=True)
    run(8)
    assert run(new).shape == (B, T + new)
    return {"impl": "hf", "threads": threads, "how": how + "+torch", "B": B,
            "seconds": _best(lambda: run(new), repeats), "torch": torch.__version__}


# ---- driver --------------------------------------------------------------------------------------------------

def _spawn(kind: str, threads: int, B: int, args, uncached: bool = False) -> dict:
    env = thread_env(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--threads", str(threads),
           "--batches", str(B), "--prompt", str(args.prompt), "--new", str(args.new),
           "--repeats", str(args.repeats)]
    if uncached:
        cmd.append("--uncached-now")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed generate calls per round (best taken)")
    p.add_argument("--rounds", type=int, default=2, help="alternating worker rounds (best taken)")
    p.add_argument("--no-uncached", action="store_true", help="skip the recompute decoder")
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--worker", choices=["minitx", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--uncached-now", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        B, th = args.batches[0], args.threads[0]
        if args.worker == "minitx":
            res = worker_minitx(th, B, args.prompt, args.new, args.repeats, args.uncached_now)
        else:
            res = worker_hf(th, B, args.prompt, args.new, args.repeats)
        print(json.dumps(res))
        return

    have_hf = (not args.no_hf and importlib.util.find_spec("torch") is not None
               and importlib.util.find_spec("transformers") is not None)
    print(f"reference config, float32, prompt {args.prompt}, {args.new} new tokens, greedy; best of "
          f"{args.rounds} rounds x {args.repeats} calls" + ("" if have_hf else "; HF: torch/transformers absent"))
    rows = []
    for th in args.threads:
        for B in args.batches:
            best: dict[str, float] = {}
            for r in range(args.rounds):
                # the slow recompute decoder runs once, in the first round
                res = _spawn("minitx", th, B, args, uncached=r == 0 and not args.no_uncached)
                best["cached"] = min(best.get("cached", float("inf")), res["seconds"])
                if "seconds_uncached" in res:
                    best["uncached"] = res["seconds_uncached"]
                if have_hf:
                    best["hf"] = min(best.get("hf", float("inf")), _spawn("hf", th, B, args)["seconds"])
            tps = {k: B * args.new / v for k, v in best.items()}
            row = {"threads": th, "B": B, **{f"{k}_tok_s": round(v, 1) for k, v in tps.items()}}
            if "hf" in tps:
                row["cached_over_hf"] = round(tps["cached"] / tps["hf"], 2)
            if "uncached" in tps:
                row["cached_over_uncached"] = round(tps["cached"] / tps["uncached"], 1)
            rows.append(row)
            print(f"threads {th}  B {B}:  cached {tps['cached']:8.1f} tok/s"
                  + (f"   uncached {tps['uncached']:7.1f} tok/s ({row['cached_over_uncached']}x)"
                     if "uncached" in tps else "")
                  + (f"   HF {tps['hf']:8.1f} tok/s   minitx/HF {row['cached_over_hf']:.2f}x"
                     if "hf" in tps else ""), flush=True)
    print(json.dumps({"benchmark": "decode", "prompt": args.prompt, "new": args.new, "rows": rows}))


if __name__ == "__main__":
    main()
