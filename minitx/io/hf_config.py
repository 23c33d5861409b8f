"""Hugging Face `config.json`, read and written: the fields of a minitx Config from one, and one from a Config.

    config_fields(path_or_dict) -> {field: value}    what `Config.from_hf` builds a Config from
    hf_config(cfg)              -> dict              a minimal config.json that `Config.from_hf` reads back
    hf_family(cfg)              -> "gpt2" | "llama"  the Hugging Face layout that can hold a config

This module works on plain dicts and on anything with a Config's fields; it does not import the Config class, so
`minitx.core.config` can use it without a cycle.

Reading is strict: every key has the JSON type transformers writes (an int, a float, a bool, a string, an
object), checked before it is used, and a wrong one is a ValueError naming the key: "false" (a string) is not
False, 0 key/value heads are not "as many as query heads", RoPE scaling in any form is refused rather than
silently run as plain RoPE. Keys missing from the file take the defaults transformers uses for that model type
(Llama and Mistral untie the LM head unless told otherwise; GPT-2 and Gemma tie it). transformers 5 writes
`rope_theta` inside a `rope_parameters` object; older files keep it at the top level: both are read.
Mistral's `sliding_window` (4,096 when absent, none when null) becomes Config.sliding_window.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

MODEL_TYPES = ("gpt2", "llama", "mistral", "gemma")
MAX_BYTES = 1 << 20          # a config.json is a few kB; anything past 1 MiB is not one (and /dev/zero never ends)

# transformers' own defaults (GPT2Config(), LlamaConfig(), MistralConfig(), GemmaConfig()) for keys a file omits.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 layer_norm_epsilon=1e-5, activation_function="gelu_new", tie_word_embeddings=True,
                 scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False),
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=False, hidden_act="silu", num_key_value_heads=None, head_dim=None),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, max_position_embeddings=4096 * 32, rms_norm_eps=1e-6,
                    rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", num_key_value_heads=8,
                    head_dim=None, sliding_window=4096),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=True, hidden_act="gelu_pytorch_tanh", num_key_value_heads=16, head_dim=256),
}
_GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


class _Fields:
    """Typed access to one config.json: `get(key, kind)` returns the file's value (or the model type's default
    when the key is absent or null) after checking its JSON type, else raises naming the key."""

    def __init__(self, hf: Mapping[str, Any], model_type: str, where: str):
        self.hf, self.defaults, self.where = hf, _DEFAULTS[model_type], where

    def get(self, key: str, kind: str, null_means_default: bool = True):
        value = self.hf.get(key)
        if key not in self.hf or (value is None and null_means_default):
            value = self.defaults.get(key)
        if value is None:
            return None
        ok = {"int": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
              "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
              "bool": isinstance(value, bool),
              "str": isinstance(value, str)}[kind]
        if not ok:
            what = {"int": "a positive integer", "float": "a finite number", "bool": "true or false",
                    "str": "a string"}[kind]
            raise ValueError(f"{self.where}: {key}={value!r} must be {what}")
        return value

    def object(self, key: str) -> dict:
        value = self.hf.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"{self.where}: {key} must be a JSON object or null, got {value!r}")
        return value


def config_fields(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a minitx Config described by a Hugging Face `config.json` (path, folder or dict)."""
    hf, where = _read(source)
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{where}: unsupported Hugging Face model_type {model_type!r}; supported: "
                         f"{', '.join(MODEL_TYPES)}")
    f = _Fields(hf, model_type, where)
    name = f.get("_name_or_path", "str") or f.get("name", "str") or f"hf-{model_type}"
    if model_type == "gpt2":
        act = f.get("activation_function", "str")
        if act not in _GPT2_ACTIVATIONS:
            raise ValueError(f"{where}: GPT-2 activation_function {act!r} is not supported (minitx runs the tanh "
                             "GELU)")
        if not f.get("scale_attn_weights", "bool") or f.get("scale_attn_by_inverse_layer_idx", "bool"):
            raise ValueError(f"{where}: GPT-2 attention scaled other than by 1/sqrt(head_dim) "
                             "(scale_attn_weights=false or scale_attn_by_inverse_layer_idx=true) is not supported")
        if "n_inner" in hf and hf["n_inner"] is not None:
            f.get("n_inner", "int")                              # 0 or "3072" is a mistake, not "the default"
        d_model = f.get("n_embd", "int")
        return dict(name=name, vocab_size=f.get("vocab_size", "int"), n_ctx=f.get("n_positions", "int"),
                    d_model=d_model, n_layers=f.get("n_layer", "int"), n_heads=f.get("n_head", "int"),
                    d_ff=f.get("n_inner", "int") or 4 * d_model, norm_eps=float(f.get("layer_norm_epsilon", "float")),
                    tie_embeddings=f.get("tie_word_embeddings", "bool"))
    is_gemma = model_type == "gemma"
    act = f.get("hidden_activation", "str") or f.get("hidden_act", "str")
    activation = _ACTIVATIONS.get(act, "gelu_tanh" if is_gemma and act == "gelu" else None)
    if activation is None:
        raise ValueError(f"{where}: {model_type} activation {act!r} is not supported; minitx runs silu or the tanh "
                         "GELU")
    for key in ("attention_bias", "mlp_bias"):
        if key in hf and hf[key] is not None and f.get(key, "bool"):
            raise ValueError(f"{where}: {model_type} with {key}=true is not supported (minitx's Llama has no "
                             "biases)")
    rope, scaling = f.object("rope_parameters"), f.object("rope_scaling")
    if "rope_scaling" in hf and hf["rope_scaling"] is not None and not scaling.get("rope_type", scaling.get("type")):
        raise ValueError(f"{where}: rope_scaling {hf['rope_scaling']!r} names no type; minitx runs plain RoPE only")
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))   # "type": old files
    if rope_type not in ("default", None):
        raise ValueError(f"{where}: rope_type {rope_type!r} (RoPE scaling) is not supported; minitx runs plain RoPE")
    theta = _Fields(rope, model_type, f"{where}: rope_parameters").get("rope_theta", "float") if "rope_theta" in rope \
        else f.get("rope_theta", "float")
    n_heads = f.get("num_attention_heads", "int")
    # An absent key takes the class default; an explicit null means "as many as query heads" (n_kv_heads) or
    # "hidden_size / heads" (head_dim), as transformers' __init__ does. 0 means neither: it is an error.
    n_kv_heads = f.get("num_key_value_heads", "int", null_means_default=False)
    head_dim = f.get("head_dim", "int", null_means_default=False)
    n_ctx = f.get("max_position_embeddings", "int")
    window = f.get("sliding_window", "int", null_means_default=False) if model_type == "mistral" else None
    return dict(sliding_window=window, name=name, vocab_size=f.get("vocab_size", "int"), n_ctx=n_ctx,
                d_model=f.get("hidden_size", "int"),
                n_layers=f.get("num_hidden_layers", "int"), n_heads=n_heads, n_kv_heads=n_kv_heads or n_heads,
                head_dim=head_dim, d_ff=f.get("intermediate_size", "int"), norm="rmsnorm",
                norm_eps=float(f.get("rms_norm_eps", "float")), mlp="gated", activation=activation, position="rope",
                rope_theta=float(theta), bias=False, tie_embeddings=f.get("tie_word_embeddings", "bool"),
                embed_scale=is_gemma, norm_unit_offset=is_gemma)


