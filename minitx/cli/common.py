"""What every command shares: reading MODEL, numbers from flags, the precision flags, printing JSON. One place
each.

MODEL is a preset name (gpt2, llama-2-7b, gemma-2b, ...) or the path of a Hugging Face config.json (or of the
folder holding one) of model_type gpt2, llama, mistral or gemma.

Precision (minitx.dtypes.Precision), the same flags on every calculator and on `minitx count`:
    --dtype D          the shorthand: fp32/fp16/bf16 set activations, weights and KV cache; int8 means int8
                       weights and KV cache with bf16 activations (W8A16), int4 int4 weights with a bf16 cache
    --weight-dtype D   the weights: the activations' format, or int8/int4 (weight-only, float16 group scales)
    --kv-dtype D       the KV cache: any float format, or int8
    --attention A      unfused (every op a trip to memory, score matrices written out) or fused (one kernel,
                       no score matrix: what servers run)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from .. import checks, dtypes
from ..core.config import PRESETS, Config


class CommandError(Exception):
    """Raised by subcommands for a clean one-line failure."""


def load_model(spec: str) -> Config:
    """A preset name, or the path of a Hugging Face config.json (or of a folder holding one)."""
    if spec in PRESETS:
        return Config.preset(spec)
    looks_like_path = os.path.exists(spec) or spec.endswith(".json") or os.sep in spec or "/" in spec
    if not looks_like_path:
        raise ValueError(f"unknown model {spec!r}: not a preset ({', '.join(sorted(PRESETS))}) nor a path to a "
                         "Hugging Face config.json")
    return Config.from_hf(spec)


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help=f"a preset ({', '.join(sorted(PRESETS))}) or the path of a Hugging Face config.json")


# ---- precision and attention flags ---------------------------------------------------------------------------

# flag value -> canonical format name
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8", "int4": "int4"}
WEIGHT_DTYPES = ("fp32", "fp16", "bf16", "int8", "int4")
KV_DTYPES = ("fp32", "fp16", "bf16", "int8")
ATTENTIONS = ("fused", "unfused")


def add_precision_arguments(p: argparse.ArgumentParser, default: str = "bf16", attention: str = "inference",
                            dtype_help: str | None = None) -> None:
    """--dtype, --weight-dtype, --kv-dtype and --attention. `attention` says what the default attention is:
    "inference" (fused), "train" (unfused, the only kind training runs), or "phase" (fused for prefill and
    decode, unfused for training)."""
    p.add_argument("--dtype", default=default, choices=list(DTYPES), help=dtype_help or (
        f"the shorthand that sets both precisions: fp32/fp16/bf16 for activations, weights and KV cache; int8 = "
        f"int8 weights and KV cache, bf16 activations; int4 = int4 weights, bf16 KV cache and activations "
        f"(default: {default})"))
    p.add_argument("--weight-dtype", default=None, choices=WEIGHT_DTYPES, metavar="D",
                   help="the weights' format: the activations' own, or int8/int4 (weight-only quantization of the "
                        "layers' matrices, float16 scales per 128 inputs; embeddings, norms and the head stay in "
                        "the activations' format) (default: as --dtype). Choices: " + ", ".join(WEIGHT_DTYPES))
    p.add_argument("--kv-dtype", default=None, choices=KV_DTYPES, metavar="D",
                   help="the KV cache's format (default: as --dtype). Choices: " + ", ".join(KV_DTYPES))
    defaults = {"inference": "fused", "train": "unfused",
                "phase": "fused for prefill and decode, unfused for train (training has no fused backward)"}
    p.add_argument("--attention", default=None, choices=ATTENTIONS,
                   help="fused: one kernel per layer, no score matrix written (FlashAttention: what servers run); "
                        f"unfused: scores, softmax and mix as separate ops (default: {defaults[attention]})")


def precision_of(args) -> dtypes.Precision:
    """The Precision the flags describe: --dtype, overridden by --weight-dtype and --kv-dtype. Nonsense (a
    weight format that is neither the activations' nor int8/int4) is a ValueError naming the flags."""
    weights = None if args.weight_dtype is None else DTYPES[args.weight_dtype]
    kv = None if args.kv_dtype is None else DTYPES[args.kv_dtype]
    base = dtypes.precision(DTYPES[args.dtype])
    if weights is not None and weights not in (base.activations,) + dtypes.QUANTIZED_FORMATS:
        raise ValueError(f"--weight-dtype {args.weight_dtype} with {dtypes.short(base.activations)} activations "
                         f"(--dtype {args.dtype}): weights are stored in the activations' format or quantized "
                         "(int8, int4)")
    return dtypes.precision(DTYPES[args.dtype], weights=weights, kv=kv)


def attention_of(args, training: bool) -> str:
    """--attention, or its default: unfused for training (the only kind it runs), fused otherwise."""
    if training:
        if args.attention == "fused":
            raise ValueError("--attention fused: training runs unfused attention (the fused kernel has no "
                             "backward, and the backward needs the probabilities)")
        return "unfused"
    return args.attention or "fused"


def require_training_precision(pr: dtypes.Precision) -> None:
    """Training runs in one float format: no quantized weights, a cache (none) in the activations' format."""
    if pr.quantized or pr.kv != pr.activations:
        raise ValueError(f"training runs in one float format (weights, gradients and activations alike), not "
                         f"{pr}: drop --weight-dtype/--kv-dtype, and use --dtype fp32, fp16 or bf16")


def precision_data(pr: dtypes.Precision, attention: str) -> dict:
    """The precision and attention, as every command's JSON reports them."""
    return {"precision": {"activations": pr.activations, "weights": pr.weights, "kv": pr.kv,
                          "group_size": pr.group_size, "text": str(pr)},
            "attention": attention}


def whole_number(text: str, flag: str, lowest: int = 1) -> int:
    """A flag's text as an integer ≥ lowest ("4_096" allowed), else a ValueError naming the flag."""
    try:
        value = int(str(text).replace("_", ""))
    except ValueError:
        raise ValueError(f"{flag} must be a whole number, got {str(text)[:40]!r}") from None
    if value < lowest:
        raise ValueError(f"{flag} must be at least {lowest}, got {value}")
    return checks.integer(flag, value, lowest)


def _plain(x: Any) -> Any:
    """JSON has no inf or NaN: they become null, everywhere in the structure."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# The version of the shape of every command's --json output; it changes when a key moves, goes or changes meaning
# (new keys may appear without a change). Scripts that read the output can check it.
SCHEMA_VERSION = 1


def print_json(data: dict) -> None:
    """The one way commands print JSON: an object with `schema_version` first, valid JSON always (a non-finite
    number, which JSON cannot hold, prints as null)."""
    out = {"schema_version": SCHEMA_VERSION, **_plain(data)}
    sys.stdout.write(json.dumps(out, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
