"""`minitx.accounting.formulas` against published numbers and the literature's worked examples, with no model.

The formulas and their sources are collected in docs/formulas.md. Every figure below is quoted from its source
(cited beside it), or, where no source prints it and docs/formulas.md derives it, re-derived by hand in the
comment. The comparison with execution is in test_counting.py; here the closed forms
must reproduce what the papers, model cards and reference notebooks print, to the parameter and the FLOP.
"""
from __future__ import annotations

import time
import tracemalloc
from fractions import Fraction

import pytest

from minitx import Config, formulas

P = Config.preset


# ---- parameters: published totals ----------------------------------------------------------------------------

@pytest.mark.parametrize("preset, total", [
    # GPT-2: nanoGPT's printed counts (model.py get_num_params incl. wpe) and HF safetensors metadata;
    # the GPT-2 paper's Table 2 (117M/345M/762M/1542M) is from an earlier, wrongly rounded count.
    ("gpt2", 124_439_808),
    ("gpt2-medium", 354_823_168),
    ("gpt2-large", 774_030_080),
    ("gpt2-xl", 1_557_611_200),
    # Llama-2-7B: HF `print_trainable_parameters` on meta-llama/Llama-2-7b-hf
    ("llama-2-7b", 6_738_415_616),
    # Llama-3-8B: Meta's model card / HF safetensors metadata of meta-llama/Meta-Llama-3-8B
    ("llama-3-8b", 8_030_261_248),
    # Mistral-7B-v0.1: HF safetensors metadata of mistralai/Mistral-7B-v0.1
    ("mistral-7b", 7_241_732_096),
    # Gemma: HF safetensors metadata of google/gemma-2b and google/gemma-7b (vocabulary 256,000)
    ("gemma-2b", 2_506_172_416),
    ("gemma-7b", 8_537_680_896),
])
def test_published_parameter_totals(preset, total):
    cfg = P(preset)
    assert formulas.num_params(cfg) == total
    parts = formulas.param_breakdown(cfg)
    assert parts["total"] == total == sum(v for k, v in parts.items() if k != "total")


def test_gpt2_small_breakdown_by_hand():
    # docs/formulas.md, "Parameters": P = V·d + T·d + L·(12d² + 13d) + 2d; wte 38,597,376 and wpe 786,432
    # ("Published parameter counts")
    V, T, d, L = 50257, 1024, 768, 12
    assert formulas.num_params(P("gpt2")) == V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d
    parts = formulas.param_breakdown(P("gpt2"))
    assert parts["embedding"] == 38_597_376 + 786_432
    assert parts["lm_head"] == 0                                   # tied: wte is the head
    assert parts["attention"] == L * (3 * d * d + 3 * d + d * d + d)
    assert parts["mlp"] == L * (8 * d * d + 5 * d)
    assert parts["norm"] == (2 * L + 1) * 2 * d
    # nanoGPT's get_num_params(non_embedding=True) drops only wpe: 123,653,376; ours drops wte too
    assert formulas.non_embedding_params(P("gpt2")) == 124_439_808 - 786_432 - 38_597_376


def test_gemma_is_closer_to_3b_than_its_name():
    # Gemma report (arXiv 2403.08295) Table 2: non-embedding 1,981,884,416 (2B) and 7,751,248,896 (7B)
    assert formulas.non_embedding_params(P("gemma-2b")) == 1_981_884_416
    assert formulas.non_embedding_params(P("gemma-7b")) == 7_751_248_896
    # the report's vocabulary is 256,128 (HF: 256,000): totals 2,506,434,560 and 8,538,074,112
    assert formulas.num_params(P("gemma-2b").replace(vocab_size=256_128)) == 2_506_434_560
    assert formulas.num_params(P("gemma-7b").replace(vocab_size=256_128)) == 8_538_074_112
    # the embedding is 20.9% of the 2B model; counted once more as an untied head it is 3.03B [derived]
    parts = formulas.param_breakdown(P("gemma-2b"))
    assert parts["embedding"] == 524_288_000 and round(100 * parts["embedding"] / parts["total"], 1) == 20.9
    assert formulas.num_params(P("gemma-2b").replace(tie_embeddings=False)) == 3_030_460_416


