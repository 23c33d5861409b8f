"""Bad input fails loudly and early: a ValueError or TypeError whose message names the argument, raised
before any Numba kernel runs (the kernels index without bounds checks, so an id that got through could read or
write outside an array instead of failing).

Covers: token ids and targets (range, shape, dtype, emptiness, length), every validation rule of
Config.__post_init__, presets, Transformer's dtype and cfg, AdamW's hyper-parameters and the gradients it is given.
A rejected optimizer step must leave the parameters and Adam's state untouched.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from minitx import AdamW, Config, Transformer
from minitx.core.config import PRESETS
from strategies import TINY_GPT2

# GPT-2 family: LayerNorm (the "unit offset with layernorm" case needs it), head_dim, d_ff and n_kv_heads at their
# defaults (test_replace_derives_the_derived_sizes_again needs that). Bad ids and lengths are derived from its sizes.
CFG = TINY_GPT2
V, N_CTX = CFG.vocab_size, CFG.n_ctx


@pytest.fixture(scope="module")
def model():
    return Transformer(CFG, dtype="float64")


GOOD = np.array([[1, 2, 3], [4, 5, 6]]) % V


# ---- token ids -----------------------------------------------------------------------------------------------

BAD_TOKENS = {
    # name: (tokens, exception, words the message must contain)
    "negative id": (np.array([[1, -1, 2]]), ValueError, ["tokens", "-1", "vocab_size"]),
    "id == vocab_size": (np.array([[1, V, 2]]), ValueError, ["tokens", str(V), "vocab_size"]),
    "huge id": (np.array([[2**62]]), ValueError, ["tokens", str(2**62)]),
    "uint64 max": (np.array([[np.iinfo(np.uint64).max]], dtype=np.uint64), ValueError, ["tokens", "vocab_size"]),
    "int8 negative": (np.array([[3, -128]], dtype=np.int8), ValueError, ["tokens", "-128"]),
    "T > n_ctx": (np.zeros((1, N_CTX + 1), dtype=np.int64), ValueError, ["tokens", f"T={N_CTX + 1}", f"n_ctx={N_CTX}"]),
    "1-D": (np.array([1, 2, 3]), ValueError, ["tokens", "(B, T)", "(3,)"]),
    "3-D": (np.zeros((1, 2, 3), dtype=np.int64), ValueError, ["tokens", "(B, T)"]),
    "0-D": (np.int64(3), ValueError, ["tokens", "(B, T)"]),
    "float": (np.array([[1.0, 2.0]]), TypeError, ["tokens", "float64"]),
    "float that looks like ints": (np.array([[1.0]], dtype=np.float32), TypeError, ["tokens", "float32"]),
    "NaN": (np.array([[np.nan]]), TypeError, ["tokens", "float64"]),
    "bool": (np.array([[True, False]]), TypeError, ["tokens", "bool"]),
    "strings": (np.array([["a", "b"]]), TypeError, ["tokens"]),
    "object": (np.array([[1, None]], dtype=object), TypeError, ["tokens", "object"]),
    "None": (None, TypeError, ["tokens"]),
    "empty batch": (np.zeros((0, 3), dtype=np.int64), ValueError, ["tokens", "non-empty"]),
    "empty sequence": (np.zeros((2, 0), dtype=np.int64), ValueError, ["tokens", "non-empty"]),
    "empty list": ([], TypeError, ["tokens", "float64"]),   # np.asarray([]) is float64: rejected by dtype
    "ragged list": ([[1, 2], [3]], ValueError, ["tokens"]),
}


def _check_message(exc: pytest.ExceptionInfo, words) -> None:
    msg = str(exc.value)
    for w in words:
        assert w in msg, f"message {msg!r} should mention {w!r}"


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_forward_rejects_bad_tokens(model, case):
    tokens, exc, words = BAD_TOKENS[case]
    with pytest.raises(exc) as e:
        model.forward(tokens)
    _check_message(e, words)


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_loss_and_grads_rejects_bad_tokens_and_targets(model, case):
    bad, exc, words = BAD_TOKENS[case]
    with pytest.raises(exc) as e:
        model.loss_and_grads(bad, GOOD)
    _check_message(e, words)
    # the same input as targets: the message must name targets instead
    with pytest.raises(exc) as e:
        model.loss_and_grads(GOOD, bad)
    _check_message(e, [w.replace("tokens", "targets") for w in words])


@pytest.mark.parametrize("targets", [np.zeros((2, 2), dtype=np.int64), np.zeros((1, 3), dtype=np.int64),
                                     np.zeros((3, 3), dtype=np.int64)])
def test_targets_shape_must_match_tokens(model, targets):
    with pytest.raises(ValueError, match=r"targets shape .* must equal tokens shape"):
        model.loss_and_grads(GOOD, targets)


def test_valid_integer_dtypes_and_lists_are_accepted(model):
    """Not every unusual input is bad: any integer dtype, and nested lists, work and give the same logits."""
    expected = model.forward(GOOD)
    for tokens in (GOOD.astype(np.uint8), GOOD.astype(np.int32), GOOD.astype(np.uint64), GOOD.tolist(),
                   np.asfortranarray(GOOD)):
        np.testing.assert_array_equal(model.forward(tokens), expected)
    strided = np.arange(12).reshape(2, 6)[:, ::2] % V                  # a non-contiguous view
    np.testing.assert_array_equal(model.forward(strided), model.forward(np.ascontiguousarray(strided)))
    # the whole context, ids of two different unusual dtypes, the largest id as target
    tokens, targets = np.zeros((1, N_CTX), dtype=np.int16), np.full((1, N_CTX), V - 1, dtype=np.uint8)
    loss, _ = model.loss_and_grads(tokens, targets)
    assert loss == model.loss_and_grads(tokens.astype(np.int64), targets.astype(np.int64))[0]


def test_rejected_input_changes_nothing(model):
    before = model.flat.copy()
    model.loss_and_grads(GOOD, GOOD)
    grads = model.grad_flat.copy()
    with pytest.raises(ValueError):
        model.loss_and_grads(GOOD, np.array([[1, 2, 99], [1, 2, 3]]))
    np.testing.assert_array_equal(model.flat, before)
    np.testing.assert_array_equal(model.grad_flat, grads)


# ---- Config --------------------------------------------------------------------------------------------------

SIZE_FIELDS = ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff")


@pytest.mark.parametrize("field,value", [(f, v) for f in SIZE_FIELDS for v in (0, -1, 2.0, True, "8", None)
                                         if not (v is None and f in ("n_kv_heads", "head_dim", "d_ff"))])
def test_config_sizes_must_be_positive_integers(field, value):
    """(None is not tested for n_kv_heads, head_dim, d_ff: there it means "derive the default".)"""
    with pytest.raises(ValueError, match=rf"Config\.{field}=.* must be a positive integer"):
        CFG.replace(**{field: value})


BAD_CONFIGS = {
    # name: (changes, exception, words the message must contain)
    "n_heads not divisible by n_kv_heads": (dict(n_heads=4, n_kv_heads=3, d_model=8), ValueError,
                                            ["n_heads=4", "n_kv_heads=3"]),
    "n_kv_heads > n_heads": (dict(n_heads=2, n_kv_heads=4), ValueError, ["n_heads=2", "n_kv_heads=4"]),
    "d_model not divisible by n_heads": (dict(d_model=10, n_heads=4), ValueError, ["d_model=10", "n_heads=4",
                                                                                  "head_dim"]),
    "unknown norm": (dict(norm="batchnorm"), ValueError, ["Config.norm", "batchnorm", "layernorm", "rmsnorm"]),
    "unknown mlp": (dict(mlp="moe"), ValueError, ["Config.mlp", "moe", "standard", "gated"]),
    "unknown activation": (dict(activation="relu"), ValueError, ["Config.activation", "relu", "silu"]),
    "exact gelu is not the tanh gelu": (dict(activation="gelu"), ValueError, ["Config.activation", "gelu_tanh"]),
    "unknown position": (dict(position="alibi"), ValueError, ["Config.position", "alibi", "rope"]),
    "case matters": (dict(norm="LayerNorm"), ValueError, ["Config.norm"]),
    "odd head_dim with rope": (dict(position="rope", head_dim=3), ValueError, ["head_dim=3", "even", "rope"]),
    "odd derived head_dim with rope": (dict(position="rope", d_model=6, n_heads=2), ValueError, ["head_dim=3"]),
    "rope_theta <= 1": (dict(position="rope", rope_theta=1.0), ValueError, ["rope_theta"]),
    "rope_theta NaN": (dict(position="rope", rope_theta=math.nan), ValueError, ["rope_theta"]),
    "rope_theta string": (dict(position="rope", rope_theta="1e4"), ValueError, ["rope_theta"]),
    "eps zero": (dict(norm_eps=0.0), ValueError, ["norm_eps"]),
    "eps negative": (dict(norm_eps=-1e-5), ValueError, ["norm_eps"]),
    "eps one": (dict(norm_eps=1.0), ValueError, ["norm_eps"]),
    "eps NaN": (dict(norm_eps=math.nan), ValueError, ["norm_eps"]),
    "eps inf": (dict(norm_eps=math.inf), ValueError, ["norm_eps"]),
    "eps string": (dict(norm_eps="1e-5"), ValueError, ["norm_eps"]),
    "eps None": (dict(norm_eps=None), ValueError, ["norm_eps"]),
    "bias not bool": (dict(bias=1), TypeError, ["Config.bias"]),
    "tie_embeddings not bool": (dict(tie_embeddings="yes"), TypeError, ["Config.tie_embeddings"]),
    "embed_scale not bool": (dict(embed_scale=None), TypeError, ["Config.embed_scale"]),
    "norm_unit_offset not bool": (dict(norm="rmsnorm", norm_unit_offset=1), TypeError, ["Config.norm_unit_offset"]),
    "unit offset with layernorm": (dict(norm_unit_offset=True), ValueError, ["norm_unit_offset", "rmsnorm"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_config_rejects(case):
    changes, exc, words = BAD_CONFIGS[case]
    with pytest.raises(exc) as e:
        CFG.replace(**changes)
    _check_message(e, words)


def test_config_unknown_field():
    with pytest.raises(TypeError, match="n_embd"):
        CFG.replace(n_embd=8)
    with pytest.raises(ValueError, match=r"unknown fields \['n_embd'\]"):
        Config.from_dict({**CFG.to_dict(), "n_embd": 8})


def test_replace_derives_the_derived_sizes_again():
    """replace() recomputes n_kv_heads, head_dim and d_ff when they hold their default value, and keeps the others;
    a config that went through to_dict/from_dict (as a checkpoint does) behaves the same."""
    assert (CFG.head_dim, CFG.d_ff, CFG.n_kv_heads) == (CFG.d_model // CFG.n_heads, 4 * CFG.d_model, CFG.n_heads)
    wider = CFG.replace(d_model=16)
    assert (wider.head_dim, wider.d_ff, wider.n_kv_heads) == (16 // CFG.n_heads, 64, CFG.n_heads)
    assert wider == Config(name=CFG.name, vocab_size=CFG.vocab_size, n_ctx=CFG.n_ctx, d_model=16,
                           n_layers=CFG.n_layers, n_heads=CFG.n_heads)
    llama = Config.preset("llama-2-7b").replace(n_heads=64)
    assert (llama.n_kv_heads, llama.head_dim, llama.d_ff) == (64, 64, 11008)   # d_ff was given: kept
    assert Config.preset("llama-2-70b").replace(n_layers=2).n_kv_heads == 8     # given: kept
    reloaded = Config.from_dict(CFG.to_dict())
    assert reloaded.replace(d_model=16) == wider and reloaded.replace(n_heads=4).n_kv_heads == 4


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CFG.d_model = 16


@pytest.mark.parametrize("name", ["gpt-2", "GPT2", "", None, 3, ["gpt2"]])
def test_unknown_preset_lists_the_presets(name):
    with pytest.raises(ValueError) as e:
        Config.preset(name)
    msg = str(e.value)
    assert repr(name) in msg and "presets:" in msg
    assert all(p in msg for p in PRESETS), f"every preset should be listed in {msg!r}"


def test_every_preset_is_valid_and_round_trips():
    for name, cfg in PRESETS.items():
        assert Config.preset(name) is cfg
        assert Config.from_dict(cfg.to_dict()) == cfg


# ---- Transformer ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int32", "bogus", None, np.int64, 3, "", "complex128", "int8", "int4"])
def test_transformer_rejects_bad_dtype(dtype):
    with pytest.raises(ValueError, match=r"dtype .* is unknown|activations=.*: choose one of"):
        Transformer(CFG, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", np.float16])
def test_16_bit_models_run_but_a_kv_cache_in_another_format_is_shape_only(dtype):
    # 16-bit models run (tests/test_precision.py); a KV cache in another format than the activations does not
    assert Transformer(CFG, dtype=dtype).flat.dtype.itemsize == 2
    with pytest.raises(ValueError, match="runs shape-only here"):
        Transformer(CFG, dtype=dtype, kv_dtype="float32")
    assert Transformer(CFG, dtype=dtype, shape_only=True).flat.dtype.itemsize == 2


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.dtype("float64"), "f4", "<f8"])
def test_transformer_accepts_float_dtypes(dtype):
    assert Transformer(CFG, dtype=dtype).flat.dtype == np.dtype(dtype)


@pytest.mark.parametrize("cfg", [None, "gpt2", CFG.to_dict()])
def test_transformer_requires_a_config(cfg):
    with pytest.raises(TypeError, match="cfg must be a minitx.Config"):
        Transformer(cfg)


# ---- AdamW ---------------------------------------------------------------------------------------------------

BAD_HYPER = {
    "lr negative": (dict(lr=-1e-3), "lr"),
    "lr NaN": (dict(lr=math.nan), "lr"),
    "lr inf": (dict(lr=math.inf), "lr"),
    "lr string": (dict(lr="1e-3"), "lr"),
    "lr None": (dict(lr=None), "lr"),
    "lr bool": (dict(lr=True), "lr"),
    "beta1 = 1": (dict(betas=(1.0, 0.999)), "betas[0]"),
    "beta1 negative": (dict(betas=(-0.1, 0.999)), "betas[0]"),
    "beta2 = 1": (dict(betas=(0.9, 1.0)), "betas[1]"),
    "beta2 > 1": (dict(betas=(0.9, 1.5)), "betas[1]"),
    "beta NaN": (dict(betas=(0.9, math.nan)), "betas[1]"),
    "betas not a pair": (dict(betas=(0.9,)), "betas"),
    "betas triple": (dict(betas=(0.9, 0.99, 0.999)), "betas"),
    "betas scalar": (dict(betas=0.9), "betas"),
    "betas string": (dict(betas="ab"), "betas"),
    "eps zero": (dict(eps=0.0), "eps"),
    "eps negative": (dict(eps=-1e-8), "eps"),
    "eps NaN": (dict(eps=math.nan), "eps"),
    "weight_decay negative": (dict(weight_decay=-0.1), "weight_decay"),
    "weight_decay NaN": (dict(weight_decay=math.nan), "weight_decay"),
    "weight_decay string": (dict(weight_decay="0.1"), "weight_decay"),
}


@pytest.mark.parametrize("case", list(BAD_HYPER))
def test_adamw_rejects_bad_hyper_parameters(model, case):
    kwargs, arg = BAD_HYPER[case]
    with pytest.raises(ValueError) as e:
        AdamW(model, **kwargs)
    assert str(e.value).startswith(arg), f"message {str(e.value)!r} should start with {arg!r}"


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(lr=1), dict(betas=[0.0, 0.0]), dict(weight_decay=0),
                                    dict(eps=1e-30), dict(betas=(0.5, 0.5), lr=10.0, weight_decay=0.05)])
def test_adamw_accepts_edge_hyper_parameters(kwargs):
    model = Transformer(CFG, dtype="float64")                  # its own: the step below changes the parameters
    opt = AdamW(model, **kwargs)
    state = opt.state_dict()
    for name, value in kwargs.items():                         # kept as given, not clipped or replaced
        assert state[name] == (list(value) if name == "betas" else value), name
    opt.step(np.ones_like(model.flat))
    assert opt.t == 1 and np.all(np.isfinite(model.flat))


def _bad_grads(model):
    n, dt = model.flat.size, model.flat.dtype
    nan, inf = np.zeros(n, dtype=dt), np.zeros(n, dtype=dt)
    nan[n // 2] = np.nan
    inf[-1] = -np.inf
    wrong_shape = {k: v.copy() for k, v in model.params.items()}
    names = list(wrong_shape)
    # two tensors with compensating sizes: the concatenation would have the right length, every gradient shifted
    wrong_shape[names[0]] = np.zeros(model.params[names[0]].size + 1)
    wrong_shape[names[1]] = np.zeros(model.params[names[1]].size - 1)
    return {
        "NaN": (nan, ValueError, ["grads", "NaN"]),
        "inf": (inf, ValueError, ["grads", "inf"]),
        "NaN in a dict": ({k: np.full(v.shape, np.nan) for k, v in model.params.items()}, ValueError, ["NaN"]),
        "flat wrong size": (np.zeros(n + 1, dtype=dt), ValueError, ["grads", str(n)]),
        "flat wrong dtype": (np.zeros(n, dtype=np.float32), ValueError, ["grads", "float64"]),
        "flat 2-D": (np.zeros((1, n), dtype=dt), ValueError, ["grads"]),
        "dict missing a key": ({k: v for k, v in model.params.items() if k != "wte"}, ValueError, ["wte"]),
        "dict unknown key": ({**model.params, "bogus": np.zeros(3)}, ValueError, ["bogus"]),
        "dict compensating shapes": (wrong_shape, ValueError, [names[0]]),
        "list": (list(np.zeros(n)), TypeError, ["grads"]),
        "None": (None, TypeError, ["grads"]),
    }


@pytest.mark.parametrize("case", ["NaN", "inf", "NaN in a dict", "flat wrong size", "flat wrong dtype", "flat 2-D",
                                  "dict missing a key", "dict unknown key", "dict compensating shapes", "list",
                                  "None"])
def test_adamw_rejects_bad_grads_and_changes_nothing(case):
    model = Transformer(CFG, dtype="float64")
    opt = AdamW(model, lr=1e-2)
    opt.step(np.ones_like(model.flat))                         # some state, so "unchanged" means something
    before = (model.flat.copy(), opt.m.copy(), opt.v.copy(), opt.t)
    grads, exc, words = _bad_grads(model)[case]
    with pytest.raises(exc) as e:
        opt.step(grads)
    _check_message(e, words)
    np.testing.assert_array_equal(model.flat, before[0])
    np.testing.assert_array_equal(opt.m, before[1])
    np.testing.assert_array_equal(opt.v, before[2])
    assert opt.t == before[3], "a rejected step must not advance the step count (bias corrections)"


def test_adamw_rejects_nan_in_the_models_own_grads():
    model = Transformer(CFG, dtype="float64")
    opt = AdamW(model)
    _, grads = model.loss_and_grads(GOOD, GOOD)
    grads["ln_f.w"][0] = np.nan
    before = model.flat.copy()
    with pytest.raises(ValueError, match="NaN"):
        opt.step(grads)
    np.testing.assert_array_equal(model.flat, before)
