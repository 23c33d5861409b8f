"""minitx: a minimal transformer whose every kernel counts its FLOPs and bytes as it runs.

Public API: Config, Transformer, AdamW, KVCache, generate, count, load_hf, export_hf, formulas, hardware.
"""
from .config import Config
from .counting import count
from .model import Transformer

__version__ = "0.1.0"
__all__ = ["Config", "Transformer", "count"]
from .optim import AdamW

__all__ += ["AdamW"]
from .decode import KVCache, generate
__all__ += ["KVCache", "generate"]
from .hf import export_hf, hf_config, load_hf

__all__ += ["load_hf", "export_hf", "hf_config"]
from . import cost, formulas, hardware, plots, roofline

__all__ += ["cost", "formulas", "hardware", "plots", "roofline"]
from . import conventions, memory

__all__ += ["conventions", "memory"]
