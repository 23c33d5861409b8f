"""minitx.io.hf and Config.from_hf: HF names and layouts in and out, bad checkpoints, config.json parsing.

The numerical agreement with PyTorch lives in test_reference.py; here: exact round trips for drawn configs,
the export matching the fixtures' own state dicts bit for bit, and every way a checkpoint can be wrong.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import TINY_GEMMA, TINY_GPT2, TINY_LLAMA, configs

from minitx import Config, Transformer
from minitx.io.hf import HFLoadError, export_hf, load_hf, name_map
from minitx.io.hf_config import hf_config, hf_family
from minitx.core.optim import AdamW

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ("gpt2_tiny", "llama_tiny_gqa", "mistral_tiny", "gemma_tiny")


def fixture_checkpoint(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, HF state dict) of a fixture; the state dict is what PyTorch's state_dict() gives."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
        params = {key[len("param/"):]: f[key] for key in f.files if key.startswith("param/")}
        return json.loads(str(f["config_json"])), params


def random_model(cfg: Config, seed: int = 0, dtype: str = "float32") -> Transformer:
    """A model whose every parameter is random (GPT-2's init leaves norms at exactly 1 and biases at 0, which
    would hide a swapped weight/bias)."""
    model = Transformer(cfg, dtype=dtype)
    model.flat[:] = np.random.default_rng(seed).standard_normal(model.flat.size)
    return model


@st.composite
def hf_configs(draw):
    """Drawn configs that HF can express: GPT-2 (tied or not) and Llama/Gemma (MHA/GQA/MQA, free head_dim)."""
    cfg = draw(configs())
    if cfg.position == "learned":
        return cfg.replace(tie_embeddings=draw(st.booleans()))
    return cfg.replace(norm_unit_offset=cfg.embed_scale)  # Gemma has both switches or neither


# ---- round trips ------------------------------------------------------------------------------------------------

@given(hf_configs(), st.sampled_from(["float32", "float64"]))
def test_export_then_load_is_bit_exact(cfg, dtype):
    model = random_model(cfg, dtype=dtype)
    exported = export_hf(model)
    assert all(a.dtype == model.dtype and a.flags.c_contiguous for a in exported.values())
    back = load_hf(hf_config(cfg), exported, dtype=dtype)
    assert back.cfg == cfg
    assert back.flat.dtype == model.flat.dtype and np.array_equal(back.flat, model.flat)
    assert ("lm_head.weight" in exported) == (not cfg.tie_embeddings)  # as save_pretrained writes them


@given(configs(family="any"))
def test_configs_without_a_hf_layout_are_refused(cfg):
    try:
        hf_family(cfg)
    except ValueError:
        for call in (lambda: hf_config(cfg), lambda: export_hf(Transformer(cfg)), lambda: name_map(cfg)):
            with pytest.raises(ValueError, match="Hugging Face"):
                call()
    else:
        assert Config.from_hf(hf_config(cfg)) == cfg


@pytest.mark.parametrize("name", NAMES)
def test_export_reproduces_the_pytorch_state_dict(name):
    """The fixtures' weights come from PyTorch: exporting what we loaded must give them back bit for bit, with
    the same names, shapes and layouts (the tied head excepted: save_pretrained drops it too)."""
    config, params = fixture_checkpoint(name)
    exported = export_hf(load_hf(config, params))
    if Config.from_hf(config).tie_embeddings:
        params.pop("lm_head.weight")
    assert sorted(exported) == sorted(params)
    for key, value in params.items():
        assert exported[key].shape == value.shape and np.array_equal(exported[key], value), key


def test_llama_layout_by_hand():
    """q|k|v and gate|up sit side by side along minitx's output axis; HF's nn.Linear stores each transposed."""
    model = random_model(TINY_LLAMA)
    P, hf, c = model.params, export_hf(model), TINY_LLAMA
    qkv = P["layers.1.attn.qkv.w"]                                   # (C, (NH + 2KV)·HS)
    q, k, v = np.split(qkv, [c.q_dim, c.q_dim + c.kv_dim], axis=1)
    assert np.array_equal(hf["model.layers.1.self_attn.q_proj.weight"], q.T)
    assert np.array_equal(hf["model.layers.1.self_attn.k_proj.weight"], k.T)
    assert np.array_equal(hf["model.layers.1.self_attn.v_proj.weight"], v.T)
    gate, up = np.split(P["layers.1.mlp.up.w"], 2, axis=1)
    assert np.array_equal(hf["model.layers.1.mlp.gate_proj.weight"], gate.T)
    assert np.array_equal(hf["model.layers.1.mlp.up_proj.weight"], up.T)
    assert np.array_equal(hf["model.layers.1.mlp.down_proj.weight"], P["layers.1.mlp.down.w"].T)
    assert np.array_equal(hf["model.layers.1.self_attn.o_proj.weight"], P["layers.1.attn.proj.w"].T)
    assert np.array_equal(hf["lm_head.weight"], P["lm_head.w"])     # nn.Linear(C, V) is (V, C), like minitx


def test_export_returns_copies():
    model = random_model(TINY_GPT2)
    exported = export_hf(model)
    before = exported["transformer.wte.weight"].copy()
    model.flat[:] = 0.0
    assert np.array_equal(exported["transformer.wte.weight"], before)


def test_export_of_gradients_and_adam_state_uses_the_same_layout():
    model = random_model(TINY_LLAMA)
    tokens = np.arange(12).reshape(2, 6) % TINY_LLAMA.vocab_size
    _, grads = model.loss_and_grads(tokens, tokens[:, ::-1])
    opt = AdamW(model)
    opt.step(grads)
    for tensors, flat in ((grads, model.grad_flat), (opt.state["m"], opt.m), (opt.state["v"], opt.v)):
        exported = export_hf(model, tensors)
        assert sorted(exported) == sorted(export_hf(model))
        assert np.array_equal(load_hf(TINY_LLAMA, exported).flat, flat)  # load is export's exact inverse


def test_export_refuses_tensors_keyed_unlike_the_parameters():
    model = random_model(TINY_GPT2)
    tensors = dict(model.params)
    tensors.pop("wpe")
    tensors["extra"] = np.zeros(3)
    tensors["ln_f.w"] = np.zeros(5)
    with pytest.raises(ValueError, match=rf"missing \['wpe'\].*unknown \['extra'\].*ln_f\.w: expected "
                                         rf"\({TINY_GPT2.d_model},\)"):
        export_hf(model, tensors)


# ---- what load_hf accepts -----------------------------------------------------------------------------------------

def test_base_model_checkpoints_without_prefix_load():
    """GPT2Model / LlamaModel save their tensors without "transformer." / "model."; lm_head never has it."""
    for cfg, prefix in ((TINY_GPT2, "transformer."), (TINY_LLAMA, "model.")):
        model = random_model(cfg)
        bare = {k.removeprefix(prefix): v for k, v in export_hf(model).items()}
        assert not any(k.startswith(prefix) for k in bare)
        assert np.array_equal(load_hf(cfg, bare).flat, model.flat)


def test_buffers_are_ignored():
    """GPT-2's attn.bias / attn.masked_bias and Llama's rotary_emb.inv_freq are buffers, not weights: the model
    loads the same weights as without them, and a wrong inv_freq does not reach the RoPE tables."""
    T = TINY_GPT2.n_ctx
    gpt2 = random_model(TINY_GPT2)
    state = export_hf(gpt2)
    state |= {"transformer.h.0.attn.bias": np.tril(np.ones((1, 1, T, T), bool)),
              "transformer.h.0.attn.masked_bias": np.array(-1e4, np.float32),
              "h.1.attn.bias": np.ones((1, 1, T, T))}
    assert np.array_equal(load_hf(TINY_GPT2, state).flat, gpt2.flat)
    llama = random_model(TINY_LLAMA)
    state = export_hf(llama)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(TINY_LLAMA.head_dim // 2, np.float32)
    loaded = load_hf(TINY_LLAMA, state)
    assert np.array_equal(loaded.flat, llama.flat)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.rope, llama.rope))   # from rope_theta, not the buffer


@pytest.mark.parametrize("name", ["gpt2_tiny", "gemma_tiny"])
def test_tied_head_may_be_present_only_if_equal(name):
    config, params = fixture_checkpoint(name)
    with_head = load_hf(config, params)                      # PyTorch's state_dict() lists the shared tensor
    params_without = {k: v for k, v in params.items() if k != "lm_head.weight"}
    assert np.array_equal(load_hf(config, params_without).flat, with_head.flat)  # save_pretrained drops it
    params["lm_head.weight"] = params["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        load_hf(config, params)


def test_untied_head_is_required():
    state = export_hf(random_model(TINY_LLAMA))
    del state["lm_head.weight"]
    with pytest.raises(ValueError, match=r"missing 1: lm_head\.weight"):
        load_hf(TINY_LLAMA, state)


def test_every_problem_is_listed_in_one_error():
    C, Q, L = TINY_LLAMA.d_model, TINY_LLAMA.q_dim, TINY_LLAMA.n_layers
    state = export_hf(random_model(TINY_LLAMA))
    del state["model.layers.1.mlp.up_proj.weight"], state["model.norm.weight"]
    state["model.layers.0.self_attn.q_proj.weight"] = np.zeros((C, Q), np.float32)   # transposed: (Q, C) wanted
    state[f"model.layers.{L}.input_layernorm.weight"] = np.zeros(C, np.float32)      # one layer too many
    state["model.layers.0.self_attn.q_proj.bias"] = np.zeros(Q, np.float32)          # minitx's Llama has no biases
    with pytest.raises(ValueError) as err:
        load_hf(TINY_LLAMA, state)
    message = str(err.value)
    for expected in ("missing 2", "model.layers.1.mlp.up_proj.weight", "model.norm.weight",
                     "unknown 2", f"model.layers.{L}.input_layernorm.weight", "model.layers.0.self_attn.q_proj.bias",
                     "misshapen 1", f"model.layers.0.self_attn.q_proj.weight: expected ({Q}, {C}), got ({C}, {Q})"):
        assert expected in message


def test_mixed_prefixes_are_reported():
    state = export_hf(random_model(TINY_GPT2))
    state["wpe.weight"] = state.pop("transformer.wpe.weight")
    with pytest.raises(ValueError, match=r"missing 1: transformer\.wpe\.weight.*unknown 1: wpe\.weight"):
        load_hf(TINY_GPT2, state)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_named(bad):
    state = export_hf(random_model(TINY_LLAMA))
    state["model.layers.1.self_attn.k_proj.weight"][2, 3] = bad
    with pytest.raises(ValueError, match=r"NaN or inf: model\.layers\.1\.self_attn\.k_proj\.weight \(-> minitx "
                                         r"layers\.1\.attn\.qkv\.w"):
        load_hf(TINY_LLAMA, state)


def test_float64_weights_that_overflow_float32_are_named():
    state = {k: v.astype(np.float64) for k, v in export_hf(random_model(TINY_GPT2)).items()}
    state["transformer.ln_f.bias"][0] = 1e300
    with pytest.raises(ValueError, match=r"transformer\.ln_f\.bias"):
        load_hf(TINY_GPT2, state)
    assert load_hf(TINY_GPT2, state, dtype="float64").params["ln_f.b"][0] == 1e300


def test_integer_weights_are_refused_by_name():
    state = export_hf(random_model(TINY_GPT2))
    state["transformer.h.0.mlp.c_fc.bias"] = np.zeros(state["transformer.h.0.mlp.c_fc.bias"].shape, np.int64)
    state["transformer.wpe.weight"] = np.zeros(state["transformer.wpe.weight"].shape, bool)
    with pytest.raises(HFLoadError, match="must be stored in float16, bfloat16") as err:
        load_hf(TINY_GPT2, state)
    assert "transformer.h.0.mlp.c_fc.bias (int64)" in str(err.value)
    assert "transformer.wpe.weight (bool)" in str(err.value)


def test_other_float_types_are_cast_to_the_model_dtype():
    model = random_model(TINY_LLAMA)
    half = {k: v.astype(np.float16) for k, v in export_hf(model).items()}
    loaded = load_hf(TINY_LLAMA, half)
    assert loaded.flat.dtype == np.float32
    assert np.array_equal(loaded.flat, model.flat.astype(np.float16).astype(np.float32))


# ---- files ---------------------------------------------------------------------------------------------------------

def test_npz_and_config_json_paths(tmp_path):
    config, params = fixture_checkpoint("mistral_tiny")
    (tmp_path / "config.json").write_text(json.dumps(config))
    np.savez(tmp_path / "weights.npz", **params)
    from_memory = load_hf(config, params)
    for cfg_source in (tmp_path / "config.json", str(tmp_path)):   # the file, or its folder
        model = load_hf(cfg_source, tmp_path / "weights.npz")
        assert model.cfg == from_memory.cfg and np.array_equal(model.flat, from_memory.flat)


def test_safetensors_path(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    model = random_model(TINY_LLAMA)
    safetensors_numpy.save_file(export_hf(model), str(tmp_path / "model.safetensors"))
    assert np.array_equal(load_hf(hf_config(TINY_LLAMA), tmp_path / "model.safetensors").flat, model.flat)


def test_missing_safetensors_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)     # makes the import raise ImportError
    with pytest.raises(ImportError, match="pip install safetensors"):
        load_hf(TINY_GPT2, tmp_path / "model.safetensors")


def test_unknown_file_type_and_bad_arguments():
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        load_hf(TINY_GPT2, "pytorch_model.bin")
    with pytest.raises(TypeError, match="mapping"):
        load_hf(TINY_GPT2, [("wte", np.zeros(3))])


# ---- Config.from_hf ------------------------------------------------------------------------------------------------

FIXTURE_CONFIGS = {
    "gpt2_tiny": dict(vocab_size=96, n_ctx=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=8,
                      d_ff=128, norm="layernorm", norm_eps=1e-5, mlp="standard", activation="gelu_tanh",
                      position="learned", bias=True, tie_embeddings=True, embed_scale=False, norm_unit_offset=False),
    "llama_tiny_gqa": dict(vocab_size=96, n_ctx=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12,
                           d_ff=80, norm="rmsnorm", norm_eps=1e-6, mlp="gated", activation="silu", position="rope",
                           rope_theta=1e4, bias=False, tie_embeddings=False, embed_scale=False,
                           norm_unit_offset=False),
    "mistral_tiny": dict(vocab_size=96, n_ctx=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=8,
                         d_ff=64, norm="rmsnorm", norm_eps=1e-6, mlp="gated", activation="silu", position="rope",
                         rope_theta=1e6, bias=False, tie_embeddings=False, embed_scale=False,
                         norm_unit_offset=False),
    "gemma_tiny": dict(vocab_size=96, n_ctx=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=16,
                       d_ff=64, norm="rmsnorm", norm_eps=1e-6, mlp="gated", activation="gelu_tanh", position="rope",
                       rope_theta=1e4, bias=False, tie_embeddings=True, embed_scale=True, norm_unit_offset=True),
}


@pytest.mark.parametrize("name", NAMES)
def test_from_hf_reads_the_fixture_configs(name):
    config, _ = fixture_checkpoint(name)
    cfg = Config.from_hf(config)
    assert {field: getattr(cfg, field) for field in FIXTURE_CONFIGS[name]} == FIXTURE_CONFIGS[name]


@pytest.mark.parametrize("name", ["llama_tiny_gqa", "mistral_tiny"])
def test_rope_theta_in_either_place(name):
    """transformers 5 writes rope_parameters = {rope_theta, rope_type}; older files a top-level rope_theta."""
    config, _ = fixture_checkpoint(name)
    theta = config["rope_parameters"]["rope_theta"]
    old_style = {k: v for k, v in config.items() if k != "rope_parameters"} | {"rope_theta": theta}
    assert Config.from_hf(old_style) == Config.from_hf(config)
    assert Config.from_hf(old_style).rope_theta == theta


@pytest.mark.parametrize("scaling", [{"rope_type": "llama3", "factor": 8.0}, {"type": "linear", "factor": 2.0}])
def test_rope_scaling_is_refused(scaling):
    """Both spellings of rope_scaling: early transformers 4.x files name the kind "type", later "rope_type"."""
    with pytest.raises(ValueError, match="RoPE scaling"):
        Config.from_hf({"model_type": "llama", "rope_scaling": scaling})


def test_rope_scaling_in_rope_parameters_is_refused():
    with pytest.raises(ValueError, match="RoPE scaling"):
        Config.from_hf({"model_type": "llama", "rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3"}})


def test_unknown_model_type():
    with pytest.raises(ValueError, match="unsupported Hugging Face model_type 'bert'"):
        Config.from_hf({"model_type": "bert"})
    with pytest.raises(ValueError, match="model_type None"):
        Config.from_hf({"hidden_size": 8})


# What transformers 5.24's GPT2Config(), LlamaConfig(), MistralConfig(), GemmaConfig() hold (checked against the
# library when these were written) for a file that sets nothing but model_type.
HF_DEFAULTS = {
    "gpt2": dict(vocab_size=50257, n_ctx=1024, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64,
                 d_ff=3072, norm_eps=1e-5, tie_embeddings=True),
    "llama": dict(vocab_size=32000, n_ctx=2048, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                  head_dim=128, d_ff=11008, norm_eps=1e-6, rope_theta=1e4, activation="silu", tie_embeddings=False),
    # MistralConfig: 131,072 positions, each attending to the last sliding_window=4,096 keys
    "mistral": dict(vocab_size=32000, n_ctx=131072, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                    head_dim=128, d_ff=14336, norm_eps=1e-6, rope_theta=1e4, activation="silu",
                    tie_embeddings=False, sliding_window=4096),
    "gemma": dict(vocab_size=256000, n_ctx=8192, d_model=3072, n_layers=28, n_heads=16, n_kv_heads=16,
                  head_dim=256, d_ff=24576, norm_eps=1e-6, rope_theta=1e4, activation="gelu_tanh",
                  tie_embeddings=True, embed_scale=True, norm_unit_offset=True),
}


@pytest.mark.parametrize("model_type", sorted(HF_DEFAULTS))
def test_missing_keys_take_transformers_defaults(model_type):
    cfg = Config.from_hf({"model_type": model_type})
    assert {field: getattr(cfg, field) for field in HF_DEFAULTS[model_type]} == HF_DEFAULTS[model_type]


def test_null_kv_heads_and_head_dim_mean_multi_head_and_hidden_over_heads():
    cfg = Config.from_hf({"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 8,
                          "num_key_value_heads": None, "head_dim": None})
    assert (cfg.n_kv_heads, cfg.head_dim) == (8, 8)


def test_mistral_sliding_window_is_read_and_agrees_with_the_preset():
    base = {"model_type": "mistral", "max_position_embeddings": 32768}
    v01 = Config.from_hf(base | {"sliding_window": 4096})                      # Mistral 7B v0.1
    assert (v01.n_ctx, v01.sliding_window) == (32768, 4096)
    assert v01.replace(name="mistral-7b", norm_eps=1e-5) == Config.preset("mistral-7b")
    assert Config.from_hf(base | {"sliding_window": None}).sliding_window is None   # v0.2 and later
    with pytest.raises(ValueError, match="sliding_window"):
        Config.from_hf(base | {"sliding_window": 0})


def test_gemma_legacy_gelu_means_tanh_gelu():
    """Gemma's released configs say hidden_act="gelu" but the model was trained with the tanh approximation;
    transformers rewrites it to gelu_pytorch_tanh."""
    assert Config.from_hf({"model_type": "gemma", "hidden_act": "gelu"}).activation == "gelu_tanh"
    with pytest.raises(ValueError, match="activation 'gelu'"):
        Config.from_hf({"model_type": "llama", "hidden_act": "gelu"})


@pytest.mark.parametrize("unsupported", [{"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True},
                                         {"activation_function": "relu"}])
def test_gpt2_variants_minitx_cannot_run(unsupported):
    with pytest.raises(ValueError, match="not supported"):
        Config.from_hf({"model_type": "gpt2"} | unsupported)


def test_hf_config_model_types():
    assert hf_config(TINY_GPT2)["model_type"] == "gpt2"
    assert hf_config(TINY_LLAMA)["model_type"] == "llama"
    assert hf_config(TINY_GEMMA)["model_type"] == "gemma"
    for preset in ("gpt2", "llama-3-8b", "mistral-7b", "gemma-2b"):
        cfg = Config.preset(preset)
        assert Config.from_hf(hf_config(cfg)) == cfg
    with pytest.raises(ValueError, match="Hugging Face"):
        hf_config(TINY_GPT2.replace(position="rope"))
    with pytest.raises(ValueError, match="only one of Gemma"):
        hf_config(TINY_LLAMA.replace(embed_scale=True))
