"""Hostile input, drawn by hypothesis, at every public entry point that takes outside data.

Each drawn input must either work or end in a ValueError or TypeError (OSError for the file system) whose message
names the argument or the file. Nothing else may escape: no KeyError, AttributeError, OverflowError, IndexError,
MemoryError, RecursionError, and no crash inside a Numba kernel. The command line must answer every drawn argv
with exit status 0 or 2 and, on 2, one line on stderr.

Example counts are kept small (the whole file runs in seconds); HYPOTHESIS_PROFILE=thorough draws 200 each.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitx import Config, KVCache, Transformer, generate
from minitx.cli import main

TINY = Config.preset("tiny-llama")
MODEL = Transformer(TINY)
FIELDS = ["vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "norm",
          "norm_eps", "mlp", "activation", "position", "rope_theta", "bias", "tie_embeddings", "embed_scale",
          "norm_unit_offset", "name"]
HF_KEYS = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
           "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
           "rope_theta", "rope_parameters", "rope_scaling", "tie_word_embeddings", "hidden_act", "attention_bias",
           "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "layer_norm_epsilon", "activation_function",
           "sliding_window", "_name_or_path"]

# values of every JSON type, and the numbers that break naive code: 0, negatives, huge, non-finite, 400 digits
ugly_numbers = st.sampled_from([0, -1, 1, 2, 3, 7, 64, 2 ** 31, 2 ** 62, 2 ** 70, 10 ** 400, 0.5, -0.0, 1e-300,
                                1e308, math.inf, -math.inf, math.nan, True, False])
json_values = st.recursive(st.one_of(st.none(), ugly_numbers, st.text(max_size=8), st.integers(-5, 300)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=6)
ALLOWED = (ValueError, TypeError)


def _raises_cleanly(fn, *args, **kw):
    """Run fn; a ValueError or TypeError is fine (it must say something), anything else fails the test."""
    try:
        return fn(*args, **kw)
    except ALLOWED as e:
        assert str(e), f"{type(e).__name__} without a message"
        return None


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6))
def test_config_fields(fields):
    cfg = _raises_cleanly(Config, **fields)
    if cfg is not None:                                   # whatever it accepted describes a model it can count
        assert cfg.to_dict()["vocab_size"] == cfg.vocab_size


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["gpt2", "llama", "mistral", "gemma", "bert", None, 3]),
       st.dictionaries(st.sampled_from(HF_KEYS), json_values, max_size=6))
def test_hf_config_dicts(model_type, keys):
    _raises_cleanly(Config.from_hf, {"model_type": model_type, **keys})


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.lists(st.integers(-3, 70), max_size=6), st.lists(st.lists(st.integers(-3, 70), max_size=5),
                                                                   max_size=3),
                 st.sampled_from([[[1.5]], [["a"]], [[True]], [[]], [[2 ** 70]], np.zeros((1, 40), np.int64)])))
def test_token_arrays(tokens):
    _raises_cleanly(MODEL.forward, tokens)
    cache = KVCache(TINY, 1, TINY.n_ctx)
    _raises_cleanly(MODEL.prefill, tokens, cache)
    _raises_cleanly(MODEL.decode, tokens, cache)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={"temperature": json_values, "top_k": json_values, "top_p": json_values,
                                           "seed": json_values, "stop_tokens": json_values,
                                           "max_new_tokens": json_values}))
def test_sampling_arguments(kw):
    kw.setdefault("max_new_tokens", 3)
    out = _raises_cleanly(generate, MODEL, [[1, 2, 3]], **kw)
    if out is not None:
        assert all(0 <= t < TINY.vocab_size for seq in out for t in seq)


WORDS = ["params", "memory", "flops", "kv", "hw", "roofline", "cost", "check", "generate", "train", "gpt2",
         "llama-3-8b", "tiny-gpt2", "--json", "--batch", "--seq", "--prompt", "--gen", "--dtype", "--hw",
         "--phase", "--gpu-price", "--api-price-in", "--api-price-out", "--utilization", "--peak", "--bandwidth",
         "--memory", "--recipe", "--train", "--checkpoint", "--steps", "0", "1", "-1", "8", "1e308", "nan", "inf",
         "1,8,64", "1,x", "bf16", "int4", "decode", "prefill", "h100", "/dev/null", "/dev/zero", "",
         "9" * 400, "x.json",
         # minitx count, and the precision and attention flags of the calculators
         "count", "--weight-dtype", "--kv-dtype", "--attention", "fused", "unfused", "int8", "fp32", "fp16",
         "train"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=7))
def test_command_lines(capsys, argv):
    if argv[0] in ("check", "train", "generate") and "--help" not in argv:
        argv = ["params"] + argv[1:]         # those run models or write files: their bad input is tested elsewhere
    try:
        code = main(argv)
    except SystemExit as e:                  # argparse's own usage errors and --help
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    elif "--json" in argv:
        json.loads(out)


# The precision and attention flags, densely: every calculator that takes them and `minitx count` (which builds
# a shape-only model), on models small enough that any drawn combination answers at once.
PRECISION_WORDS = ["--dtype", "--weight-dtype", "--kv-dtype", "--attention", "--phase", "--batch", "--seq",
                   "--train", "--json", "fp32", "fp16", "bf16", "int8", "int4", "fp8", "fused", "unfused", "train",
                   "prefill", "decode", "1", "8", "0", "x"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["count", "flops", "memory", "kv", "roofline"]),
       st.sampled_from(["tiny-llama", "small-llama", "small-gpt2"]),
       st.lists(st.sampled_from(PRECISION_WORDS), max_size=8))
def test_precision_flags(capsys, command, model, flags):
    argv = [command, model] + flags
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    elif "--json" in argv:
        json.loads(out)