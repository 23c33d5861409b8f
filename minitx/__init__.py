"""minitx: a minimal transformer whose every kernel counts its FLOPs and bytes as it runs.

The public API (what the lessons and the command line use):

    Config, Transformer, AdamW          the model: configuration, forward/backward, optimizer
    KVCache, generate                   KV-cached inference: prefill, decode, sampling
    count                               `with minitx.count() as c:` collects what every op did
    load_hf, export_hf, hf_config       the Hugging Face layouts of GPT-2, Llama, Mistral, Gemma
    formulas, conventions               the closed forms, and the counting conventions they share with the ops
    memory                              measured memory: saved activations, inference peak, one report
    hardware, roofline, serving         GPUs and this machine, the roofline model, batching and latency
    measured, cost, plots               predicted vs measured on this CPU, self-hosting economics, charts

Names are imported on first use (PEP 562), so `minitx params llama-2-70b`, which needs only the closed forms,
answers without loading Numba and the kernels.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_NAMES = {"Config": "config", "Transformer": "model", "AdamW": "optim", "KVCache": "decode", "generate": "decode",
          "count": "counting", "load_hf": "hf", "export_hf": "hf", "hf_config": "hf"}
_MODULES = ("conventions", "cost", "formulas", "hardware", "measured", "memory", "plots", "roofline", "serving")
__all__ = [*_NAMES, *_MODULES]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'minitx' has no attribute {name!r}")
    globals()[name] = value      # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
