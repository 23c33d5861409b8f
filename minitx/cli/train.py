"""`minitx train`: train a small byte-level model on Python's own source code, and save it.

    minitx train                                   200 steps of small-llama, well under a minute on a laptop CPU
    minitx train --steps 1000 --preset small-llama --out runs/llama.ckpt
    minitx train --overwrite                       replace an existing checkpoint (refused otherwise)

The text is `minitx.data.load_corpus()` (standard-library sources that ship with Python: no download), the
tokens are its UTF-8 bytes (vocabulary 256), the last 10% is held out for validation. Beside tokens/s each
progress line prints the FLOP/s achieved, from the FLOPs counted for one step (a shape-only run of the same
step, printed at the start next to the 6·P·tokens rule), and the MFU: that FLOP/s over this machine's measured
matmul peak (`minitx hw --measure`). Every step samples
--batch random windows of --seq bytes and takes one AdamW step on the mean next-byte cross-entropy. The
learning rate warms up linearly over the first 5% of the steps and then follows a cosine down to 10% of --lr.

A model that knows nothing predicts each of the 256 bytes with probability 1/256: loss ln 256 ≈ 5.55. Learning
the byte frequencies alone brings it to about 3.3; below that the model is using context (indentation, keywords,
names it has seen). The checkpoint (`minitx.io.checkpoint.save_model`) holds the parameters, the AdamW state and the
run's settings; `minitx generate` samples from it.

--out is checked before the first step: its folder is created if missing and must accept a new file, and an
existing --out is replaced only with --overwrite. If saving still fails at the end (the disk filled up, the folder
was removed), the run is saved to a new file in the temporary folder (tempfile.gettempdir(), named after --out),
the error says where, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

from .. import checks
from ..accounting import formulas
from ..core.config import PRESETS, Config
from ..dtypes import TRAINABLE as DTYPES
from ..io.data import VOCAB_SIZE, Batches, ByteTokenizer, get_batch, load_corpus, split
from ..measure.machine import physical_memory

DEFAULTS = dict(steps=200, preset="small-llama", batch=8, seq=64, lr=3e-3, seed=0, out="runs/minitx.ckpt",
                eval_every=50, log_every=10, eval_batches=8, dtype="float32", weight_decay=0.0)
VAL_FRACTION = 0.1
BETAS = (0.9, 0.95)   # a shorter second-moment memory than Adam's 0.999, as GPT-style training runs use


def add_arguments_main(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--steps", type=int, default=d["steps"], help=f"optimizer steps (default {d['steps']})")
    p.add_argument("--preset", default=d["preset"], metavar="NAME",
                   help=f"model shape (default {d['preset']}); its vocabulary is set to 256 bytes. "
                        f"Small ones: tiny-gpt2, tiny-llama, small-gpt2, small-llama, reference")
    p.add_argument("--batch", type=int, default=d["batch"], help=f"sequences per step (default {d['batch']})")
    p.add_argument("--seq", type=int, default=d["seq"], help=f"bytes per sequence (default {d['seq']})")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help=f"AdamW weight decay (default {d['weight_decay']})")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the initial weights and of the batches")
    p.add_argument("--out", default=d["out"], metavar="PATH", help=f"checkpoint to write (default {d['out']})")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (refused otherwise)")
    p.add_argument("--eval-every", type=int, default=d["eval_every"],
                   help=f"validation loss every N steps, and at the end (default {d['eval_every']})")
    p.add_argument("--log-every", type=int, default=d["log_every"],
                   help=f"a progress line every N steps (default {d['log_every']})")
    p.add_argument("--eval-batches", type=int, default=d["eval_batches"],
                   help=f"validation batches per evaluation (default {d['eval_batches']})")
    p.add_argument("--dtype", default=d["dtype"], choices=DTYPES,
                   help=f"float dtype (default {d['dtype']}); training runs in float32 or float64 only: 16-bit and "
                        "int8/int4 models are for inference (minitx generate --dtype)")


# ---- argument checks -----------------------------------------------------------------------------------------

def _config(preset: str, seq: int) -> Config:
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is unknown; presets: {', '.join(sorted(PRESETS))}")
    cfg = Config.preset(preset)
    if cfg.vocab_size != VOCAB_SIZE:
        cfg = cfg.replace(vocab_size=VOCAB_SIZE, name=f"{cfg.name}-bytes")
    if seq > cfg.n_ctx:
        raise ValueError(f"--seq {seq} exceeds the context of preset {preset!r} (n_ctx={cfg.n_ctx})")
    return cfg


def _check_memory(cfg: Config, args, available: int | None = None) -> None:
    """Refuse, before allocating anything, a run whose training memory (weights, gradients, Adam's m and v, saved
    activations: formulas.training_memory) exceeds half this machine's memory."""
    need = formulas.training_memory(cfg, args.batch, args.seq, args.dtype)["total"]
    available = physical_memory()[0] if available is None else available
    if need > available / 2:
        raise ValueError(f"--preset {args.preset!r} needs about {need / 1e9:,.1f} GB to train at batch {args.batch} "
                         f"x {args.seq} tokens in {args.dtype} (weights, gradients, Adam's m and v, activations), "
                         f"more than half of this machine's {available / 1e9:,.1f} GB; choose a smaller preset "
                         "(tiny-gpt2, small-llama, reference, ...)")


