"""Hugging Face checkpoints in and out: `load_hf`, `export_hf`, and the one name table they share.

Two Hugging Face layouts cover every model minitx can run:

    family   HF classes                              weights stored as          minitx stores
    gpt2     GPT2LMHeadModel, GPT2Model              Conv1D (in, out)           (in, out): copied as is
    llama    Llama/Mistral/GemmaForCausalLM, *Model  nn.Linear (out, in)        (in, out): transposed

Where HF keeps separate tensors minitx keeps one, side by side along the output axis, so that one matmul does
the work of several:

    layers.{i}.attn.qkv.w  (C, (NH+2KV)·HS) = [q_proj.T | k_proj.T | v_proj.T]
    layers.{i}.mlp.up.w    (C, 2F)          = [gate_proj.T | up_proj.T]

Everything else is a rename. Gemma's norm weights need no conversion: HF stores w and applies (1 + w), and so
does minitx when `cfg.norm_unit_offset` is set.

`name_map(cfg)` is the single table of (minitx name, HF names, widths, layout) that both directions read, so
loading and exporting cannot drift apart. Non-goals: sharded checkpoints, HF's own quantized formats (GPTQ, AWQ,
bitsandbytes), and the tokenizer.

Precision. `load_hf(..., dtype="bfloat16")` keeps a 16-bit checkpoint in 16 bits (a float32 one is rounded to
it); `weight_dtype="int8"/"int4"` quantizes each layer matrix straight from the checkpoint's own numbers, one
matrix at a time (minitx.core.quantize), so no float copy of the model is ever built. `export_hf` writes every
tensor in the model's format, and a quantized model's matrices as q · scale in float32, which is exact: loading
that back with the same weight_dtype and group_size gives the same integers and scales (minitx.core.quantize,
"Rounding").
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .. import dtypes
from ..core.config import Config
from ..core.model import Transformer
from ..core.params import param_table
from ..core.quantize import quantize_into
from .hf_config import hf_family

# Non-parameter buffers some checkpoints carry: GPT-2's causal mask and its fill value, and RoPE's inverse
# frequencies in older Llama files. minitx rebuilds all of them from the config, so they are skipped.
_BUFFERS = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$")


@dataclass(frozen=True)
class NameMap:
    """One minitx parameter and the Hugging Face tensor(s) it is stored as.

    hf      the HF names; when there are several, minitx holds them side by side along its last (output) axis
    widths  each HF tensor's share of that axis, in order (sums to shape[-1])
    linear  HF stores them as torch.nn.Linear's (out, in), the transpose of minitx's (in, out)
    """
    minitx: str
    shape: tuple[int, ...]
    hf: tuple[str, ...]
    widths: tuple[int, ...]
    linear: bool

    def hf_shapes(self) -> list[tuple[int, ...]]:
        """The shape HF stores each of `self.hf` with."""
        if self.linear:
            return [(w, self.shape[0]) for w in self.widths]
        return [self.shape[:-1] + (w,) for w in self.widths]

    def to_minitx(self, tensors: list[np.ndarray]) -> np.ndarray:
        """HF tensors (in `self.hf` order) -> the minitx array."""
        parts = [t.T for t in tensors] if self.linear else list(tensors)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def to_hf(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """The minitx array -> {HF name: fresh C-ordered array}; copies, so later updates don't leak in."""
        cuts = np.cumsum(self.widths)[:-1]
        parts = np.split(array, cuts, axis=-1)
        return {name: np.array(p.T if self.linear else p, order="C", copy=True) for name, p in zip(self.hf, parts)}


