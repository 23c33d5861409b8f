"""Small, valid minitx configurations for the tests: hypothesis strategies that draw them (property-based tests
check a claim on many configurations, not one hand-picked example), input shapes, and a few fixed tiny configs.

Import from any test module (tests/conftest.py puts this directory on sys.path):

    from hypothesis import given
    from strategies import configs, shapes, config_and_shape, TINY_GPT2

    @given(configs(family="llama"))
    def test_something(cfg): ...

    @given(config_and_shape())
    def test_other(cfg_bt):
        cfg, (B, T) = cfg_bt

Every drawn `Config` is valid (construction never raises) and tiny: vocab ≤ 40, d_model ≤ 24, ≤ 2 layers,
n_ctx ≤ 12, so a model builds and runs forward and backward in milliseconds.

Families (`family=`):
    "gpt2"   layernorm, standard MLP with tanh GELU, learned positions, biases, tied embeddings, multi-head,
             head_dim = d_model / n_heads (odd sizes included)
    "llama"  rmsnorm, gated MLP (SwiGLU or GeGLU), RoPE, no biases, tied or untied, multi-head / GQA / MQA,
             head_dim free (often ≠ d_model / n_heads; always even), Gemma's embed_scale and (1 + w) norm drawn
             independently
    "any"    every switch drawn independently (e.g. layernorm + RoPE + gated MLP + biases): combinations no
             published model uses but Config accepts, so the code must handle them
    None     (default) "gpt2" or "llama"

Fixed tiny configs (`TINY_GPT2`, `TINY_LLAMA`, `TINY_GEMMA`, all three in `TINY`) are at the end of this module:
one per family, for tests that want a known config rather than a drawn one. Tests may rely on their switches
(family, attention layout, tied or not) but not on their sizes; a test whose numbers depend on particular sizes
declares its own config and says why.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minitx import Config

FAMILIES = ("gpt2", "llama", "any")

# Ceilings that keep every drawn model tiny. Tests may rely on these.
MAX_VOCAB = 40
MAX_CTX = 12
MAX_LAYERS = 2
MAX_BATCH = 3


@st.composite
def _heads(draw, free_head_dim: bool, allow_gqa: bool, even: bool):
    """(n_heads, n_kv_heads, d_model, head_dim_arg): head_dim_arg is None when head_dim = d_model / n_heads.
    `even` (needed by RoPE, which rotates pairs) rules out odd head sizes."""
    n_heads = draw(st.sampled_from([1, 2, 4]))
    if allow_gqa:
        n_kv_heads = draw(st.sampled_from([k for k in (1, 2, 4) if n_heads % k == 0]))  # MQA, GQA or MHA
    else:
        n_kv_heads = n_heads
    head_dim = draw(st.sampled_from([2, 4, 6] if even else [2, 3, 4, 5, 6]))
    if free_head_dim and draw(st.booleans()):
        d_model = draw(st.sampled_from([8, 12, 16, 20]))
        return n_heads, n_kv_heads, d_model, head_dim          # head_dim set explicitly, often ≠ d_model / NH
    d_model = n_heads * head_dim
    if d_model < 4:                                             # keep at least a few channels
        d_model = 4 * n_heads
    return n_heads, n_kv_heads, d_model, None


@st.composite
def configs(draw, family: str | None = None, max_layers: int = MAX_LAYERS, max_ctx: int = MAX_CTX) -> Config:
    """A small valid `Config` of the given family (see the module docstring). `max_layers`, `max_ctx` lower the
    ceilings further for expensive tests."""
    if family is None:
        family = draw(st.sampled_from(["gpt2", "llama"]))
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; choose one of {FAMILIES} or None")
    common = dict(
        vocab_size=draw(st.integers(3, MAX_VOCAB)),
        n_ctx=draw(st.integers(2, max_ctx)),
        n_layers=draw(st.integers(1, max_layers)),
        norm_eps=draw(st.sampled_from([1e-5, 1e-6, 1e-3])),
        name=f"drawn-{family}",
    )
    if family == "gpt2":
        n_heads, n_kv_heads, d_model, head_dim = draw(_heads(free_head_dim=False, allow_gqa=False, even=False))
        mlp_ratio = draw(st.sampled_from([None, 2]))          # None = the default 4 · d_model
        return Config(d_model=d_model, n_heads=n_heads, d_ff=None if mlp_ratio is None else mlp_ratio * d_model,
                      norm="layernorm", mlp="standard", activation="gelu_tanh", position="learned", bias=True,
                      tie_embeddings=True, **common)
    if family == "llama":
        n_heads, n_kv_heads, d_model, head_dim = draw(_heads(free_head_dim=True, allow_gqa=True, even=True))
        return Config(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
                      d_ff=draw(st.sampled_from([None, 8, 12, 24])), norm="rmsnorm", mlp="gated",
                      activation=draw(st.sampled_from(["silu", "gelu_tanh"])), position="rope",
                      rope_theta=draw(st.sampled_from([10000.0, 100.0, 1e6])), bias=False,
                      tie_embeddings=draw(st.booleans()), embed_scale=draw(st.booleans()),
                      norm_unit_offset=draw(st.booleans()), **common)
    # "any": every switch independent
    position = draw(st.sampled_from(["learned", "rope"]))
    n_heads, n_kv_heads, d_model, head_dim = draw(_heads(free_head_dim=True, allow_gqa=True,
                                                         even=position == "rope"))
    norm = draw(st.sampled_from(["layernorm", "rmsnorm"]))
    return Config(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
                  d_ff=draw(st.sampled_from([None, 8, 12])), norm=norm,
                  mlp=draw(st.sampled_from(["standard", "gated"])),
                  activation=draw(st.sampled_from(["silu", "gelu_tanh"])),
                  position=position, bias=draw(st.booleans()),
                  tie_embeddings=draw(st.booleans()), embed_scale=draw(st.booleans()),
                  norm_unit_offset=norm == "rmsnorm" and draw(st.booleans()), **common)


def shapes(cfg: Config, max_batch: int = MAX_BATCH, max_len: int | None = None) -> st.SearchStrategy[tuple[int, int]]:
    """(B, T) valid for `cfg`: 1 ≤ B ≤ max_batch, 1 ≤ T ≤ min(cfg.n_ctx, max_len)."""
    top = cfg.n_ctx if max_len is None else min(cfg.n_ctx, max_len)
    return st.tuples(st.integers(1, max_batch), st.integers(1, top))


@st.composite
def config_and_shape(draw, family: str | None = None, max_layers: int = MAX_LAYERS, max_batch: int = MAX_BATCH):
    """(cfg, (B, T)): a drawn config and a shape valid for it."""
    cfg = draw(configs(family=family, max_layers=max_layers))
    return cfg, draw(shapes(cfg, max_batch=max_batch))


def token_arrays(cfg: Config, shape: tuple[int, int]) -> st.SearchStrategy:
    """An int64 array of ids in [0, vocab_size) with the given (B, T) shape."""
    return arrays(np.int64, shape, elements=st.integers(0, cfg.vocab_size - 1))


# ---- fixed tiny configs ----------------------------------------------------------------------------------------
# Sizes differ wherever code could confuse two of them: vocab_size, n_ctx, d_model and d_ff are all unequal (so a
# transposed table or a swapped axis has the wrong shape), and in the Llama and Gemma configs head_dim ≠
# d_model / n_heads, so q_dim = n_heads·head_dim (24) ≠ d_model (8).

TINY_GPT2 = Config(name="test-gpt2", vocab_size=11, n_ctx=9, d_model=8, n_layers=2, n_heads=2)
"""GPT-2 family: LayerNorm, standard MLP with tanh GELU (d_ff = 4·d_model), learned positions, biases on every
linear layer, tied embeddings, multi-head attention (n_kv_heads = n_heads) with head_dim = d_model / n_heads."""

TINY_LLAMA = Config(name="test-llama", vocab_size=13, n_ctx=9, d_model=8, n_layers=2, n_heads=4, n_kv_heads=2,
                    head_dim=6, d_ff=10, norm="rmsnorm", mlp="gated", activation="silu", position="rope",
                    bias=False, tie_embeddings=False)
"""Llama family: RMSNorm, gated MLP with SiLU (SwiGLU), RoPE, no biases, untied LM head, grouped-query attention
(4 query heads share 2 key/value heads), head_dim 6 ≠ d_model / n_heads = 2."""

TINY_GEMMA = TINY_LLAMA.replace(name="test-gemma", n_kv_heads=1, activation="gelu_tanh", tie_embeddings=True,
                                embed_scale=True, norm_unit_offset=True)
"""Gemma: TINY_LLAMA's layout with multi-query attention (one key/value head for all 4 query heads), GeGLU (gated
tanh GELU), tied embeddings scaled by sqrt(d_model) on the way in, and RMSNorm scaling by (1 + w)."""

TINY = {"gpt2": TINY_GPT2, "llama-gqa": TINY_LLAMA, "gemma-mqa": TINY_GEMMA}
"""The three fixed configs keyed by what they cover (usable as pytest ids)."""
