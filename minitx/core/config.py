"""The shape of a transformer: one dataclass, the real presets, and a reader for Hugging Face `config.json`.

A `Config` describes a model completely without allocating it, so a 70B preset can be described and counted
on a laptop. Two architecture families are covered, chosen by a handful of switches:

    family   positions  norm       MLP                  biases  embeddings
    GPT-2    learned    LayerNorm  up -> GELU -> down   yes     tied
    Llama    RoPE       RMSNorm    gated (SwiGLU/GeGLU) no      tied or untied, GQA/MQA, free head_dim

Dimension legend used across minitx (see `minitx/core/ops/__init__.py`; docs/notation.md maps it to the literature):
    B batch, T sequence, C d_model, V vocabulary, L layers, NH query heads, KV key/value heads,
    HS head size, F MLP hidden size, S cache length.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from .. import checks
from ..io import hf_config

NORMS = ("layernorm", "rmsnorm")
MLPS = ("standard", "gated")
ACTIVATIONS = ("gelu_tanh", "silu")  # gelu_tanh = GPT-2's gelu_new = PyTorch's gelu(approximate="tanh")
POSITIONS = ("learned", "rope")


@dataclass(frozen=True)
class Config:
    """Everything needed to build, count or describe a model. Sizes are validated at construction."""

    vocab_size: int = 256          # V
    n_ctx: int = 128               # longest sequence the model accepts (learned positions need a table this long)
    d_model: int = 64              # C
    n_layers: int = 2              # L
    n_heads: int = 4               # NH, query heads
    n_kv_heads: int | None = None  # KV; None = n_heads (multi-head); 1 = multi-query; otherwise grouped-query
    head_dim: int | None = None    # HS; None = d_model // n_heads. Gemma and others set it freely.
    d_ff: int | None = None        # F; None = 4 * d_model (standard MLP) or 8/3 * d_model rounded (gated)
    norm: str = "layernorm"        # "layernorm" (scale and shift) or "rmsnorm" (scale only)
    norm_eps: float = 1e-5
    mlp: str = "standard"          # "standard": down(act(up x)); "gated": down(act(gate x) * up x)
    activation: str = "gelu_tanh"  # "gelu_tanh" (GPT-2, Gemma's GeGLU) or "silu" (Llama's SwiGLU)
    position: str = "learned"      # "learned" absolute table, or "rope" rotary (rotate-half, as in HF transformers)
    rope_theta: float = 10000.0
    bias: bool = True              # biases on every linear layer (GPT-2) or none (Llama)
    tie_embeddings: bool = True    # the LM head reuses the token embedding matrix
    embed_scale: bool = False      # Gemma multiplies embeddings by sqrt(d_model)
    norm_unit_offset: bool = False # Gemma's RMSNorm scales by (1 + w) instead of w
    sliding_window: int | None = None  # W: a query at position i sees keys i − W < j ≤ i (Mistral v0.1: 4096)
    name: str = "custom"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads"):
            checks.integer(f"Config.{field}", getattr(self, field))
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        checks.integer("Config.n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"Config.n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads} "
                             "(each key/value head serves a whole group of query heads)")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"Config.d_model={self.d_model} is not divisible by n_heads={self.n_heads}: "
                                 "set head_dim explicitly")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        checks.integer("Config.head_dim", self.head_dim)
        for field, allowed in (("norm", NORMS), ("mlp", MLPS), ("activation", ACTIVATIONS),
                               ("position", POSITIONS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"Config.{field}={getattr(self, field)!r} is unknown; allowed: {', '.join(allowed)}")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", _default_d_ff(self.d_model, self.mlp))
        checks.integer("Config.d_ff", self.d_ff)
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"Config.head_dim={self.head_dim} must be even for rope (it rotates pairs)")
        # Every float field is checked whether or not this model uses it (rope_theta on learned positions): a
        # NaN kept in an unused field would still fail later, in to_dict's JSON or in a converted model.
        if not (_real(self.rope_theta) and 1 < self.rope_theta and math.isfinite(float(self.rope_theta))):
            raise ValueError(f"Config.rope_theta={self.rope_theta!r} must be a finite number > 1")
        if not (_real(self.norm_eps) and 0 < self.norm_eps < 1):
            raise ValueError(f"Config.norm_eps={self.norm_eps!r} must be in (0, 1)")
        for field in ("bias", "tie_embeddings", "embed_scale", "norm_unit_offset"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"Config.{field} must be a bool, got {getattr(self, field)!r}")
        if self.sliding_window is not None:
            checks.integer("Config.sliding_window", self.sliding_window)
        if self.norm_unit_offset and self.norm != "rmsnorm":
            raise ValueError("Config.norm_unit_offset=True applies only to norm='rmsnorm' (Gemma's (1 + w))")

    # Derived sizes, named as in the dimension legend.
    @property
    def q_dim(self) -> int:
        """NH * HS: width of the query projection (equals d_model only when head_dim = d_model / n_heads)."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """KV * HS: width of each of the key and value projections."""
        return self.n_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head (1 = multi-head, n_heads = multi-query)."""
        return self.n_heads // self.n_kv_heads

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed. n_kv_heads, head_dim and d_ff that hold their default value (n_heads,
        d_model // n_heads, the MLP's default width) follow the new sizes unless given: replace(d_model=128) on
        a 4·d MLP gives a 4·128 MLP. A size that differs from its default (Llama-2's 11008) is kept."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        defaults = {"n_kv_heads": self.n_heads,
                    "head_dim": self.d_model // self.n_heads if self.d_model % self.n_heads == 0 else None,
                    "d_ff": _default_d_ff(self.d_model, self.mlp)}
        for field, default in defaults.items():
            if field not in changes and fields[field] == default:
                fields[field] = None
        fields.update(changes)
        return Config(**fields)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Config.from_dict: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def preset(cls, name: str) -> "Config":
        """A named configuration with the real shapes (see `PRESETS`)."""
        try:
            return PRESETS[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}") from None

    @classmethod
    def from_hf(cls, source: str | os.PathLike | Mapping[str, Any]) -> "Config":
        """Read a Hugging Face `config.json` (a path, its folder, or the dict it holds): see minitx.io.hf_config."""
        return cls(**hf_config.config_fields(source))


def _real(value: Any) -> bool:
    """A real number that converts to a finite-or-infinite float: not a bool, not an int beyond float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _default_d_ff(d_model: int, mlp: str) -> int:
    """4·C for the standard MLP; about 8/3·C (rounded up to a multiple of 8) for the gated one, which has three
    matrices instead of two and so keeps the same parameter count."""
    return 4 * d_model if mlp == "standard" else _round_up(8 * d_model // 3, 8)


# --------------------------------------------------------------------------------------------------------------
# Presets. Real models use the shapes of their published Hugging Face configs; the small ones are for lessons,
# tests and `minitx check`.

def _gpt2(name: str, n_layers: int, d_model: int, n_heads: int) -> Config:
    return Config(name=name, vocab_size=50257, n_ctx=1024, d_model=d_model, n_layers=n_layers, n_heads=n_heads)


def _llama(name: str, **kw: Any) -> Config:
    base = dict(norm="rmsnorm", norm_eps=1e-5, mlp="gated", activation="silu", position="rope", bias=False,
                tie_embeddings=False)
    base.update(kw)
    return Config(name=name, **base)


PRESETS: dict[str, Config] = {c.name: c for c in [
    _gpt2("gpt2", 12, 768, 12),
    _gpt2("gpt2-medium", 24, 1024, 16),
    _gpt2("gpt2-large", 36, 1280, 20),
    _gpt2("gpt2-xl", 48, 1600, 25),
    _llama("llama-2-7b", vocab_size=32000, n_ctx=4096, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
           norm_eps=1e-5),
    _llama("llama-2-13b", vocab_size=32000, n_ctx=4096, d_model=5120, n_layers=40, n_heads=40, d_ff=13824),
    _llama("llama-2-70b", vocab_size=32000, n_ctx=4096, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
           d_ff=28672),
    _llama("llama-3-8b", vocab_size=128256, n_ctx=8192, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
           d_ff=14336, rope_theta=500000.0),
    _llama("llama-3-70b", vocab_size=128256, n_ctx=8192, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
           d_ff=28672, rope_theta=500000.0),
    # Mistral 7B v0.1 (its published config.json): 32,768 positions, each attending to the last 4,096 keys.
    _llama("mistral-7b", vocab_size=32000, n_ctx=32768, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
           d_ff=14336, norm_eps=1e-5, sliding_window=4096),
    _llama("gemma-2b", vocab_size=256000, n_ctx=8192, d_model=2048, n_layers=18, n_heads=8, n_kv_heads=1,
           head_dim=256, d_ff=16384, activation="gelu_tanh", norm_eps=1e-6, tie_embeddings=True,
           embed_scale=True, norm_unit_offset=True),
    _llama("gemma-7b", vocab_size=256000, n_ctx=8192, d_model=3072, n_layers=28, n_heads=16, n_kv_heads=16,
           head_dim=256, d_ff=24576, activation="gelu_tanh", norm_eps=1e-6, tie_embeddings=True,
           embed_scale=True, norm_unit_offset=True),
    # Small models that run for real on a laptop CPU.
    Config(name="tiny-gpt2", vocab_size=64, n_ctx=32, d_model=32, n_layers=2, n_heads=4),
    _llama("tiny-llama", vocab_size=64, n_ctx=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12,
           d_ff=64),
    Config(name="small-gpt2", vocab_size=256, n_ctx=128, d_model=128, n_layers=4, n_heads=4),
    _llama("small-llama", vocab_size=256, n_ctx=128, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
           d_ff=352),
    # The reference configuration of the benchmarks (benchmarks/train_step.py compares it with PyTorch).
    Config(name="reference", vocab_size=512, n_ctx=256, d_model=256, n_layers=4, n_heads=4),
]}