def name_map(cfg: Config, base: str | None = None) -> list[NameMap]:
    """Every minitx parameter of `cfg` with the HF tensors it comes from, in minitx's parameter order.

    `base` is the prefix of the base model's tensors: "transformer." (GPT2LMHeadModel) or "model."
    (LlamaForCausalLM) by default, "" for checkpoints of the bare GPT2Model / LlamaModel. `lm_head.weight`
    never has it. Tied models have no `lm_head` entry: the embedding is the head.
    """
    family = hf_family(cfg)
    if base is None:
        base = "transformer." if family == "gpt2" else "model."
    shapes = {spec.name: spec.shape for spec in param_table(cfg)}
    table: list[NameMap] = []

    def add(minitx: str, hf: str | tuple[str, ...], widths: tuple[int, ...] | None = None,
            linear: bool = False) -> None:
        hf = (hf,) if isinstance(hf, str) else hf
        shape = shapes[minitx]
        table.append(NameMap(minitx, shape, hf, widths or (shape[-1],), linear))

    if family == "gpt2":
        add("wte", f"{base}wte.weight")
        add("wpe", f"{base}wpe.weight")
        for i in range(cfg.n_layers):
            n, h = f"layers.{i}", f"{base}h.{i}"
            for ours, theirs in (("ln_1", "ln_1"), ("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                 ("ln_2", "ln_2"), ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
                add(f"{n}.{ours}.w", f"{h}.{theirs}.weight")  # Conv1D is already (in, out)
                add(f"{n}.{ours}.b", f"{h}.{theirs}.bias")
        add("ln_f.w", f"{base}ln_f.weight")
        add("ln_f.b", f"{base}ln_f.bias")
    else:
        add("wte", f"{base}embed_tokens.weight")
        F = cfg.d_ff
        for i in range(cfg.n_layers):
            n, h = f"layers.{i}", f"{base}layers.{i}"
            add(f"{n}.ln_1.w", f"{h}.input_layernorm.weight")
            add(f"{n}.attn.qkv.w", tuple(f"{h}.self_attn.{x}_proj.weight" for x in "qkv"),
                (cfg.q_dim, cfg.kv_dim, cfg.kv_dim), linear=True)
            add(f"{n}.attn.proj.w", f"{h}.self_attn.o_proj.weight", linear=True)
            add(f"{n}.ln_2.w", f"{h}.post_attention_layernorm.weight")
            add(f"{n}.mlp.up.w", (f"{h}.mlp.gate_proj.weight", f"{h}.mlp.up_proj.weight"), (F, F), linear=True)
            add(f"{n}.mlp.down.w", f"{h}.mlp.down_proj.weight", linear=True)
        add("ln_f.w", f"{base}norm.weight")
    if not cfg.tie_embeddings:
        # nn.Linear(C, V) stores (V, C): already minitx's lm_head layout (the logits are x @ lm_head.w.T).
        add("lm_head.w", "lm_head.weight")
    assert [m.minitx for m in table] == list(shapes), "name_map must cover every parameter, in order"
    return table


# ---- loading ----------------------------------------------------------------------------------------------------

class HFLoadError(ValueError):
    """A Hugging Face checkpoint minitx cannot load; the message names the file (or "state dict") and the
    problem. Every failure to read or fit a checkpoint is one of these, whatever library read the file."""


# What a checkpoint's weights may be stored in (real ones ship in bfloat16 or float16); all are cast on loading.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def load_hf(config: str | os.PathLike | Mapping[str, Any] | Config, state_dict: str | os.PathLike | Mapping,
            dtype: str = "float32", *, weight_dtype: str | None = None, group_size: int = 128) -> Transformer:
    """A `Transformer` holding a Hugging Face checkpoint's weights.

    config      a `config.json` path (or its folder), the dict it holds, or a minitx `Config`
    state_dict  name -> array (HF names and layouts), or a path to a `.safetensors` or `.npz` file.
                Keys may lack the base-model prefix ("transformer." / "model."), as GPT2Model/LlamaModel save them.
                Non-parameter buffers (GPT-2's attn.bias / attn.masked_bias, rotary_emb.inv_freq) are ignored.
                Tied models may include `lm_head.weight` only if it equals the embedding.
    dtype       the model's float type (float32, float64, or bfloat16 / float16 for inference); weights stored
                in float16, bfloat16, float32 or float64 are cast to it
    weight_dtype None, or "int8" / "int4": the layers' matrices quantized on the way in, with one float16
                scale per `group_size` inputs (minitx.quantize), from the checkpoint's numbers directly

    Raises HFLoadError (a ValueError) naming the file and listing every missing, unknown, misshapen or
    non-float tensor, and any that holds NaN or inf (after the cast).
    """
    cfg = config if isinstance(config, Config) else Config.from_hf(config)
    where = os.fspath(state_dict) if isinstance(state_dict, (str, os.PathLike)) else "state dict"
    tensors = _read_state_dict(state_dict, where)
    table = name_map(cfg, base=_guess_base(cfg, tensors))
    _check_names_and_shapes(cfg, table, tensors, where)
    model = Transformer(cfg, dtype=dtype, weight_dtype=weight_dtype, group_size=group_size, init=False)
    bad_dtype, non_finite = [], []
    for entry in table:
        parts = [np.asarray(tensors[name]) for name in entry.hf]
        bad = [f"{name} ({p.dtype})" for name, p in zip(entry.hf, parts) if _float_name(p.dtype) is None]
        if bad:
            bad_dtype += bad
            continue
        if entry.minitx in model.quantized:       # one matrix in float64 at a time, quantized from the file's values
            matrix = entry.to_minitx([p.astype(np.float64) for p in parts])
            if not np.all(np.isfinite(matrix)):
                non_finite.append(_describe_non_finite(entry, parts, np.dtype(np.float64)))
            else:
                quantize_into(matrix, model.quantized[entry.minitx])
            continue
        dst = model.params[entry.minitx]
        with np.errstate(over="ignore"):        # a float64 value beyond float32's range is reported just below
            dst[...] = entry.to_minitx([p.astype(model.dtype) for p in parts])
        if not np.all(np.isfinite(dst)):
            non_finite.append(_describe_non_finite(entry, parts, model.dtype))
    if bad_dtype:
        raise HFLoadError(f"{where}: weights must be stored in {', '.join(FLOAT_DTYPES)}; these are not: "
                          f"{', '.join(bad_dtype)} (.npz files cannot mark bfloat16: save those as .safetensors)")
    if non_finite:
        raise HFLoadError(f"{where}: weights hold NaN or inf: " + "; ".join(non_finite))
    return model


def _float_name(dtype: np.dtype) -> str | None:
    try:
        name = dtypes.name(dtype)
    except ValueError:
        return None
    return name if name in FLOAT_DTYPES else None


def _read_state_dict(source, where: str) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"state_dict must be a mapping name -> array or a path, got {type(source).__name__}")
    path = where
    if path.endswith(".safetensors"):
        try:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file  # optional: only needed for .safetensors files
        except ImportError:
            raise ImportError(f"reading {path!r} needs the safetensors package: pip install safetensors") from None
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise HFLoadError(f"{path}: not a readable .safetensors file: {getattr(e, 'strerror', None) or e}") \
                from None
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:  # never unpickle: a checkpoint is data, not code
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise HFLoadError(f"{path}: not a readable .npz file: {getattr(e, 'strerror', None) or e}") from None
    raise HFLoadError(f"{path}: a state_dict path must end in .safetensors or .npz")