def test_bias_free_gpt2_small_as_in_nanogpts_notebook():
    # nanoGPT transformer_sizing.ipynb: bias=False GPT-2 small has 124,337,664 parameters (no linear biases and
    # LayerNorms with a weight only: the same count as RMSNorm's, which is how this Config expresses it)
    assert formulas.num_params(P("gpt2").replace(bias=False, norm="rmsnorm")) == 124_337_664


def test_matmul_params():
    # GPT-2 small: 12 layers × 12·d² (qkv 3d², proj d², MLP 8d²) + the tied head V·d (counted once)
    d = 768
    assert formulas.matmul_params(P("gpt2")) == 12 * 12 * d * d + 50257 * d
    # Llama-2-7B: untied, so the head is lm_head.w and wte (a lookup) is not a matmul parameter
    cfg = P("llama-2-7b")
    assert formulas.matmul_params(cfg) == formulas.num_params(cfg) - 32000 * 4096 - (2 * 32 + 1) * 4096


# ---- KV cache ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, per_token", [
    # docs/formulas.md, "KV cache" (derived there): 2·L·KV·HS·2 bytes; Llama-2-7B's 0.5 MiB is Baseten's and
    # NVIDIA's figure
    ("llama-2-7b", 524_288), ("llama-3-8b", 131_072), ("gemma-2b", 18_432), ("gpt2", 36_864),
    ("gemma-7b", 458_752), ("mistral-7b", 131_072),
])
def test_kv_bytes_per_token_16bit(preset, per_token):
    assert formulas.kv_bytes_per_token(P(preset), "bfloat16") == per_token
    assert formulas.kv_bytes_per_token(P(preset), "float16") == per_token
    assert formulas.kv_bytes_per_token(P(preset), "float32") == 2 * per_token
    assert formulas.kv_bytes_per_token(P(preset), "int8") == per_token // 2


def test_kv_cache_worked_examples():
    # NVIDIA "Mastering LLM Techniques": Llama-2-7B, batch 1, 4096 tokens, fp16: 2 GiB
    assert formulas.kv_cache_bytes(P("llama-2-7b"), 1, 4096, "float16") == 2 * 2 ** 30
    # Scaling Book: LLaMA-2-13B, 8192 tokens, bf16: 8192·40·128·40·2·2 = 6.7 GB
    assert formulas.kv_cache_bytes(P("llama-2-13b"), 1, 8192, "bfloat16") == 8192 * 40 * 128 * 40 * 2 * 2
    # GQA: Llama-3-8B's 8 KV heads of 32 make its cache 4× smaller than "2·2·L·d_model" (MHA-only formulas)
    cfg = P("llama-3-8b")
    assert 4 * formulas.kv_bytes_per_token(cfg, "bf16") == 2 * 2 * cfg.n_layers * cfg.d_model


# ---- the literature's approximations -------------------------------------------------------------------------

# kipply's 52B example (L = 64, d = 8192, V = 65536): a Config of that shape (no biases, RMSNorm, 4d MLP)
KIPPLY_52B = Config(vocab_size=65536, n_ctx=2048, d_model=8192, n_layers=64, n_heads=64, norm="rmsnorm",
                    position="rope", bias=False, name="kipply-52b")


def test_kipply_12Ld2():
    # kipply "Transformer Inference Arithmetic": 12·64·8192² = 51,539,607,552; + V·d = 52,076,478,464
    assert formulas.approx_params_12Ld2(KIPPLY_52B) == 51_539_607_552
    assert formulas.approx_params_12Ld2(KIPPLY_52B, embedding=True) == 52_076_478_464
    # forward ≈ 2·P per token: 24·L·d² = 103,079,215,104 FLOPs
    assert formulas.approx_forward_flops_2P(KIPPLY_52B, 1, n_params=51_539_607_552) == 103_079_215_104
    # 2·2·n_layers·n_heads·d_head bytes of KV per token at 16 bit: 2,097,152 B ≈ 0.002 GB
    assert formulas.kv_bytes_per_token(KIPPLY_52B, "bf16") == 2_097_152
    # the exact count of this shape: 12·L·d² + V·d + the norms' L·2·d + d
    assert formulas.num_params(KIPPLY_52B) == 52_076_478_464 + 64 * 2 * 8192 + 8192


