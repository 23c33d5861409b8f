"""The calculator (`minitx params | memory | flops | kv`): published figures for presets and for Hugging Face
config.json files written here by hand, JSON everywhere, and one-line errors (exit 2, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from minitx import cli

PUBLISHED_PARAMS = {
    "gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200,
    "llama-2-7b": 6_738_415_616, "llama-3-8b": 8_030_261_248, "mistral-7b": 7_241_732_096,
    "gemma-2b": 2_506_172_416, "gemma-7b": 8_537_680_896,
}
KV_PER_TOKEN_16BIT = {"llama-2-7b": 524_288, "llama-3-8b": 131_072, "mistral-7b": 131_072, "gemma-2b": 18_432,
                      "gemma-7b": 458_752, "gpt2": 36_864}

# config.json as the Hugging Face Hub serves them (fields a reader must ignore included).
HF_CONFIGS = {
    "gpt2": {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
        "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
        "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
        "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257},
    "gpt2-xl": {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2", "n_ctx": 1024, "n_embd": 1600, "n_head": 25, "n_layer": 48, "n_positions": 1024,
        "vocab_size": 50257},
    "llama-2-7b": {
        "_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000},
    "llama-3-8b": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0",
        "use_cache": True, "vocab_size": 128256},
    "mistral-7b": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000},
    "gemma-2b": {
        "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048,
        "initializer_range": 0.02, "intermediate_size": 16384, "max_position_embeddings": 8192,
        "model_type": "gemma", "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1,
        "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
        "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0", "use_cache": True,
        "vocab_size": 256000},
}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """minitx's CLI in-process: (exit status, stdout, stderr)."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:     # argparse errors exit directly
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_json(argv: list[str], capsys) -> dict:
    rc, out, err = run(argv + ["--json"], capsys)
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture
def hf_files(tmp_path):
    paths = {}
    for name, data in HF_CONFIGS.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data, indent=2))
        paths[name] = str(path)
    return paths


# ---- params --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", list(PUBLISHED_PARAMS))
def test_params_of_presets_equal_published_counts(preset, capsys):
    data = run_json(["params", preset], capsys)
    assert data["total"] == PUBLISHED_PARAMS[preset]
    assert sum(data["breakdown"].values()) == data["total"]


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_params_of_hf_config_files_equal_published_counts(name, hf_files, capsys):
    assert run_json(["params", hf_files[name]], capsys)["total"] == PUBLISHED_PARAMS[name]


def test_params_reads_a_folder_holding_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIGS["llama-2-7b"]))
    assert run_json(["params", str(tmp_path)], capsys)["total"] == 6_738_415_616


def test_gemma_non_embedding_is_the_2b_of_its_name(capsys):
    data = run_json(["params", "gemma-2b", "--non-embedding"], capsys)
    assert data["non_embedding"] == 1_981_884_416
    assert data["breakdown"]["embedding"] == 256_000 * 2048
    assert data["headline"] == "non_embedding"
    rc, out, _ = run(["params", "gemma-2b", "--non-embedding"], capsys)
    assert rc == 0 and "1,981,884,416" in out and "2,506,172,416" in out


def test_params_table_shows_breakdown_and_units(capsys):
    rc, out, err = run(["params", "gpt2"], capsys)
    assert rc == 0 and err == ""
    for text in ("124,439,808", "embedding", "attention", "mlp", "norm", "lm_head", "non-embedding",
                 "12·L·d²", "GiB"):
        assert text in out


# The vocabulary tables (wte, wpe, and an untied LM head) as a share of the total.
VOCAB_SHARE = {"llama-2-7b": "3.9%", "llama-3-8b": "13.1%", "mistral-7b": "3.6%", "gemma-2b": "20.9%",
               "gpt2": "31.6%"}


