"""minitx: a minimal transformer whose every kernel counts its FLOPs and bytes as it runs.

The public API (what the lessons and the command line use):

    Config, Transformer, AdamW          the model: configuration, forward/backward, optimizer
    KVCache, generate                   KV-cached inference: prefill, decode, sampling
    quantize                            int8 / int4 weights with float16 group scales (16-bit: Transformer(dtype=))
    save_model, load_model, data        minitx's own checkpoints (any precision); the byte-level training text
    Engine, PagedKVCache                serving many requests: batching, a paged KV cache
    count                               `with minitx.count() as c:` collects what every op did
    load_hf, export_hf, hf_config       the Hugging Face layouts of GPT-2, Llama, Mistral, Gemma
    formulas, conventions               the closed forms, and the counting conventions they share with the ops
    memory                              measured memory: saved activations, inference peak, one report
    hardware, roofline, serving         GPUs and this machine, the roofline model, batching and latency
    measured, cost, plots               predicted vs measured on this CPU, self-hosting economics, charts
    timed                               warm up, repeat, median and spread: every measured figure

The package is laid out by what each part is for (see each folder's __init__): core/ what runs, accounting/ the
counts and the closed forms, serving/ hardware, roofline, latency and cost, measure/ this machine, io/ files,
teaching/ `minitx check` and pictures, cli/ the command line.

Names are imported on first use (PEP 562), so `minitx params llama-2-70b`, which needs only the closed forms,
answers without loading Numba and the kernels.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module that defines it, attribute or None for the module itself)
_NAMES = {
    "Config": ("core.config", "Config"), "Transformer": ("core.model", "Transformer"),
    "AdamW": ("core.optim", "AdamW"), "KVCache": ("core.kv_cache", "KVCache"),
    "generate": ("core.generate", "generate"), "count": ("accounting.counting", "count"),
    "load_hf": ("io.hf", "load_hf"), "export_hf": ("io.hf", "export_hf"), "hf_config": ("io.hf_config", "hf_config"),
    "conventions": ("accounting.conventions", None), "formulas": ("accounting.formulas", None),
    "memory": ("accounting.memory", None), "hardware": ("serving.hardware", None),
    "roofline": ("serving.roofline", None), "serving": ("serving", None), "cost": ("serving.cost", None),
    "measured": ("measure.inference", None), "plots": ("teaching.plots", None),
    "Engine": ("serving.engine", "Engine"), "PagedKVCache": ("core.paged_cache", "PagedKVCache"),
    "timed": ("measure.timing", "timed"),
    "quantize": ("core.quantize_model", "quantize"),
    "save_model": ("io.checkpoint", "save_model"), "load_model": ("io.checkpoint", "load_model"),
    "data": ("io.data", None),
}
__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'minitx' has no attribute {name!r}")
    module, attr = _NAMES[name]
    value = importlib.import_module(f".{module}", __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value      # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
