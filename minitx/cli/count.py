"""`minitx count`: the FLOPs and bytes the model itself records, from a shape-only run (execution by shape).

    minitx count MODEL --phase train|prefill|decode --batch B --seq T [--dtype D] [--weight-dtype D]
                 [--kv-dtype D] [--attention fused|unfused] [--json]

The model is built with `Transformer(cfg, ..., shape_only=True)` in the given precision: its arrays carry a
shape and a dtype but no data, every op skips its kernel and records the cost it would have had, from the
shapes it was handed (minitx.core.shaped). So a 70B model is counted in a fraction of a second, in any
precision minitx can describe (bf16 activations, int8/int4 weights, an int8 KV cache), none of which it could
run here. What is counted, with token ids all zeros (the costs do not depend on the values):

    train     loss, grads = model.loss_and_grads(tokens, targets); AdamW(model).step(grads), on (B, T) tokens
              (float formats only; unfused attention, the only kind that has a backward)
    prefill   model.prefill of B prompts of T tokens into an empty shape-only KVCache
    decode    one model.decode step whose context after the step is T: a prefill of T − 1 tokens fills the
              cache first, uncounted, then the step is counted

Every flag means what it means to `minitx flops`, and `--json` prints the same keys (built by the same
`calc.flops_data`, from the counter's Ledger instead of the formulas'), plus `source`, so the two print side by
side and compare key by key: the formulas, the counts from real execution (`minitx check`) and these counts
by shape are three derivations of one set of numbers.
"""
from __future__ import annotations

import argparse

import numpy as np

from .. import dtypes
from ..accounting.ledger import Ledger
from ..core.config import Config
from .calc import (_add_common, _add_shape, flops_arguments, flops_data, formulas_ledger, phase_description,
                   print_flops)
from .common import DTYPES, add_precision_arguments, load_model, print_json

SOURCE = "counted: a shape-only run of the model (execution by shape)"


def add_arguments_count(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    _add_shape(p, "tokens per sequence (train, prefill), or the context after the decode step")
    p.add_argument("--phase", default="train", choices=("train", "prefill", "decode"),
                   help="train: one step (loss_and_grads, AdamW); prefill: the prompt pass into a KV cache; "
                        "decode: one new token per sequence with seq − 1 tokens cached (default: train)")
    add_precision_arguments(p, attention="phase")


def counted_ledger(cfg: Config, phase: str, B: int, T: int, pr: dtypes.Precision, attention: str) -> Ledger:
    """Run `phase` shape-only and return what the ops recorded (see the module docstring)."""
    # The model (and Numba, which its kernels need) is imported here: `minitx count` is the only command that
    # builds one; the calculators never import it.
    from ..accounting.counting import count
    from ..core.kv_cache import KVCache
    from ..core.model import Transformer
    from ..measure.machine import require_memory

    # Shape-only arrays hold no data, but the token ids, their positions and the index arrays built from them
    # are real (int64, B·T entries each, a few copies): refuse before allocating what the machine cannot hold.
    require_memory(16 * 8 * B * T, f"counting {B:,} × {T:,} tokens (their int64 ids, positions and indices)")
    model = Transformer(cfg, dtype=pr.activations, weight_dtype=pr.weights, kv_dtype=pr.kv,
                        group_size=pr.group_size, attention=attention, shape_only=True)
    if phase == "train":
        from ..core.optim import AdamW
        tokens = np.zeros((B, T), dtype=np.int64)
        opt = AdamW(model)
        with count() as c:
            _, grads = model.loss_and_grads(tokens, tokens)
            opt.step(grads)
        return Ledger(c)
    # A full cache of T positions, as the formulas' prefill and decode_step assume (unfused attention reads keys
    # 0..T-1). chunk = T: should a sliding-window model's cache be rolling, one call still takes all T tokens
    # and the cache keeps min(T, W + T − 1) = T positions.
    chunk = T if cfg.sliding_window else None
    cache = KVCache(cfg, B, T, pr.kv, chunk=chunk, shape_only=True)
    if phase == "prefill":
        with count() as c:
            model.prefill(np.zeros((B, T), dtype=np.int64), cache)
        return Ledger(c)
    if T > 1:
        model.prefill(np.zeros((B, T - 1), dtype=np.int64), cache)      # fills the cache: not counted
    with count() as c:
        model.decode(np.zeros(B, dtype=np.int64), cache)
    return Ledger(c)


def count_data(cfg: Config, phase: str, B: int, T: int, pr: dtypes.Precision, attention: str,
               dtype: str | None = None) -> dict:
    """What `minitx count --json` prints: `calc.flops_data` of the counted Ledger (and, beside fused attention,
    of an unfused run too, as `minitx flops` reports it)."""
    ledger = counted_ledger(cfg, phase, B, T, pr, attention)
    unfused = None
    if phase != "train":
        unfused = ledger if attention == "unfused" else counted_ledger(cfg, phase, B, T, pr, "unfused")
    return flops_data(cfg, ledger, phase, B, T, pr, attention, unfused, SOURCE, dtype)


def count(args) -> int:
    cfg = load_model(args.model)
    B, T, pr, attention = flops_arguments(args, cfg)
    data = count_data(cfg, args.phase, B, T, pr, attention, DTYPES[args.dtype])
    if args.json:
        print_json(data)
        return 0
    print_flops(cfg, data, f"FLOPs of {phase_description(args.phase, B, T)}; {pr}, {attention} attention; "
                           "2 FLOPs per multiply-add")
    print(f"counted, not computed: every op of a shape-only run of the model (arrays with shapes and no data, "
          f"no kernel run) recorded the cost of the arrays it was handed")
    predicted = formulas_ledger(cfg, args.phase, B, T, pr, attention)
    same = predicted.flops == data["total"] and predicted.bytes == data["bytes"]
    print(f"the closed forms (minitx flops, same flags): {predicted.flops:,} FLOPs, {predicted.bytes:,} B: "
          + ("the same, exactly" if same else
             f"DIFFERENT by {data['total'] - predicted.flops:+,} FLOPs, {data['bytes'] - predicted.bytes:+,} B"))
    return 0