@pytest.mark.parametrize("preset", list(VOCAB_SHARE))
def test_params_non_embedding_leaves_out_every_vocabulary_table(preset, capsys):
    data = run_json(["params", preset], capsys)
    tables = data["breakdown"]["embedding"] + data["breakdown"]["lm_head"]
    assert data["vocab_tables"] == tables
    assert data["non_embedding"] == data["total"] - tables            # Kaplan: no embedding, no unembedding
    rc, out, _ = run(["params", preset], capsys)
    row = next(line for line in out.splitlines() if line.strip().startswith("vocabulary tables"))
    assert f"{tables:,}" in row and VOCAB_SHARE[preset] in row
    non_emb = next(line for line in out.splitlines() if line.strip().startswith("non-embedding"))
    untied = data["breakdown"]["lm_head"] > 0
    assert ("− untied lm_head" in non_emb) == untied
    assert ("wpe" in non_emb) == (data["embedding_tables"]["wpe"] > 0)
    assert "% of total" in out and "146.3%" not in out


def test_params_shares_are_of_the_total_with_or_without_non_embedding(capsys):
    _, plain, _ = run(["params", "gemma-2b"], capsys)
    _, lead, _ = run(["params", "gemma-2b", "--non-embedding"], capsys)
    total_row = next(line for line in lead.splitlines() if line.strip().startswith("total"))
    assert "100.0%" in total_row                                   # not 126.5%: shares of the total
    assert lead.index("1,981,884,416") < lead.index("2,506,172,416")   # the non-embedding count leads
    assert "non-embedding parameters: 1,981,884,416" in lead
    for line in plain.splitlines()[2:]:
        assert line in lead                                        # the same table, only reordered and headed


# ---- kv ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", list(KV_PER_TOKEN_16BIT))
def test_kv_per_token_of_presets(preset, capsys):
    for dtype in ("bf16", "fp16"):
        data = run_json(["kv", preset, "--dtype", dtype, "--batch", "1", "--seq", "1024"], capsys)
        assert data["bytes_per_token"] == KV_PER_TOKEN_16BIT[preset]
        assert data["total"] == KV_PER_TOKEN_16BIT[preset] * 1024


@pytest.mark.parametrize("name", [n for n in HF_CONFIGS if n in KV_PER_TOKEN_16BIT])
def test_kv_per_token_of_hf_config_files(name, hf_files, capsys):
    data = run_json(["kv", hf_files[name], "--dtype", "bf16", "--seq", "16"], capsys)
    assert data["bytes_per_token"] == KV_PER_TOKEN_16BIT[name]


def test_kv_scales_with_dtype_batch_and_seq(capsys):
    # NVIDIA's example: Llama-2-7B, batch 1, 4096 tokens, fp16 -> 2 GiB
    assert run_json(["kv", "llama-2-7b", "--dtype", "fp16", "--batch", "1", "--seq", "4096"],
                    capsys)["total"] == 2 * 2**30
    fp32 = run_json(["kv", "llama-3-8b", "--dtype", "fp32", "--batch", "8", "--seq", "100"], capsys)
    int8 = run_json(["kv", "llama-3-8b", "--dtype", "int8", "--batch", "8", "--seq", "100"], capsys)
    assert fp32["total"] == 4 * int8["total"] == 131_072 * 2 * 8 * 100


def test_kv_table_names_the_mha_overcount(capsys):
    rc, out, _ = run(["kv", "llama-3-8b", "--seq", "8192"], capsys)
    assert rc == 0 and "131,072" in out and "4x too much" in out


# ---- memory --------------------------------------------------------------------------------------------------

def test_memory_inference_llama_2_7b(capsys):
    data = run_json(["memory", "llama-2-7b", "--dtype", "bf16", "--batch", "1", "--seq", "4096"], capsys)
    assert data["mode"] == "inference"
    assert data["parts"]["weights"] == 2 * 6_738_415_616
    assert data["parts"]["kv_cache"] == 2 * 2**30
    assert data["total"] == sum(data["parts"].values())
    int8 = run_json(["memory", "llama-2-7b", "--dtype", "int8", "--batch", "1", "--seq", "4096"], capsys)
    # int8 weights: the 32 layers' matrices (4096·(12288 + 4096 + 22016) + 11008·4096 = 202,375,168 each layer)
    # at 1 byte, plus one 2-byte scale per 128 inputs per output (2·(32·(12288 + 4096 + 22016) + 86·4096) =
    # 3,162,112 bytes per layer, the down projection's K = 11008 = 86·128), and the other 262,410,240
    # parameters (embeddings, head, norms) in bfloat16
    assert int8["parts"]["weights"] == 6_476_005_376 + 3_162_112 * 32 + 2 * 262_410_240 == 7_102_013_440