def _guess_base(cfg: Config, tensors: Mapping) -> str:
    """The prefix the checkpoint's base-model tensors carry: "transformer."/"model.", or "" for a bare base
    model's checkpoint (no key has the prefix, yet there are keys besides the head)."""
    prefix = "transformer." if hf_family(cfg) == "gpt2" else "model."
    names = [str(name) for name in tensors]
    bare = not any(n.startswith(prefix) for n in names) and any(n != "lm_head.weight" for n in names)
    return "" if bare else prefix


def _check_names_and_shapes(cfg: Config, table: list[NameMap], tensors: Mapping, where: str) -> None:
    """Raise one ValueError that lists every missing, unknown and misshapen tensor (not just the first)."""
    required = {name: shape for entry in table for name, shape in zip(entry.hf, entry.hf_shapes())}
    # A tied model's head is optional: PyTorch's state_dict() lists the shared tensor, save_pretrained drops it.
    optional = {"lm_head.weight": (cfg.vocab_size, cfg.d_model)} if cfg.tie_embeddings else {}
    known = required | optional
    missing = sorted(name for name in required if name not in tensors)
    unknown = sorted(str(name) for name in tensors if name not in known and not _BUFFERS.search(str(name)))
    misshapen = [f"{name}: expected {shape}, got {np.shape(tensors[name])}"
                 for name, shape in known.items() if name in tensors and np.shape(tensors[name]) != shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {len(unknown)}: {', '.join(unknown)}")
    if misshapen:
        problems.append(f"misshapen {len(misshapen)}: {'; '.join(misshapen)}")
    wte_name = table[0].hf[0]
    if (optional and not problems and "lm_head.weight" in tensors
            and not np.array_equal(tensors["lm_head.weight"], tensors[wte_name], equal_nan=True)):
        problems.append(f"lm_head.weight differs from {wte_name}, but the config ties them "
                        "(tie_word_embeddings=True)")
    if problems:
        raise HFLoadError(f"{where} does not fit config {cfg.name!r} ({hf_family(cfg)} layout, "
                         f"{cfg.n_layers} layers): " + "; ".join(problems))


def _describe_non_finite(entry: NameMap, parts: list[np.ndarray], dtype: np.dtype) -> str:
    """Name the HF tensor that holds NaN/inf (or overflows when cast), not just the minitx one it feeds."""
    with np.errstate(over="ignore"):
        bad = [name for name, p in zip(entry.hf, parts) if not np.all(np.isfinite(p.astype(dtype)))]
    return f"{', '.join(bad)} (-> minitx {entry.minitx}, {dtype})"


# ---- exporting --------------------------------------------------------------------------------------------------

def export_hf(model: Transformer, tensors: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """`model.params` (or any dict keyed like it: gradients, Adam's m or v) under HF names and layouts.

    The names are those of the ...ForCausalLM classes ("transformer." / "model." prefixes). For a tied model
    there is no `lm_head.weight`, as `save_pretrained` writes it, and for gradients the embedding's entry
    holds both the input and output contributions, as PyTorch's single shared parameter does. The arrays are
    fresh copies in the tensors' own dtype; `load_hf(hf_config(model.cfg), export_hf(model))` rebuilds every
    parameter bit for bit.
    """
    # a quantized model's matrices: q · scale, exactly, in float32 (HF checkpoints hold float weights)
    source = {**model.params, **{name: qw.dequantize() for name, qw in model.quantized.items()}} \
        if tensors is None else tensors
    table = name_map(model.cfg)
    wanted = {entry.minitx: entry.shape for entry in table}
    missing = sorted(set(wanted) - set(source))
    unknown = sorted(set(source) - set(wanted))
    misshapen = [f"{n}: expected {wanted[n]}, got {np.shape(source[n])}"
                 for n in wanted if n in source and np.shape(source[n]) != wanted[n]]
    if missing or unknown or misshapen:
        raise ValueError(f"tensors must be keyed and shaped like model.params; missing {missing}, "
                         f"unknown {unknown}, misshapen {misshapen}")
    out: dict[str, np.ndarray] = {}
    for entry in table:
        out.update(entry.to_hf(np.asarray(source[entry.minitx])))
    return out
