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
"""
from . import conventions, cost, formulas, hardware, measured, memory, plots, roofline, serving
from .config import Config
from .counting import count
from .decode import KVCache, generate
from .hf import export_hf, hf_config, load_hf
from .model import Transformer
from .optim import AdamW

__version__ = "0.1.0"
__all__ = ["Config", "Transformer", "AdamW", "KVCache", "generate", "count", "load_hf", "export_hf",
           "hf_config", "conventions", "cost", "formulas", "hardware", "measured", "memory", "plots", "roofline",
           "serving"]