def test_memory_inference_reports_the_prefill_largest_activation(capsys):
    # gpt2, batch 8 at 1,024 tokens: the full forward's largest activation is the logits of all T rows,
    # 8·1024·50257·2 B; a prefill keeps only the last row, so with unfused attention its largest is the scores,
    # 8·12·1024²·2 B. Fused attention (the default) keeps no scores: the MLP's up projection, 8·1024·3072·2 B.
    data = run_json(["memory", "gpt2", "--batch", "8", "--seq", "1024", "--attention", "unfused"], capsys)
    assert data["parts"]["activations"] == 8 * 12 * 1024 * 1024 * 2 and data["largest_activation"] == "scores"
    assert data["full_forward_largest_activation"] == {"name": "logits", "bytes": 8 * 1024 * 50257 * 2}
    assert data["total"] == sum(data["parts"].values())
    assert data["attention"] == "unfused" and data["unfused_attention"]["total"] == data["total"]
    fused = run_json(["memory", "gpt2", "--batch", "8", "--seq", "1024"], capsys)
    assert fused["attention"] == "fused" and fused["largest_activation"] == "mlp_up"
    assert fused["parts"]["activations"] == 8 * 1024 * 3072 * 2
    assert fused["unfused_attention"] == {"largest_activation": "scores", "activations": 8 * 12 * 1024 * 1024 * 2,
                                          "full_forward_largest_activation": data["full_forward_largest_activation"],
                                          "total": data["total"]}
    rc, out, _ = run(["memory", "gpt2", "--batch", "8", "--seq", "1024", "--attention", "unfused"], capsys)
    assert rc == 0 and "prefill's largest single activation" in out and "a few times" in out
    assert "all T logits" in out and "823,410,688" in out
    # one token of a 256k vocabulary: the last row's logits, B·V, can be the largest
    gemma = run_json(["memory", "gemma-2b", "--batch", "4", "--seq", "1"], capsys)
    assert gemma["largest_activation"] == "logits" and gemma["parts"]["activations"] == 4 * 256_000 * 2


@pytest.mark.parametrize("recipe, per_param", [("mixed", 16), ("hf", 18), ("checkpoint", 12), ("fp32", 16)])
def test_memory_training_recipes(recipe, per_param, capsys):
    data = run_json(["memory", "llama-2-7b", "--train", "--recipe", recipe, "--batch", "1", "--seq", "1024"],
                    capsys)
    P = 6_738_415_616
    assert data["mode"] == "training" and data["bytes_per_param"] == per_param
    assert data["parts"]["weights"] + data["parts"]["gradients"] + data["parts"]["optimizer_state"] == per_param * P
    assert data["parts"]["optimizer_state"] == 8 * P   # Adam: two fp32 copies
    assert data["parts"]["activations"] > 0


def test_memory_training_default_recipe_is_16_bytes_and_says_so(capsys):
    rc, out, _ = run(["memory", "llama-2-7b", "--train", "--seq", "2048"], capsys)
    assert rc == 0
    assert "16 bytes per parameter" in out and "mixed" in out
    for text in ("weights", "gradients", "optimizer_state", "activations", "GB", "GiB"):
        assert text in out


def test_memory_activations_depend_on_dtype(capsys):
    bf16 = run_json(["memory", "gpt2", "--train", "--dtype", "bf16", "--seq", "512"], capsys)
    fp32 = run_json(["memory", "gpt2", "--train", "--dtype", "fp32", "--seq", "512"], capsys)
    # int64 ids do not scale with the float dtype; everything else doubles
    assert 1.99 < fp32["parts"]["activations"] / bf16["parts"]["activations"] <= 2.0