def test_12Ld2_is_wrong_for_gemma():
    # docs/formulas.md, "Published parameter counts": 12·L·d² + V·d gives 1.43B for Gemma 2B (gated d_ff = 8d and
    # MQA), not 2.51B
    approx = formulas.approx_params_12Ld2(P("gemma-2b"), embedding=True)
    assert approx == 12 * 18 * 2048 ** 2 + 256_000 * 2048 == 1_430_257_664
    assert round(approx / 1e9, 2) == 1.43
    assert formulas.num_params(P("gemma-2b")) / approx > 1.75
    # ... and close for GPT-2 small, whose shape it assumes
    assert formulas.approx_params_12Ld2(P("gpt2"), embedding=True) == pytest.approx(124_439_808, rel=0.01)


def test_mfu_numerators_nanogpt_vs_llmc():
    # docs/formulas.md, "FLOPs": GPT-2 small at T = 1024, per token. nanoGPT estimate_mfu: 6N + 12·L·H·Q·T with
    # N = params − wpe; llm.c gpt2_estimate_mfu: 6N + 6·L·C·T with N = all params.
    cfg = P("gpt2")
    n_nanogpt = formulas.num_params(cfg) - cfg.n_ctx * cfg.d_model
    assert formulas.palm_training_flops_per_token(cfg, 1024, n_params=n_nanogpt) == 855_166_464
    llmc = formulas.approx_training_flops_6P(cfg, 1) + 3 * formulas.attention_flops_kaplan(cfg, 1024)
    assert llmc == 803_261_952
    assert formulas.attention_flops_palm(cfg, 1024) == 2 * formulas.attention_flops_kaplan(cfg, 1024)


def test_nanogpt_transformer_sizing_flops():
    # nanoGPT transformer_sizing.ipynb, GPT-2 small, one sequence of T = 1024, forward FLOPs (2 per MAC):
    cfg = P("gpt2")
    fwd = formulas.forward_pass(cfg, 1, 1024)
    two_macs = {name: 2 * fwd[name].macs for name in fwd.names}
    assert two_macs["layers.0.attn.qkv"] == 3_623_878_656              # attention/kqv
    assert two_macs["layers.0.attn.scores"] == 1_610_612_736           # attention/scores
    assert two_macs["layers.0.attn.mix"] == 1_610_612_736              # attention/reduce
    assert two_macs["layers.0.attn.proj"] == 1_207_959_552             # attention/proj
    assert two_macs["layers.0.mlp.up"] + two_macs["layers.0.mlp.down"] == 9_663_676_416   # mlp
    assert two_macs["lm_head"] == 79_047_426_048                       # dense: 27.1% of the forward
    assert sum(two_macs.values()) == 291_648_307_200                   # forward_total
    step = formulas.training_step(cfg, 1, 1024)
    assert 2 * step.macs == 874_944_921_600       # total = 3 × forward
    # the notebook's PaLM check: 875,062,886,400 with its bias-free count minus wpe (ratio 1.0001)
    n = formulas.num_params(cfg.replace(bias=False, norm="rmsnorm")) - 1024 * 768
    assert formulas.palm_training_flops_per_token(cfg, 1024, n_params=n) * 1024 == 875_062_886_400


def test_training_to_forward_ratio_of_gpt2_small():
    """The exact ratio of a whole training step's FLOPs (forward with loss + backward + AdamW) to its forward's.

    Not 3: only the matmuls' backward is exactly 2× their forward (see test_counting's
    test_training_over_forward_flops_is_3_plus_the_non_matmul_excess for the term-by-term account).
    At B = 1 the optimizer's 15 FLOPs per parameter lift it above 3; at B = 8 it is amortised and the cheap
    backwards of the loss (3·V vs 2·4·V per row) and the softmax (5 vs 2·7 per entry) pull it below."""
    from test_counting import nonmatmul_excess     # the term-by-term account, derived from the conventions
    cfg = P("gpt2")
    ratios = {}
    for B in (1, 8):
        step = formulas.training_step(cfg, B, 1024)
        forward = step.filter(phase="forward").flops
        ratios[B] = Fraction(step.flops, forward)
        assert ratios[B] == 3 + Fraction(nonmatmul_excess(cfg, B, 1024), forward)
    # the values, for the record: above 3 at B = 1, below at B = 8
    assert round(float(ratios[1]), 6) == 3.002815 and round(float(ratios[8]), 6) == 2.997241