def _read(source: str | os.PathLike | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """(the config dict, how to name it in errors)."""
    if isinstance(source, Mapping):
        return source, "Hugging Face config"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"from_hf expects a path to config.json or a dict, got {type(source).__name__}")
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read Hugging Face config {path!r}: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path!r} is larger than {MAX_BYTES:,} bytes: not a config.json")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path!r} is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None
    except ValueError as e:              # e.g. an integer of thousands of digits
        raise ValueError(f"{path!r} is not a usable JSON config: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} does not hold a JSON object")
    return data, path


def hf_family(cfg) -> str:
    """"gpt2" or "llama" (Llama, Mistral, Gemma): the HF layout that can hold `cfg`, or ValueError if none can."""
    gpt2 = dict(position="learned", norm="layernorm", mlp="standard", activation="gelu_tanh", bias=True,
                n_kv_heads=cfg.n_heads, q_dim=cfg.d_model, embed_scale=False, norm_unit_offset=False,
                sliding_window=None)
    llama = dict(position="rope", norm="rmsnorm", mlp="gated", bias=False)
    for family, needs in (("gpt2", gpt2), ("llama", llama)):
        if all(getattr(cfg, field) == value for field, value in needs.items()):
            if family == "llama" and cfg.embed_scale != cfg.norm_unit_offset:
                raise ValueError("Hugging Face has no model with only one of Gemma's embed_scale and "
                                 "norm_unit_offset; set both (gemma) or neither (llama)")
            if family == "llama" and cfg.embed_scale and cfg.sliding_window:
                raise ValueError("Hugging Face's Gemma (1) has no sliding window; Mistral's layout holds one")
            return family
    describe = lambda needs: ", ".join(f"{k}={v!r}" for k, v in needs.items())  # noqa: E731
    raise ValueError(f"config {cfg.name!r} has no Hugging Face layout: GPT-2 needs {describe(gpt2)}; "
                     f"Llama/Gemma needs {describe(llama)}")


def hf_config(cfg) -> dict[str, Any]:
    """A minimal HF `config.json` dict describing `cfg`; `Config.from_hf` of it gives `cfg` back.

    model_type is gpt2, gemma (when embed_scale and norm_unit_offset are set), mistral (with a sliding window) or
    llama. `rope_theta` is
    written both at the top level (transformers 4) and in `rope_parameters` (transformers 5).
    Raises ValueError for configs no HF model can express (see `hf_family`).
    """
    if hf_family(cfg) == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "_name_or_path": cfg.name,
                "vocab_size": cfg.vocab_size, "n_positions": cfg.n_ctx, "n_embd": cfg.d_model,
                "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.d_ff,
                "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
                "tie_word_embeddings": cfg.tie_embeddings}
    gemma = cfg.embed_scale  # hf_family guarantees norm_unit_offset matches
    kind = "gemma" if gemma else "mistral" if cfg.sliding_window else "llama"
    act = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}[cfg.activation]
    out = {"model_type": kind, "architectures": [kind.capitalize() + "ForCausalLM"], "_name_or_path": cfg.name,
           "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.n_ctx, "hidden_size": cfg.d_model,
           "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
           "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
           "rms_norm_eps": cfg.norm_eps, "hidden_act": act, "rope_theta": cfg.rope_theta,
           "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
           "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": cfg.tie_embeddings}
    if gemma:
        out["hidden_activation"] = act  # the key transformers 4.x reads for Gemma
    if kind == "mistral":
        out["sliding_window"] = cfg.sliding_window
    return out