def test_memory_llama_2_70b_int4_weights_bf16_cache_by_hand(capsys):
    """"How much GPU memory does Llama-2-70B need with int4 weights and a bf16 cache?" One command.

    Llama-2-70B: L = 80, C = 8192, 64 query heads and 8 kv heads of HS = 128, d_ff = 28672 (gated), V = 32000,
    untied head. int4 stores each layer matrix (K inputs, M outputs) as K·M/2 bytes of packed values plus a
    float16 scale per 128 inputs per output, (K/128)·M·2 bytes:
        q|k|v  8192 × 10240   41,943,040 + 64·10240·2 = 1,310,720    ->  43,253,760
        o      8192 × 8192    33,554,432 + 64·8192·2  = 1,048,576    ->  34,603,008
        up     8192 × 57344  234,881,024 + 64·57344·2 = 7,340,032    -> 242,221,056
        down  28672 × 8192   117,440,512 + 224·8192·2 = 3,670,016    -> 121,110,528
        per layer 441,188,352; × 80 layers = 35,295,068,160
    The rest stays bf16: wte and the head 2 · 32000·8192 = 524,288,000, norms (2·80 + 1)·8192 = 1,318,912:
    525,606,912 parameters × 2 B = 1,051,213,824. Weights: 36,346,281,984 B (36.3 GB, vs 138.0 GB in bf16).
    KV cache, bf16: 2·L·KV·HS·2 B = 2·80·8·128·2 = 327,680 B per token × 4096 tokens × 8 = 10,737,418,240 B.
    Largest activation, fused attention: the gated MLP's up projection, B·T·2F·2 = 8·4096·57344·2 =
    3,758,096,384 B (unfused attention would keep the scores instead, B·NH·T²·2 = 8·64·4096²·2 =
    17,179,869,184 B). Total 36,346,281,984 + 10,737,418,240 + 3,758,096,384 = 50,841,796,608 B: 50.8 GB.
    """
    argv = ["memory", "llama-2-70b", "--weight-dtype", "int4", "--kv-dtype", "bf16", "--batch", "8", "--seq", "4096"]
    data = run_json(argv, capsys)
    assert data["parts"] == {"weights": 36_346_281_984, "kv_cache": 10_737_418_240, "activations": 3_758_096_384}
    assert data["total"] == 50_841_796_608 and data["largest_activation"] == "mlp_up"
    assert data["precision"] == {"activations": "bfloat16", "weights": "int4", "kv": "bfloat16", "group_size": 128,
                                 "text": "bfloat16, weights int4 (groups of 128)"}
    assert data["attention"] == "fused"
    assert data["unfused_attention"]["activations"] == 17_179_869_184
    assert data["unfused_attention"]["total"] == 36_346_281_984 + 10_737_418_240 + 17_179_869_184
    assert run_json(argv[:2] + ["--dtype", "int4"] + argv[6:], capsys)["parts"] == data["parts"]  # the shorthand
    rc, out, _ = run(argv, capsys)
    assert rc == 0 and "50,841,796,608" in out and "int4 (4 bits)" in out and "per 128 inputs" in out
    assert "unfused attention would keep attention scores" in out and "17,179,869,184" in out


def test_memory_llama_3_8b_fused_attention_keeps_no_score_matrix(capsys):
    # B = 8, T = 4096: an unfused prefill's scores are B·NH·T²·2 = 8·32·4096²·2 = 8,589,934,592 B, which a
    # server running fused attention never holds: its largest is the MLP's up projection, 8·4096·2·14336·2 B.
    fused = run_json(["memory", "llama-3-8b", "--batch", "8", "--seq", "4096"], capsys)
    unfused = run_json(["memory", "llama-3-8b", "--batch", "8", "--seq", "4096", "--attention", "unfused"], capsys)
    assert fused["parts"]["activations"] == 8 * 4096 * 2 * 14336 * 2 == 1_879_048_192
    assert unfused["parts"]["activations"] == 8 * 32 * 4096 ** 2 * 2 == 8_589_934_592
    assert fused["parts"]["weights"] == unfused["parts"]["weights"]
    assert fused["parts"]["kv_cache"] == unfused["parts"]["kv_cache"]
    assert fused["unfused_attention"]["total"] == unfused["total"]
    rc, out, _ = run(["memory", "llama-3-8b", "--batch", "8", "--seq", "4096"], capsys)
    assert rc == 0 and "unfused attention would keep attention scores" in out and "8,589,934,592" in out
    assert "would add 6,710,886,400 B" in out


