"""The shape of a transformer: one dataclass, the real presets, and a reader for Hugging Face `config.json`.

A `Config` describes a model completely without allocating it, so a 70B preset can be described and counted
on a laptop. Two architecture families are covered, chosen by a handful of switches:

    family   positions  norm       MLP                  biases  embeddings
    GPT-2    learned    LayerNorm  up -> GELU -> down   yes     tied
    Llama    RoPE       RMSNorm    gated (SwiGLU/GeGLU) no      tied or untied, GQA/MQA, free head_dim

Dimension legend used across minitx (see `minitx/ops/__init__.py`):
    B batch, T sequence, C d_model, V vocabulary, L layers, NH query heads, KV key/value heads,
    HS head size, F MLP hidden size, S cache length.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

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
    name: str = "custom"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads"):
            _require_positive_int(field, getattr(self, field))
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        _require_positive_int("n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"Config.n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads} "
                             "(each key/value head serves a whole group of query heads)")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"Config.d_model={self.d_model} is not divisible by n_heads={self.n_heads}: "
                                 "set head_dim explicitly")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        _require_positive_int("head_dim", self.head_dim)
        for field, allowed in (("norm", NORMS), ("mlp", MLPS), ("activation", ACTIVATIONS),
                               ("position", POSITIONS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"Config.{field}={getattr(self, field)!r} is unknown; allowed: {', '.join(allowed)}")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", _default_d_ff(self.d_model, self.mlp))
        _require_positive_int("d_ff", self.d_ff)
        if self.position == "rope":
            if self.head_dim % 2:
                raise ValueError(f"Config.head_dim={self.head_dim} must be even for rope (it rotates pairs)")
            if not (isinstance(self.rope_theta, (int, float)) and 1 < self.rope_theta < float("inf")):
                raise ValueError(f"Config.rope_theta={self.rope_theta!r} must be a finite number > 1")
        if not (isinstance(self.norm_eps, (int, float)) and 0 < self.norm_eps < 1):
            raise ValueError(f"Config.norm_eps={self.norm_eps!r} must be in (0, 1)")
        for field in ("bias", "tie_embeddings", "embed_scale", "norm_unit_offset"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"Config.{field} must be a bool, got {getattr(self, field)!r}")
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
        """Read a Hugging Face `config.json` (a path, or the dict it holds). See `minitx.config.from_hf`."""
        return from_hf(source)


def _require_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Config.{field}={value!r} must be a positive integer")


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
    _llama("mistral-7b", vocab_size=32000, n_ctx=32768, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
           d_ff=14336, norm_eps=1e-5),
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
    # The reference configuration of the benchmarks (issue acceptance criteria name these sizes).
    Config(name="reference", vocab_size=512, n_ctx=256, d_model=256, n_layers=4, n_heads=4),
]}


# --------------------------------------------------------------------------------------------------------------
# Hugging Face config.json

HF_MODEL_TYPES = ("gpt2", "llama", "mistral", "gemma")


def from_hf(source: str | os.PathLike | Mapping[str, Any]) -> Config:
    """Translate a Hugging Face `config.json` (path or dict) into a `Config`.

    Keys missing from the file take the defaults that transformers uses for that model type, e.g. Llama and
    Mistral untie the LM head unless told otherwise, GPT-2 and Gemma tie it. transformers 5 writes `rope_theta`
    inside a `rope_parameters` dict; older files keep it at the top level: both are read.
    Mistral's sliding window is exact for sequences no longer than the window, so n_ctx is capped at it.
    """
    hf = _read_hf_json(source)
    model_type = hf.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"unsupported Hugging Face model_type {model_type!r}; supported: {', '.join(HF_MODEL_TYPES)}")
    name = str(hf.get("_name_or_path") or hf.get("name") or f"hf-{model_type}")
    if model_type == "gpt2":
        d_model = hf.get("n_embd", 768)
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise ValueError(f"GPT-2 activation_function {act!r} is not supported (minitx runs the tanh GELU)")
        if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
            raise ValueError("GPT-2 attention scaled other than by 1/sqrt(head_dim) (scale_attn_weights=False or "
                             "scale_attn_by_inverse_layer_idx=True) is not supported")
        return Config(name=name, vocab_size=hf.get("vocab_size", 50257), n_ctx=hf.get("n_positions", 1024),
                      d_model=d_model, n_layers=hf.get("n_layer", 12), n_heads=hf.get("n_head", 12),
                      d_ff=hf.get("n_inner") or 4 * d_model, norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                      tie_embeddings=hf.get("tie_word_embeddings", True))
    is_gemma = model_type == "gemma"
    defaults = _HF_DEFAULTS[model_type]
    get = lambda key: hf[key] if hf.get(key) is not None else defaults[key]  # noqa: E731 (null means default)
    act = hf.get("hidden_activation") or hf.get("hidden_act") or defaults["hidden_act"]
    activation = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                  "gelu": "gelu_tanh" if is_gemma else None}.get(act)
    if activation is None:
        raise ValueError(f"{model_type} activation {act!r} is not supported; minitx runs silu or the tanh GELU")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError(f"{model_type} with attention_bias/mlp_bias is not supported (minitx's Llama has no biases)")
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", defaults["rope_theta"]))
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))  # "type": old files
    if rope_type not in ("default", None):
        raise ValueError(f"rope_type {rope_type!r} (RoPE scaling) is not supported; minitx runs plain RoPE")
    n_heads = get("num_attention_heads")
    # A key that is absent takes the class default; an explicit null means "as many as query heads" (n_kv_heads)
    # or "hidden_size / heads" (head_dim), as transformers' __init__ does.
    n_kv_heads = hf["num_key_value_heads"] if "num_key_value_heads" in hf else defaults["num_key_value_heads"]
    head_dim = hf["head_dim"] if "head_dim" in hf else defaults["head_dim"]
    window = hf.get("sliding_window", 4096) if model_type == "mistral" else None  # Llama, Gemma 1: no window
    n_ctx = get("max_position_embeddings") if window is None else min(get("max_position_embeddings"), window)
    return Config(name=name, vocab_size=get("vocab_size"), n_ctx=n_ctx,
                  d_model=get("hidden_size"), n_layers=get("num_hidden_layers"), n_heads=n_heads,
                  n_kv_heads=n_kv_heads or n_heads, head_dim=head_dim,
                  d_ff=get("intermediate_size"), norm="rmsnorm", norm_eps=float(get("rms_norm_eps")),
                  mlp="gated", activation=activation, position="rope", rope_theta=float(theta), bias=False,
                  tie_embeddings=bool(get("tie_word_embeddings")), embed_scale=is_gemma,
                  norm_unit_offset=is_gemma)


# transformers' own defaults (LlamaConfig(), MistralConfig(), GemmaConfig()) for keys a file may omit.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=False, hidden_act="silu", num_key_value_heads=None, head_dim=None),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, max_position_embeddings=4096 * 32, rms_norm_eps=1e-6,
                    rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", num_key_value_heads=8,
                    head_dim=None),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=True, hidden_act="gelu_pytorch_tanh", num_key_value_heads=16, head_dim=256),
}


def _read_hf_json(source: str | os.PathLike | Mapping[str, Any]) -> dict:
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"from_hf expects a path to config.json or a dict, got {type(source).__name__}")
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read Hugging Face config {path!r}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} does not hold a JSON object")
    return data
