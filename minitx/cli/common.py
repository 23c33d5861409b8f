"""What every command shares: reading MODEL, numbers from flags, printing JSON. One place each.

MODEL is a preset name (gpt2, llama-2-7b, gemma-2b, ...) or the path of a Hugging Face config.json (or of the
folder holding one) of model_type gpt2, llama, mistral or gemma.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from .. import checks
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