def test_memory_precision_flags(capsys):
    base = ["memory", "llama-3-8b", "--batch", "4", "--seq", "1024"]
    bf16 = run_json(base, capsys)
    kv8 = run_json(base + ["--kv-dtype", "int8"], capsys)
    assert kv8["parts"]["kv_cache"] * 2 == bf16["parts"]["kv_cache"]
    assert kv8["parts"]["weights"] == bf16["parts"]["weights"]
    assert kv8["parts"]["activations"] == bf16["parts"]["activations"]       # activations stay bf16
    int8 = run_json(base + ["--dtype", "int8"], capsys)
    assert int8["precision"]["weights"] == "int8" and int8["precision"]["kv"] == "int8"
    assert int8["parts"] == run_json(base + ["--weight-dtype", "int8", "--kv-dtype", "int8"], capsys)["parts"]
    # --dtype int8 with a bf16 cache: the flags override the shorthand
    mixed = run_json(base + ["--dtype", "int8", "--kv-dtype", "bf16"], capsys)
    assert mixed["parts"]["kv_cache"] == bf16["parts"]["kv_cache"]
    assert mixed["parts"]["weights"] == int8["parts"]["weights"]
    fp32 = run_json(base + ["--dtype", "fp32", "--weight-dtype", "int4"], capsys)   # int4 weights, fp32 elsewhere
    assert fp32["parts"]["kv_cache"] == 2 * bf16["parts"]["kv_cache"]
    assert fp32["parts"]["weights"] < bf16["parts"]["weights"] / 2


def test_memory_training_keeps_one_float_format(capsys):
    data = run_json(["memory", "gpt2", "--train", "--seq", "64"], capsys)
    assert data["attention"] == "unfused" and data["precision"]["weights"] == "bfloat16"
    assert "unfused_attention" not in data

# ---- flops ---------------------------------------------------------------------------------------------------

def test_flops_train_gpt2_matches_nanogpt_numbers(capsys):
    data = run_json(["flops", "gpt2", "--batch", "1", "--seq", "1024", "--phase", "train"], capsys)
    comps = data["components"]
    # nanoGPT transformer_sizing.ipynb: the dense LM head, and scores + reduce over 12 layers
    assert comps["lm_head"]["forward"] == 79_047_426_048
    assert comps["attention: scores + mix"]["forward"] == 12 * 2 * 1_610_612_736
    assert data["by_phase"]["backward"] > 1.99 * data["by_phase"]["forward"]
    assert data["approx_6P_tokens"] == 6 * 124_439_808 * 1024
    assert data["total"] == sum(sum(r.values()) for r in comps.values())
    assert comps["optimizer"]["optimizer"] == 15 * 124_439_808


def test_flops_phases_and_table(capsys):
    for phase, tokens in (("prefill", 4 * 512), ("decode", 4)):
        data = run_json(["flops", "llama-3-8b", "--batch", "4", "--seq", "512", "--phase", phase], capsys)
        assert data["tokens"] == tokens
        assert data["approx_2P_tokens"] == 2 * 8_030_261_248 * tokens
        assert 0.8 < data["total"] / data["approx_2P_tokens"] < 1.2
    rc, out, _ = run(["flops", "llama-3-8b", "--seq", "512", "--phase", "decode", "--attention", "unfused"], capsys)
    assert rc == 0
    for text in ("attention: q k v o projections", "attention: scores + mix", "attention: softmax",
                 "mlp: matmuls", "norms", "lm_head", "2·P·tokens", "FLOP per byte"):
        assert text in out
    rc, out, _ = run(["flops", "llama-3-8b", "--seq", "512", "--phase", "decode"], capsys)   # fused: servers' kernel
    assert rc == 0 and "attention: fused kernel" in out and "attention: scores + mix" not in out
    assert "unfused attention (scores written out" in out
    rc, out, _ = run(["flops", "gpt2", "--seq", "64", "--phase", "train"], capsys)
    assert rc == 0 and "6·P·tokens" in out and "loss" in out and "optimizer" in out