def test_attention_term_matches_palm_and_is_twice_kaplan():
    cfg = P("llama-3-8b")
    T = 1000
    fwd = formulas.forward_pass(cfg, 1, T)
    scores_mix = sum(r.flops for r in fwd if r.name.endswith((".attn.scores", ".attn.mix")))
    assert scores_mix == formulas.attention_flops_palm(cfg, T) * T            # full T×T, per token 4·L·T·d
    assert scores_mix == 2 * formulas.attention_flops_kaplan(cfg, T) * T
    # the softmax alone visits the causal half: T(T+1)/2 entries per head
    softmax = fwd["layers.0.attn.softmax"]
    assert softmax.flops == 7 * cfg.n_heads * T * (T + 1) // 2 + cfg.n_heads * T


def test_6P_and_2P():
    cfg = P("llama-2-7b")
    n = formulas.num_params(cfg)
    assert formulas.approx_training_flops_6P(cfg, 1000) == 6 * n * 1000 == 3 * formulas.approx_forward_flops_2P(
        cfg, 1000)
    # the exact matmul part of a training step is 6·matmul_params per token + 3 × attention
    T = 2048
    step = formulas.training_step(cfg, 1, T)
    assert 2 * step.macs == (6 * formulas.matmul_params(cfg) * T
                                                  + 3 * formulas.attention_flops_palm(cfg, T) * T)


def test_training_bytes_per_parameter_recipes():
    cfg = P("llama-2-7b")
    n = 6_738_415_616
    # docs/formulas.md, "Training memory" (derived there): 16 B/param → 107.8 GB, 18 B/param → 121.3 GB,
    # bf16 W + G + 2 Adam → 53.9 GB
    assert formulas.mixed_precision_training_bytes(cfg) == 16 * n == 107_814_649_856
    assert formulas.mixed_precision_training_bytes(cfg, "hf") == 18 * n == 121_291_481_088
    assert formulas.mixed_precision_training_bytes(cfg, "checkpoint") == 12 * n
    assert (formulas.param_bytes(cfg, "bf16") + formulas.grad_bytes(cfg, "bf16")
            + formulas.adam_state_bytes(cfg, "bf16")) == 53_907_324_928
    # nanoGPT: GPT-2 small checkpoint estimated at 1.49 GB (12 B/param)
    assert round(formulas.mixed_precision_training_bytes(P("gpt2"), "checkpoint") / 1e9, 2) == 1.49
    with pytest.raises(ValueError, match="recipe"):
        formulas.mixed_precision_training_bytes(cfg, "fp8")


@pytest.mark.parametrize("preset, gb", [("llama-2-7b", 13.48), ("llama-3-8b", 16.06), ("mistral-7b", 14.48),
                                        ("gemma-2b", 5.01)])
def test_bf16_weight_bytes(preset, gb):
    # docs/formulas.md, "Inference memory" (derived there): 2 bytes per parameter, in GB of 1e9 bytes
    assert round(formulas.param_bytes(P(preset), "bfloat16") / 1e9, 2) == gb


# ---- memory --------------------------------------------------------------------------------------------------