def _check_args(args) -> None:
    for flag in ("steps", "batch", "seq", "eval_every", "log_every", "eval_batches"):
        checks.integer("--" + flag.replace("_", "-"), getattr(args, flag))
    checks.positive("--lr", args.lr)
    checks.number("--weight-decay", args.weight_decay, 0.0)
    checks.integer("--seed", args.seed, 0)
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if not args.out:
        raise ValueError("--out must be a file path")
    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} is a directory; give a file path")
    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"--out {args.out!r} already exists; pass --overwrite to replace it, "
                         "or choose another path")
    if os.path.exists(args.out) and not os.path.isfile(args.out):
        raise ValueError(f"--out {args.out!r} exists and is not a regular file (a device, a FIFO, ...); "
                         "give a checkpoint file path")


def _check_out_writable(out: str) -> None:
    """Before the first step: create --out's folder if missing, and prove that a file can be created in it (the
    checkpoint is written as a temporary file there, then renamed), so a finished run is not thrown away."""
    from ..io.checkpoint import TEMP_PREFIX, TEMP_SUFFIX
    directory = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX + "probe-", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"--out {out!r} is not writable: cannot create a file in {directory!r} ({reason}); "
                         "choose another path") from None


def _fallback_path(out: str) -> str:
    """A new file in the temporary folder named after the run, for when --out cannot be written at the end."""
    stem = os.path.splitext(os.path.basename(out))[0] or "minitx"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"{stem}-{stamp}-{os.getpid()}.ckpt")


def _save_or_fall_back(save_model, args, model, opt, meta, out) -> int:
    """Save to --out; if that fails now (disk full, folder removed mid-run), save the run to a fallback file
    and say where, returning exit status 1: the run is kept either way unless both saves fail."""
    try:
        save_model(args.out, model, opt, meta=meta, overwrite=args.overwrite)
        print(f"saved {args.out}", file=out, flush=True)
        return 0
    except (OSError, ValueError) as error:
        failure = error
    fallback = _fallback_path(args.out)
    try:
        save_model(fallback, model, opt, meta=meta)
    except (OSError, ValueError) as error:
        print(f"minitx train: error: could not save --out {args.out!r} ({failure}), nor the fallback "
              f"{fallback!r} ({error}); the run is lost", file=sys.stderr, flush=True)
        return 1
    print(f"minitx train: error: could not save --out {args.out!r} ({failure}); the run was saved to "
          f"{fallback} instead", file=sys.stderr, flush=True)
    return 1


# ---- training ------------------------------------------------------------------------------------------------

def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps (at least one), then a cosine from `peak` down to peak/10."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def evaluate(model, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean next-byte cross-entropy over fixed validation batches (forward only)."""
    from ..core.ops.loss import cross_entropy_forward
    total = 0.0
    for x, y in batches:
        logits = model.forward(x)
        loss, _ = cross_entropy_forward(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), "val_loss")
        total += loss
    return total / len(batches)


def _step_arithmetic(cfg: Config, args, n_params: int, tokens: int, out) -> tuple[int, float]:
    """(FLOPs one training step performs, this machine's measured peak FLOP/s for the dtype), printed with the
    6·P·tokens rule beside the count.

    The FLOPs are counted, not estimated: one step (forward, backward, AdamW) of a shape-only copy of the model
    (`Transformer(cfg, shape_only=True)`, the same ops recording the same costs, no data), so the timed loop runs
    without a counter. Every step of a run has the same shapes, so the same count. The peak is the best matmul
    rate NumPy reaches here (minitx.measure.this_machine(), a couple of seconds, once per process): MFU, the
    model FLOPs utilization, is the FLOP/s achieved over that peak."""
    from ..accounting.counting import count
    from ..core.model import Transformer
    from ..core.optim import AdamW
    from ..measure.machine import this_machine
    shaped = Transformer(cfg, dtype=args.dtype, shape_only=True)
    ids = np.zeros((args.batch, args.seq), dtype=np.int64)
    with count() as step:
        _, grads = shaped.loss_and_grads(ids, ids)
        AdamW(shaped).step(grads)
    rule = formulas.approx_training_flops_6P(cfg, tokens, n_params)
    print(f"FLOPs per step: {step.flops:,} counted (forward, backward, AdamW); 6·P·tokens = 6 x {n_params:,} x "
          f"{tokens:,} = {rule:,} ({rule / step.flops - 1:+.1%})", file=out, flush=True)
    key = "fp64" if args.dtype == "float64" else "fp32"
    peak = this_machine()["peak_flops"][key]
    print(f"this machine's measured {key} matmul peak: {peak / 1e9:,.1f} GFLOP/s (minitx hw --measure); "
          "MFU = FLOP/s achieved / that peak", file=out, flush=True)
    return step.flops, peak


