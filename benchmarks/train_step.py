"""Time one training step (forward + backward + AdamW) of the reference configuration, minitx vs PyTorch eager.

    python benchmarks/train_step.py                   # minitx with 1 and 2 threads (+ PyTorch if importable)
    python benchmarks/train_step.py --threads 1 2 4 --steps 30 --warmup 5
    python benchmarks/train_step.py --torch-attention sdpa   # PyTorch with its fused attention instead

Configuration: `Config.preset("reference")` (GPT-2 family: vocab 512, d_model 256, 4 layers, 4 heads,
context 256), batch 4, sequence 128, float32, AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0).

Every (implementation, thread count) pair runs in a fresh subprocess: BLAS thread pools are sized when the
library loads, so the environment variables (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
NUMBA_NUM_THREADS) are set before Python starts, and inside the worker threadpoolctl (when installed),
numba.set_num_threads and torch.set_num_threads pin the same count again. Each worker runs `--warmup` steps
(Numba compilation, BLAS buffers, allocator warm-up) and reports the median of `--steps` timed steps.

The PyTorch model is written inline below with the same shapes and the same algorithm as minitx (pre-norm
GPT-2 block, fused qkv, materialised T×T attention scores with a causal mask, tanh GELU, tied LM head, mean
cross-entropy) so that the ratio compares implementations, not algorithms. `--torch-attention sdpa` swaps in
F.scaled_dot_product_attention (a fused kernel minitx does not have), `--torch-model hf` uses transformers'
GPT2LMHeadModel (eager attention) when transformers is importable.

This is a script, not a test: it prints a table and a JSON line, and exits 0.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

from threads import limit_threads, thread_env

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH, SEQ = 4, 128
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 0.0


# ---- workers (run in a subprocess, one thread count each) ----------------------------------------------------



def _data(vocab: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(BATCH, SEQ + 1), dtype=np.int64)
    return np.ascontiguousarray(x[:, :-1]), np.ascontiguousarray(x[:, 1:])


def _time_steps(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def worker_minitx(threads: int, warmup: int, steps: int) -> dict:
    how = limit_threads(threads)
    from minitx import AdamW, Config, Transformer
    cfg = Config.preset("reference")
    model = Transformer(cfg, seed=0, dtype="float32")
    opt = AdamW(model, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    tokens, targets = _data(cfg.vocab_size)
    losses = []

    def step():
        loss, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
        losses.append(loss)

    times = _time_steps(step, warmup, steps)
    return {"impl": "minitx", "threads": threads, "how": how, "times": times, "loss0": losses[0],
            "params": model.num_params()}


def _torch_inline_model(cfg, attention: str):
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            C = cfg.d_model
            self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=cfg.norm_eps), nn.LayerNorm(C, eps=cfg.norm_eps)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.up, self.down = nn.Linear(C, cfg.d_ff), nn.Linear(cfg.d_ff, C)
            mask = torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril()
            self.register_buffer("mask", mask, persistent=False)

        def attn(self, x):
            B, T, C = x.shape
            NH, HS = cfg.n_heads, cfg.head_dim
            q, k, v = self.qkv(x).split(C, dim=2)
            q, k, v = (t.view(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))
            if attention == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
                s = s.masked_fill(~self.mask[:T, :T], float("-inf"))
                o = F.softmax(s, dim=-1) @ v
            return self.proj(o.transpose(1, 2).contiguous().view(B, T, C))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

        def forward(self, idx, targets):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.T          # tied LM head
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    model = GPT()
    for name, p in model.named_parameters():        # GPT-2's initialisation (PyTorch's defaults differ)
        if p.dim() == 2:
            nn.init.normal_(p, mean=0.0, std=0.02)
        elif name.endswith(".bias"):
            nn.init.zeros_(p)
    return model


def _torch_hf_model(cfg):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=cfg.norm_eps)
    hf_cfg._attn_implementation = "eager"             # the materialised-scores attention minitx also runs
    model = GPT2LMHeadModel(hf_cfg)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, idx, targets):
            logits = self.m(input_ids=idx).logits
            return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    return Wrap()


def worker_torch(threads: int, warmup: int, steps: int, model_kind: str, attention: str) -> dict:
    how = limit_threads(threads)
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from minitx import Config
    cfg = Config.preset("reference")
    model = _torch_hf_model(cfg) if model_kind == "hf" else _torch_inline_model(cfg, attention)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            foreach=True)
    tokens, targets = (torch.from_numpy(a) for a in _data(cfg.vocab_size))
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        opt.step()
        losses.append(float(loss))

    times = _time_steps(step, warmup, steps)
    label = "torch-hf" if model_kind == "hf" else f"torch-{attention}"
    return {"impl": label, "threads": threads, "how": how + "+torch", "times": times, "loss0": losses[0],
            "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}


# ---- driver --------------------------------------------------------------------------------------------------

def _run_worker(args, impl: str, threads: int) -> dict | None:
    env = thread_env(threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--torch-model", args.torch_model,
           "--torch-attention", args.torch_attention]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[{impl}, {threads} thread(s)] failed:\n{proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (Numba compiles here)")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved rounds of every run; the lowest per-round median is kept (default 2)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--torch-model", choices=("inline", "hf"), default="inline")
    p.add_argument("--torch-attention", choices=("manual", "sdpa"), default="manual")
    p.add_argument("--worker", choices=("minitx", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.threads) < 1 or args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--threads, --steps and --rounds must be >= 1, --warmup >= 0")

    if args.worker:
        n = args.threads[0]
        if args.worker == "minitx":
            res = worker_minitx(n, args.warmup, args.steps)
        else:
            res = worker_torch(n, args.warmup, args.steps, args.torch_model, args.torch_attention)
        print(json.dumps(res))
        return 0

    have_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    if args.torch_model == "hf" and importlib.util.find_spec("transformers") is None:
        print("transformers is not importable: using the inline PyTorch model", file=sys.stderr)
        args.torch_model = "inline"
    print(f"reference config, batch {BATCH}, seq {SEQ}, float32, AdamW; median of {args.steps} steps after "
          f"{args.warmup} warm-up, best of {args.rounds} interleaved round(s); python {sys.executable}")
    if not have_torch:
        print("(PyTorch not importable here: minitx only. Run with a Python that has torch for the comparison.)")
    # Rounds interleave the implementations, so a burst of load from other processes hits both; each
    # (implementation, threads) keeps its least-disturbed round: the lowest per-round median.
    results: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.rounds):
        for n in args.threads:
            for impl in ("minitx", "torch") if have_torch else ("minitx",):
                r = _run_worker(args, impl, n)
                if r is not None:
                    results.setdefault((impl, n), []).append(r)

    def best(impl: str, n: int) -> dict | None:
        runs = results.get((impl, n))
        return min(runs, key=lambda r: statistics.median(r["times"])) if runs else None

    rows, summary = [], {}
    for n in args.threads:
        mt, tt = best("minitx", n), best("torch", n)
        m_ms = statistics.median(mt["times"]) * 1e3 if mt else float("nan")
        t_ms = statistics.median(tt["times"]) * 1e3 if tt else None
        ratio = m_ms / t_ms if t_ms else None
        rows.append((n, m_ms, t_ms, ratio, tt["impl"] if tt else None))
        summary[str(n)] = {"minitx_ms": round(m_ms, 2), "torch_ms": None if t_ms is None else round(t_ms, 2),
                           "ratio": None if ratio is None else round(ratio, 3),
                           "minitx_min_ms": round(min(mt["times"]) * 1e3, 2) if mt else None,
                           "torch_min_ms": round(min(tt["times"]) * 1e3, 2) if tt else None}
        if mt and tt:
            summary[str(n)]["loss0"] = {"minitx": round(mt["loss0"], 4), "torch": round(tt["loss0"], 4)}
    print(f"{'threads':>7} {'minitx ms':>10} {'torch ms':>10} {'minitx/torch':>13}")
    for n, m_ms, t_ms, ratio, label in rows:
        t = f"{t_ms:10.1f}" if t_ms is not None else f"{'-':>10}"
        r = f"{ratio:12.2f}x" if ratio is not None else f"{'-':>13}"
        print(f"{n:>7} {m_ms:10.1f} {t} {r}" + (f"   ({label})" if label else ""))
    if any(r[3] is not None for r in rows):
        print("target: minitx <= 1.3x PyTorch")
    print(json.dumps({"train_step": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
