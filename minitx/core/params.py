"""Parameters: the table of named tensors a `Config` implies, one flat buffer, and named views into it.

Everything trainable lives in a single 1-D array (as in llm.c). `params["layers.0.attn.qkv.w"]` is a reshaped
*view* into it, so the optimizer updates the whole model in one loop, zeroing gradients is one `fill`, and the
gradients (and Adam's two moments) reuse exactly the same layout.

Names and shapes (weights are stored (in, out): a linear layer computes x @ w):
    wte                      (V, C)            token embedding; also the LM head when tied
    wpe                      (n_ctx, C)        learned positions (GPT-2 family only)
    layers.{i}.ln_1.w/.b     (C,)              pre-attention norm (.b only for LayerNorm)
    layers.{i}.attn.qkv.w    (C, (NH+2KV)*HS)  queries, keys, values in one matmul; .b if cfg.bias
    layers.{i}.attn.proj.w   (NH*HS, C)        output projection; .b if cfg.bias
    layers.{i}.ln_2.w/.b     (C,)              pre-MLP norm
    layers.{i}.mlp.up.w      (C, F) or (C, 2F) the gated MLP keeps [gate | up] side by side; .b if cfg.bias
    layers.{i}.mlp.down.w    (F, C)            .b if cfg.bias
    ln_f.w/.b                (C,)              final norm
    lm_head.w                (V, C)            only when embeddings are untied (same layout as wte)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .config import Config

# Every parameter belongs to one part of the breakdown that lessons and `minitx params` print.
PARTS = ("embedding", "attention", "mlp", "norm", "lm_head")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    part: str  # one of PARTS

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def param_table(cfg: Config) -> list[ParamSpec]:
    """The ordered list of parameters of `cfg`, built from the configuration alone (allocates nothing)."""
    C, F = cfg.d_model, cfg.d_ff
    up_width = 2 * F if cfg.mlp == "gated" else F
    table = [ParamSpec("wte", (cfg.vocab_size, C), "embedding")]
    if cfg.position == "learned":
        table.append(ParamSpec("wpe", (cfg.n_ctx, C), "embedding"))

    def norm(prefix: str) -> list[ParamSpec]:
        specs = [ParamSpec(f"{prefix}.w", (C,), "norm")]
        if cfg.norm == "layernorm":
            specs.append(ParamSpec(f"{prefix}.b", (C,), "norm"))
        return specs

    def linear(prefix: str, n_in: int, n_out: int, part: str) -> list[ParamSpec]:
        specs = [ParamSpec(f"{prefix}.w", (n_in, n_out), part)]
        if cfg.bias:
            specs.append(ParamSpec(f"{prefix}.b", (n_out,), part))
        return specs

    for i in range(cfg.n_layers):
        p = f"layers.{i}"
        table += norm(f"{p}.ln_1")
        table += linear(f"{p}.attn.qkv", C, cfg.q_dim + 2 * cfg.kv_dim, "attention")
        table += linear(f"{p}.attn.proj", cfg.q_dim, C, "attention")
        table += norm(f"{p}.ln_2")
        table += linear(f"{p}.mlp.up", C, up_width, "mlp")
        table += linear(f"{p}.mlp.down", F, C, "mlp")
    table += norm("ln_f")
    if not cfg.tie_embeddings:
        table.append(ParamSpec("lm_head.w", (cfg.vocab_size, C), "lm_head"))
    return table


def num_params(cfg: Config) -> int:
    """Total parameter count by walking the table (no allocation). `minitx.formulas` has the closed form."""
    return sum(spec.size for spec in param_table(cfg))


class Views(Mapping):
    """Named, reshaped views into one flat buffer laid out as a parameter table: `model.params`, the gradients
    `loss_and_grads` returns, Adam's moments.

    Writing *into* a view writes the buffer that the kernels, the optimizer and checkpoints all read:
    `params["wte"][...] = w` loads a weight, `grads[name] *= 0.5` clips a gradient. Rebinding a name,
    `params["wte"] = w`, would leave the buffer behind (the model would run one array and save another, or a
    kernel would index an array of another shape), so the mapping refuses it."""

    def __init__(self, buffer: np.ndarray, table: list[ParamSpec]):
        self._views, offset = {}, 0
        for spec in table:
            self._views[spec.name] = buffer[offset:offset + spec.size].reshape(spec.shape)
            offset += spec.size
        if offset != buffer.size:
            raise ValueError(f"buffer has {buffer.size} elements but the parameter table needs {offset}")

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __iter__(self):
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __setitem__(self, name: str, value) -> None:
        raise TypeError(f"cannot rebind {name!r}: these arrays are views into one flat buffer; write into the view "
                        f"instead, e.g. x[{name!r}][...] = value")

    def __delitem__(self, name: str) -> None:
        self.__setitem__(name, None)


views = Views


def init_params(cfg: Config, params: dict[str, np.ndarray], seed: int) -> None:
    """GPT-2's initialisation, in place: weights N(0, 0.02), residual projections scaled by 1/sqrt(2L) so the
    residual stream's variance does not grow with depth, biases 0, norm scales 1 (0 for Gemma's (1 + w))."""
    rng = np.random.default_rng(seed)
    for name, p in params.items():
        if ".ln_" in name or name.startswith("ln_f"):
            p[...] = 0.0 if (name.endswith(".w") and cfg.norm_unit_offset) else (1.0 if name.endswith(".w") else 0.0)
        elif name.endswith(".b"):
            p[...] = 0.0
        else:
            std = 0.02 / np.sqrt(2 * cfg.n_layers) if name.endswith(("proj.w", "down.w")) else 0.02
            p[...] = rng.normal(0.0, std, size=p.shape)