def test_flops_precision_and_attention_flags(capsys):
    base = ["flops", "llama-3-8b", "--batch", "4", "--seq", "512", "--phase", "decode"]
    bf16 = run_json(base, capsys)
    int4 = run_json(base + ["--weight-dtype", "int4"], capsys)
    # int4 weights: the layers' matrices read as ~0.53 B per value instead of 2, and dequantized (1 FLOP each)
    weights_read = {k: d["by_category"]["weights"]["bytes_read"] for k, d in (("bf16", bf16), ("int4", int4))}
    assert weights_read["int4"] < 0.45 * weights_read["bf16"]
    assert int4["total"] > bf16["total"]
    assert int4["by_category"]["kv_cache"] == bf16["by_category"]["kv_cache"]
    kv8 = run_json(base + ["--kv-dtype", "int8"], capsys)
    assert kv8["by_category"]["kv_cache"]["bytes_read"] * 2 == bf16["by_category"]["kv_cache"]["bytes_read"]
    assert kv8["total"] == bf16["total"]
    # the default is fused for prefill and decode, with the unfused figure beside it; train is unfused
    unfused = run_json(base + ["--attention", "unfused"], capsys)
    assert bf16["attention"] == "fused" and unfused["attention"] == "unfused"
    assert bf16["unfused_attention"] == {"total": unfused["total"], "bytes": unfused["bytes"],
                                         "intensity": unfused["intensity"], "by_phase": unfused["by_phase"]}
    assert "attention: fused kernel" in bf16["components"] and "attention: softmax" not in bf16["components"]
    assert "attention: softmax" in unfused["components"] and "attention: fused kernel" not in unfused["components"]
    for key in ("attention: q k v o projections", "mlp: matmuls", "lm_head", "norms"):
        assert bf16["components"][key] == unfused["components"][key]
    train = run_json(["flops", "gpt2", "--seq", "64"], capsys)
    assert train["attention"] == "unfused" and "unfused_attention" not in train
    assert run_json(["flops", "gpt2", "--seq", "64", "--attention", "unfused"], capsys) == train
    assert set(train["by_op"]) >= {"matmul", "attention", "softmax", "loss", "optimizer"}
    assert train["by_category"]["optimizer_state"]["bytes_read"] == 2 * 2 * 124_439_808


def test_kv_precision_flags(capsys):
    base = ["kv", "llama-3-8b", "--batch", "2", "--seq", "100"]
    assert run_json(base + ["--kv-dtype", "int8"], capsys)["total"] == 65_536 * 200
    assert run_json(base + ["--dtype", "int4"], capsys)["total"] == 131_072 * 200    # int4: weights only
    assert run_json(base + ["--dtype", "int8"], capsys)["total"] == 65_536 * 200     # int8: weights and cache
    assert run_json(base + ["--weight-dtype", "int4", "--attention", "unfused"], capsys)["total"] == 131_072 * 200


def test_a_70b_model_answers_fast(capsys):
    start = time.perf_counter()
    for argv in (["flops", "llama-3-70b", "--batch", "8", "--seq", "8192", "--phase", "train"],
                 ["memory", "llama-3-70b", "--train", "--batch", "8", "--seq", "8192"],
                 ["params", "llama-3-70b"], ["kv", "llama-3-70b", "--batch", "64", "--seq", "8192"]):
        rc, _, _ = run(argv, capsys)
        assert rc == 0
    assert time.perf_counter() - start < 1.0


# ---- bad input -----------------------------------------------------------------------------------------------

