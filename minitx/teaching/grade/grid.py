"""The configurations every exercise is graded on: small models that change one feature at a time, and real
presets.

A student's formula is called on every case of its exercise; the grader compares the answer with what minitx
counts when it runs the model described (minitx.teaching.grade.truth). The grid is built so that a mistake shows
up as a pattern: each feature a formula can get wrong (grouped-query attention, a free head size, biases, tied
embeddings, the vocabulary's size) is switched on in one small model that is otherwise identical to a base
model of the same family. When the base passes and its sibling fails, the feature is the culprit
(minitx.teaching.grade.diagnose reads the grid that way).

    family   base            siblings (one change each)
    GPT-2    gpt2-style      gpt2-untied, gpt2-no-bias, gpt2-vocab-160
    Llama    llama-style     llama-gqa, llama-mqa, llama-head-dim-16, llama-tied, llama-bias, llama-vocab-160
    odd      gpt2-odd, llama-odd: sizes no formula can round away (V = 101 or 77, 5 or 6 heads, 3 layers)
    real     gpt2, llama-3-8b, mistral-7b, gemma-2b, gemma-7b (their published shapes), run by shape

Small models run for real (float32, or the 16-bit format a case names: allocated, the kernels executed); real
presets run by shape (`Transformer(cfg, shape_only=True)`: the same ops record the same costs, nothing the size
of a weight is allocated).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core.config import Config


def _gpt2(name: str, **changes: Any) -> Config:
    base = dict(vocab_size=96, n_ctx=32, d_model=48, n_layers=2, n_heads=4)
    return Config(name=name, **{**base, **changes})


def _llama(name: str, **changes: Any) -> Config:
    base = dict(vocab_size=96, n_ctx=32, d_model=48, n_layers=2, n_heads=4, d_ff=128, norm="rmsnorm",
                mlp="gated", activation="silu", position="rope", bias=False, tie_embeddings=False)
    return Config(name=name, **{**base, **changes})


SMALL: tuple[Config, ...] = (
    _gpt2("gpt2-style"),
    _gpt2("gpt2-untied", tie_embeddings=False),
    _gpt2("gpt2-no-bias", bias=False),
    _gpt2("gpt2-vocab-160", vocab_size=160),
    _gpt2("gpt2-odd", vocab_size=101, n_ctx=24, d_model=30, n_layers=3, n_heads=5, d_ff=70),
    _llama("llama-style"),
    _llama("llama-gqa", n_kv_heads=2),
    _llama("llama-mqa", n_kv_heads=1),
    _llama("llama-head-dim-16", head_dim=16),
    _llama("llama-tied", tie_embeddings=True),
    _llama("llama-bias", bias=True),
    _llama("llama-vocab-160", vocab_size=160),
    _llama("llama-odd", vocab_size=77, d_model=36, n_layers=3, n_heads=6, n_kv_heads=3, head_dim=10, d_ff=100),
)
SMALL_BY_NAME = {c.name: c for c in SMALL}
PRESETS = ("gpt2", "llama-3-8b", "mistral-7b", "gemma-2b", "gemma-7b")


def features(cfg: Config) -> frozenset[str]:
    """The features of a model a formula can get wrong, in the words a diagnosis uses."""
    out = {"GPT-2 family (learned positions, LayerNorm, GELU MLP)" if cfg.position == "learned" else
           "Llama family (RoPE, RMSNorm, gated MLP)"}
    if cfg.n_kv_heads < cfg.n_heads:
        out.add("GQA/MQA (n_kv_heads < n_heads)")
    if cfg.q_dim != cfg.d_model:
        out.add("head_dim ≠ d_model / n_heads")
    out.add("biases" if cfg.bias else "no biases")
    out.add("tied embeddings (the LM head is the embedding table)" if cfg.tie_embeddings else
            "an untied LM head (its own V×C matrix)")
    return frozenset(out)


@dataclass(frozen=True)
class Case:
    """One call of a student's function: `args` (the model's Config first), and how the truth is obtained."""
    cfg: Config
    args: tuple                           # passed to the student's function, in order
    names: tuple[str, ...]                # the parameter names, for the report ("batch=2, seq_len=7")
    real: bool                            # run for real (allocated, executed); else by shape
    extra: frozenset[str] = field(default=frozenset())   # features of the arguments ("a 16-bit format")

    @property
    def label(self) -> str:
        rest = ", ".join(f"{n}={a:.4g}" if isinstance(a, float) else f"{n}={a!r}"
                         for n, a in zip(self.names[1:], self.args[1:]))
        return f"{self.cfg.name}" + (f", {rest}" if rest else "")

    @property
    def features(self) -> frozenset[str]:
        return features(self.cfg) | self.extra | {"a real model, counted by shape" if self.cfg.name in PRESETS
                                                  else "a small model"}

    def with_args(self, **changes: Any) -> "Case":
        """The same case with some arguments changed (by parameter name): how off-by-one answers are checked."""
        args = tuple(changes.get(n, a) for n, a in zip(self.names, self.args))
        return Case(self.cfg, args, self.names, self.real, self.extra)

    def with_cfg(self, cfg: Config) -> "Case":
        return Case(cfg, (cfg,) + self.args[1:], self.names, self.real, self.extra)

    def arg(self, name: str) -> Any:
        return self.args[self.names.index(name)]

    def to_dict(self) -> dict:
        c = self.cfg
        return {"model": c.name, **{n: a for n, a in zip(self.names[1:], self.args[1:])},
                "config": {k: getattr(c, k) for k in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads",
                                                      "n_kv_heads", "head_dim", "d_ff", "bias", "tie_embeddings",
                                                      "position", "mlp")}}


def preset(name: str) -> Config:
    return Config.preset(name)