def main(args) -> int:
    from ..core.model import Transformer
    from ..core.optim import AdamW
    from ..io import checkpoint

    _check_args(args)
    cfg = _config(args.preset, args.seq)
    _check_memory(cfg, args)
    _check_out_writable(args.out)
    out = sys.stdout

    text = load_corpus()
    tokens = ByteTokenizer().encode(text)
    train_tokens, val_tokens = split(tokens, VAL_FRACTION)
    if args.seq + 1 > len(val_tokens):
        raise ValueError(f"--seq {args.seq} is longer than the validation text ({len(val_tokens)} bytes)")
    batches = Batches(train_tokens, args.batch, args.seq, seed=args.seed)
    val_rng = np.random.default_rng(1_000_003)       # the same validation windows for every run and evaluation
    val = [get_batch(val_tokens, args.batch, args.seq, val_rng) for _ in range(args.eval_batches)]

    model = Transformer(cfg, seed=args.seed, dtype=args.dtype)
    opt = AdamW(model, lr=args.lr, betas=BETAS, weight_decay=args.weight_decay)
    tok_per_step = args.batch * args.seq
    print(f"minitx train: {cfg.name}, {model.num_params():,} parameters, {args.dtype}; corpus {len(tokens):,} bytes "
          f"({len(train_tokens):,} train / {len(val_tokens):,} validation); {args.steps} steps of "
          f"{args.batch}x{args.seq} = {tok_per_step:,} tokens, lr {args.lr:g} (warm-up + cosine)", file=out)
    print(f"(a model that knows nothing scores ln 256 = {math.log(VOCAB_SIZE):.2f})", file=out)
    flops_per_step, peak = _step_arithmetic(cfg, args, model.num_params(), tok_per_step, out)
    val_loss = evaluate(model, val)
    history = [{"step": 0, "val_loss": round(val_loss, 5)}]
    print(f"step {0:>5}/{args.steps}  val loss {val_loss:.4f}", file=out, flush=True)

    start = time.perf_counter()
    window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
    first_loss = loss = float("nan")
    for step in range(args.steps):
        x, y = next(batches)
        opt.lr = lr_at(step, args.steps, args.lr)
        loss, grads = model.loss_and_grads(x, y)
        if not math.isfinite(loss):
            raise ValueError(f"the loss became {loss} at step {step + 1}; try a smaller --lr")
        opt.step(grads)
        if step == 0:
            first_loss = loss
        window_loss += loss
        window_n += 1
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            now = time.perf_counter()
            seconds = max(now - window_t, 1e-9)
            tps = window_n * tok_per_step / seconds
            achieved = window_n * flops_per_step / seconds
            print(f"step {done:>5}/{args.steps}  train loss {window_loss / window_n:.4f}  "
                  f"lr {opt.lr:.2e}  {tps:,.0f} tok/s  {achieved / 1e9:,.2f} GFLOP/s  MFU {achieved / peak:.1%}",
                  file=out, flush=True)
            history.append({"step": done, "train_loss": round(window_loss / window_n, 5)})
            window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
        if done % args.eval_every == 0 or done == args.steps:
            t0 = time.perf_counter()
            val_loss = evaluate(model, val)
            history.append({"step": done, "val_loss": round(val_loss, 5)})
            print(f"step {done:>5}/{args.steps}  val loss {val_loss:.4f}", file=out, flush=True)
            window_t += time.perf_counter() - t0       # evaluation time does not count against tokens/s
    elapsed = time.perf_counter() - start

    meta = {"step": args.steps, "seed": args.seed, "preset": args.preset, "batch": args.batch, "seq": args.seq,
            "peak_lr": args.lr, "train_loss": round(float(loss), 5), "val_loss": round(float(val_loss), 5),
            "first_loss": round(float(first_loss), 5), "seconds": round(elapsed, 2),
            "corpus_bytes": int(len(tokens)), "history": history, "flops_per_step": int(flops_per_step),
            "mfu": round(args.steps * flops_per_step / elapsed / peak, 5)}
    print(f"trained {args.steps} steps in {elapsed:.1f} s ({args.steps * tok_per_step / elapsed:,.0f} tok/s, "
          f"{args.steps * flops_per_step / elapsed / 1e9:,.2f} GFLOP/s, MFU "
          f"{args.steps * flops_per_step / elapsed / peak:.1%}): "
          f"train loss {first_loss:.3f} -> {loss:.3f}, validation {history[0]['val_loss']:.3f} -> {val_loss:.3f}",
          file=out)
    return _save_or_fall_back(checkpoint.save_model, args, model, opt, meta, out)