def test_saved_activations_vs_korthikanti():
    """Korthikanti et al. 2022: s·b·h·(34 + 5·a·s/h) bytes per layer in 16 bit. Without dropout (two s·b·h
    masks, an a·s²·b mask and the 2·a·s²·b dropout output) that is 32·sbh + 2·a·s²·b, which minitx keeps
    exactly, plus the norms' statistics (2 norms × mean and rstd × s·b × 2 bytes), which the paper leaves out."""
    cfg = P("gpt2")
    s, b, h, a = 1024, 1, 768, 12
    parts = formulas.saved_activation_breakdown(cfg, b, s, "float16")
    assert parts["layers"] == cfg.n_layers * (32 * s * b * h + 2 * a * s * s * b + 2 * 2 * s * b * 2)
    # the loss's cache (logits, targets, lse) is extra, and for GPT-2 small it is large: V·T·itemsize
    with_loss = formulas.saved_activation_bytes(cfg, b, s, "float16")
    without = formulas.saved_activation_bytes(cfg, b, s, "float16", include_loss=False)
    assert with_loss - without == s * b * (50257 * 2 + 8 + 2)


def test_inference_memory_rush_style():
    cfg = P("llama-2-7b")
    mem = formulas.inference_memory(cfg, 1, 4096, "bf16")
    assert mem["weights"] == formulas.param_bytes(cfg, "bf16")
    assert mem["kv_cache"] == 2 * 2 ** 30
    # at T = 4096 the (B, NH, T, T) scores are the largest single activation: 32·4096²·2 bytes
    assert mem["largest_activation"] == 32 * 4096 * 4096 * 2
    assert mem["total"] == mem["weights"] + mem["kv_cache"] + mem["largest_activation"]
    # a decode-sized forward (one token over a 4096-long cache): the scores row over the cache, 32 heads × 4096
    # keys, outweighs the logits (V = 32000); with a 1000-long cache, the logits are the largest
    dec = formulas.inference_memory(cfg, 1, 1, "bf16", kv_len=4096)
    sizes = formulas.activation_sizes(cfg, 1, 1, "bf16", kv_len=4096)
    assert dec["largest_activation"] == sizes["scores"] == 32 * 4096 * 2 > sizes["logits"] == 32000 * 2
    assert formulas.inference_memory(cfg, 1, 1, "bf16", kv_len=1000)["largest_activation"] == 32000 * 2
    assert dec["kv_cache"] == formulas.kv_cache_bytes(cfg, 1, 4096, "bf16")


# ---- the decoder's phases ------------------------------------------------------------------------------------

def test_decode_step_attention_grows_linearly_and_recompute_quadratically():
    cfg = P("gpt2")
    d = lambda t: formulas.decode_step(cfg, 1, t).flops  # noqa: E731
    r = lambda t: formulas.recompute_step(cfg, 1, t).flops  # noqa: E731
    # one more cached key adds the same work every step: scores + mix 4·L·Q per key, softmax 7·L·NH
    step = 4 * cfg.n_layers * cfg.q_dim + 7 * cfg.n_layers * cfg.n_heads
    assert d(101) - d(100) == d(11) - d(10) == step
    assert (r(101) - r(100)) - (r(11) - r(10)) > 0                         # recompute's increments grow
    assert formulas.recompute_step(cfg, 2, 9) == formulas.forward_pass(cfg, 2, 10, phase="decode")
    # decode: matmuls read every weight once per step, whatever B; activations scale with B
    one, eight = formulas.decode_step(cfg, 1, 50), formulas.decode_step(cfg, 8, 50)
    assert one["layers.0.mlp.up"].reads["weights"] == eight["layers.0.mlp.up"].reads["weights"]
    assert eight["layers.0.attn.scores"].reads["kv_cache"] == 8 * one["layers.0.attn.scores"].reads["kv_cache"]
    assert "select_last" not in one


def test_prefill_keeps_only_last_rows_for_the_head():
    cfg = P("llama-3-8b")
    pre, fwd = formulas.prefill(cfg, 2, 100), formulas.forward_pass(cfg, 2, 100, phase="prefill")
    assert pre["select_last"].reads == {"activations": 2 * 4096 * 4 + 2 * 8}
    assert pre["lm_head"].macs * 100 == fwd["lm_head"].macs
    assert pre["layers.3.attn.qkv"] == fwd["layers.3.attn.qkv"]
    assert pre["layers.3.attn.rope"].writes["kv_cache"] == 2 * 100 * formulas.kv_bytes_per_token(cfg) // 32
    assert "kv_cache" not in fwd["layers.3.attn.rope"].writes


# ---- the API itself ------------------------------------------------------------------------------------------