BAD = {
    "unknown preset": ["params", "gpt-5"],
    "missing file": ["params", "/nonexistent/config.json"],
    "missing model": ["params"],
    "batch 0": ["memory", "gpt2", "--batch", "0"],
    "negative seq": ["kv", "gpt2", "--seq", "-5"],
    "fractional seq": ["flops", "gpt2", "--seq", "1.5"],
    "word for batch": ["kv", "gpt2", "--batch", "many"],
    "seq beyond n_ctx": ["flops", "gpt2", "--seq", "4096"],
    "unknown dtype": ["memory", "gpt2", "--dtype", "fp8"],
    "unknown phase": ["flops", "gpt2", "--phase", "backward"],
    "unknown recipe": ["memory", "gpt2", "--train", "--recipe", "adafactor"],
    "int4 training": ["flops", "gpt2", "--weight-dtype", "int4"],
    "int8 training memory": ["memory", "gpt2", "--train", "--dtype", "int8"],
    "fused training": ["flops", "gpt2", "--attention", "fused"],
    "fused training memory": ["memory", "gpt2", "--train", "--attention", "fused"],
    "bf16 weights with fp32 activations": ["memory", "gpt2", "--dtype", "fp32", "--weight-dtype", "bf16"],
    "fp16 weights with bf16 activations": ["flops", "gpt2", "--phase", "decode", "--weight-dtype", "fp16"],
    "int4 cache": ["kv", "gpt2", "--kv-dtype", "int4"],
    "unknown attention": ["memory", "gpt2", "--attention", "flash"],
    "group size": ["memory", "tiny-gpt2", "--weight-dtype", "int8"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, capsys):
    rc, out, err = run(BAD[case], capsys)
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "error" in err and "Traceback" not in err


@pytest.mark.parametrize("content, words", [
    ('{"model_type": "bert", "hidden_size": 768}', ["bert", "supported"]),
    ("this is not json", ["JSON"]),
    ("[1, 2, 3]", ["JSON object"]),
    ('{"model_type": "llama", "rope_parameters": [1, 2]}', ["rope_parameters", "JSON object"]),
    ('{"model_type": "llama", "num_attention_heads": "many"}', ["num_attention_heads", "positive integer"]),
    ('{"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 5}', ["divisible"]),
    ('{"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}', ["rope"]),
])
def test_bad_config_files_are_one_line_errors(tmp_path, content, words, capsys):
    path = tmp_path / "config.json"
    path.write_text(content)
    for command in (["params"], ["kv", "--seq", "8"], ["memory", "--seq", "8"], ["flops", "--seq", "8"]):
        rc, out, err = run([command[0], str(path)] + command[1:], capsys)
        assert rc == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        for w in words:
            assert w in err, err


def test_bad_input_from_the_real_command_line(tmp_path):
    """The same through a real process: the entry point, not just the function."""
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "t5"}')
    for argv in (["params", "nope"], ["kv", str(path)], ["memory", "gpt2", "--batch", "-1"]):
        p = subprocess.run([sys.executable, "-m", "minitx.cli", *argv], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2, p.stderr
        assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_the_calculator_never_loads_numba_or_allocates_a_model():
    """Real-model figures come from the closed forms alone: the calculator does not even import the kernels."""
    import subprocess
    import sys
    code = ("import sys; from minitx.cli import main; "
            "assert main(['params', 'llama-2-70b']) == 0; assert main(['kv', 'llama-3-70b', '--seq', '8192']) == 0; "
            "assert 'numba' not in sys.modules and 'minitx.core.model' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_kv_prints_the_rolling_cache_of_a_sliding_window_model(capsys):
    d = run_json(["kv", "mistral-7b", "--seq", "32768"], capsys)
    # W = 4096: the last W + (chunk = W) − 1 = 8191 positions, 2·32·8·128·2 = 131,072 B each
    assert d["rolling_positions"] == 8191 and d["rolling_total"] == 131_072 * 8191
    assert d["total"] == 131_072 * 32_768                      # the full cache beside it
    assert "rolling_total" not in run_json(["kv", "llama-3-8b", "--seq", "100"], capsys)   # no window, no line