def test_ledgers_sum_filter_and_name_like_counts():
    cfg = P("tiny-llama")
    step = formulas.training_step(cfg, 2, 3)
    parts = [step.filter(phase=ph) for ph in ("forward", "backward", "optimizer")]
    for key in ("flops", "macs", "bytes_read", "bytes_written"):
        assert getattr(step, key) == sum(getattr(p, key) for p in parts)
    assert step.bytes_read == sum(step.reads.values())
    assert set(step.reads) == {"weights", "activations", "gradients", "optimizer_state"}
    big = formulas.forward_pass(cfg.replace(n_layers=11), 1, 2)
    names = big.filter("layers.1").names
    assert names and all(n.startswith("layers.1.") for n in names)                 # not layers.10.*
    assert big.filter("lm_head").records == [r for r in big if r.name == "lm_head"]
    with pytest.raises(KeyError):
        big["layers.11.attn.qkv"]


def test_op_names_follow_the_model():
    gpt, llama = formulas.training_step(P("tiny-gpt2"), 1, 2), formulas.training_step(P("tiny-llama"), 1, 2)
    fwd, bwd = gpt.filter(phase="forward").names, gpt.filter(phase="backward").names
    assert fwd[:4] == ["embed", "layers.0.ln_1", "layers.0.attn.qkv", "layers.0.attn.split"]
    assert "layers.1.attn.rope" in llama.filter(phase="backward")
    assert "layers.1.attn.split" not in llama.filter(phase="backward")
    assert fwd[-3:] == ["ln_f", "lm_head", "loss"]
    assert bwd[:3] == ["loss", "lm_head", "ln_f"] and bwd[-1] == "embed"
    assert gpt.filter(phase="optimizer").names == ["adamw"]


@pytest.mark.parametrize("dtype, size", [("float32", 4), ("float64", 8), ("float16", 2), ("bfloat16", 2),
                                         ("int8", 1), ("bf16", 2), ("fp32", 4)])
def test_itemsize(dtype, size):
    assert formulas.itemsize(dtype) == size


def test_itemsize_accepts_numpy_dtypes_and_rejects_unknown():
    import numpy as np
    assert formulas.itemsize(np.dtype("float64")) == 8
    with pytest.raises(ValueError, match="dtype"):
        formulas.itemsize("float12")
    with pytest.raises(ValueError, match="int4 is 4 bits"):           # half a byte: minitx.dtypes.nbytes
        formulas.itemsize("int4")


def test_bad_arguments_are_refused():
    cfg = P("tiny-gpt2")
    with pytest.raises(ValueError, match="n_ctx"):
        formulas.training_step(cfg, 1, cfg.n_ctx + 1)
    with pytest.raises(ValueError, match="B"):
        formulas.forward_pass(cfg, 0, 4)
    with pytest.raises(ValueError, match="t"):
        formulas.decode_step(cfg, 1, -1)
    with pytest.raises(ValueError, match="n_ctx"):
        formulas.decode_step(cfg, 1, cfg.n_ctx)                  # t + 1 keys would not fit
    with pytest.raises(TypeError, match="Config"):
        formulas.num_params({"d_model": 4})


def test_a_70b_model_is_described_in_milliseconds_without_allocating():
    cfg = P("llama-2-70b")
    tracemalloc.start()
    start = time.perf_counter()
    n = formulas.num_params(cfg)
    step = formulas.training_step(cfg, 1, 4096, "bfloat16")
    total = step
    mem = formulas.training_memory(cfg, 1, 4096, "bfloat16")
    inf = formulas.inference_memory(cfg, 8, 4096, "bfloat16")
    formulas.decode_step(cfg, 8, 4095, "bfloat16")
    formulas.prefill(cfg, 8, 4096, "bfloat16")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 68_976_648_192             # the count model catalogs list for meta-llama/Llama-2-70b(-chat)-hf
    assert total.macs > 0 and mem["weights"] == 2 * n and inf["kv_cache"] > 0
    assert elapsed < 1.0                   # (with tracemalloc slowing it down; ~0.1 s without)
    assert peak < 5 * 2 ** 20              # a few thousand Records, no arrays
