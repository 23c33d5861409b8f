# %% [markdown]
# # Lesson 4: the KV cache, by counts
#
# Generating text is serial: token t + 1 cannot be computed before token t is known. The naive decoder
# re-runs the whole model over the whole sequence for every new token. But attention is the only op that
# looks at other positions, and it only needs their **keys and values**; everything else about a past
# token is already computed and never changes. So we keep K and V of every past token, for every layer,
# in a **KV cache**, and each step runs the model over the one new token: memory traded for compute.
#
# We count both decoders on a small model, check the cache's size against the formula
# 2 · layers · kv_heads · head_dim · tokens · batch · bytes, and then size the cache of real models, where
# grouped-query attention (GQA) and multi-query attention (MQA) make a large difference that several
# calculators miss. Units: KiB = 1024 bytes, GB = 1e9 bytes.

# %%
import numpy as np

from minitx import Config, KVCache, Transformer, count, formulas, generate, plots

# %% [markdown]
# ## 1. Cached and recomputed decoding produce the same tokens (slides 10, 11)
#
# `small-llama`: 4 layers, d = 128, 4 query heads sharing 2 key/value heads (GQA), float32. Two prompts of
# 16 tokens, 48 new tokens each, greedy.

# %%
cfg = Config.preset("small-llama")
model = Transformer(cfg, seed=0)
B, prompt_len, n_new = 2, 16, 48
prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, prompt_len))

with count() as cached_count:
    cached = generate(model, prompts, n_new, use_cache=True)
with count() as recompute_count:
    recomputed = generate(model, prompts, n_new, use_cache=False)
print("same tokens:", cached == recomputed)
print(f"FLOPs to generate {B} × {n_new} tokens: cached {cached_count.flops:,}, recomputed {recompute_count.flops:,} "
      f"({recompute_count.flops / cached_count.flops:.1f}x)")
assert cached == recomputed

# %% [markdown]
# ## 2. One step: O(t) with the cache, O(t²) without (slides 10, 11)
#
# With t tokens already in the cache, a cached step runs every matmul on B rows (one new token per
# sequence) and its attention reads the t + 1 cached keys and values: the matmuls cost a constant 2 FLOPs per
# weight per sequence, attention a cost linear in t. Without the cache, the step is a full forward over
# t + 1 tokens: linear in t for the matmuls, quadratic for attention. Counted, step by step, next to
# `formulas.decode_step` and `formulas.recompute_step`:

# %%
max_len = 128
ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (B, max_len))
cache = KVCache(cfg, batch=B, max_len=max_len)
model.prefill(ids[:, :prompt_len], cache)
steps = {}
for t in range(prompt_len, max_len):
    with count() as step:
        model.decode(ids[:, t], cache)
    steps[t] = step

print(f"{'t':>4} {'cached step':>12} {'formula':>12} {'recompute':>14} {'formula':>14} {'ratio':>7}")
ratios = {}
for t in (16, 32, 64, 96, 127):
    with count() as again:
        model.forward(ids[:, :t + 1])
    dec = formulas.decode_step(cfg, B, t).flops
    rec = formulas.recompute_step(cfg, B, t).flops
    ratios[t] = again.flops / steps[t].flops
    print(f"{t:>4} {steps[t].flops:>12,} {dec:>12,} {again.flops:>14,} {rec:>14,} {ratios[t]:>6.1f}x")
    assert steps[t].flops == dec and again.flops == rec

# %% [markdown]
# The recompute step costs about t times the cached one: over n generated tokens the naive decoder does
# O(n²) work for the matmuls (O(n³) for attention), the cached one O(n) (O(n²)). What grows in the cached
# step is its attention, and what it *reads*: every step reads the whole cache in use.

# %%
print(f"{'t':>4} {'kv_cache bytes read':>20} {'2·L·KV·HS·(t+1)·B·4':>22} {'attention FLOPs':>16}")
for t in (16, 64, 127):
    read = steps[t].reads["kv_cache"]
    by_hand = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * (t + 1) * B * 4
    att = steps[t].filter(op="attention").flops
    print(f"{t:>4} {read:>20,} {by_hand:>22,} {att:>16,}")
    assert read == by_hand

# %% [markdown]
# ## 3. The cache's size (slide 11)
#
# K and V, for each layer and each key/value head, head_dim numbers per token: 2·L·KV·HS·S·B values. The
# cache above holds S = 128 positions for B = 2 sequences in float32:

# %%
formula_bytes = formulas.kv_cache_bytes(cfg, B, max_len, "float32")
by_hand = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * max_len * B * 4
print(f"cache.nbytes {cache.nbytes:,} B; formula {formula_bytes:,} B; "
      f"2·{cfg.n_layers}·{cfg.n_kv_heads}·{cfg.head_dim}·{max_len}·{B}·4 = {by_hand:,} B")
assert cache.nbytes == formula_bytes == by_hand

per_token = formulas.kv_bytes_per_token(cfg, "float32")
written = steps[64].writes["kv_cache"]
print(f"each decode step writes {written:,} B of K and V = {per_token:,} B per token × {B} sequences")
assert written == per_token * B

# %% [markdown]
# With multi-head attention (4 key/value heads, one per query head) the cache would be twice as large;
# GQA shares each K/V head between 2 query heads here.
#
# ## 4. Real models: GQA and MQA shrink the cache (slides 11, 12)
#
# Per token, in 16-bit (2 bytes per value):

# %%
print(f"{'model':<12} {'L':>3} {'NH':>3} {'KV':>3} {'HS':>4} {'bytes/token':>12} {'KiB':>7}  vs multi-head")
kv16 = {}
for name in ("gpt2", "llama-2-7b", "llama-3-8b", "mistral-7b", "gemma-2b", "gemma-7b"):
    c = Config.preset(name)
    kv16[name] = formulas.kv_bytes_per_token(c, "bfloat16")
    print(f"{name:<12} {c.n_layers:>3} {c.n_heads:>3} {c.n_kv_heads:>3} {c.head_dim:>4} {kv16[name]:>12,} "
          f"{kv16[name] / 1024:>7.1f}  ÷{c.n_heads // c.n_kv_heads}")
assert (kv16["llama-2-7b"], kv16["llama-3-8b"], kv16["gemma-2b"]) == (524_288, 131_072, 18_432)

# %% [markdown]
# Llama-2-7B keeps half a MiB per token: a 4096-token context is 2 GiB per sequence. Llama-3-8B has the
# same layers and head sizes but 8 key/value heads for 32 query heads: a quarter of that. Gemma-2B's single
# key/value head (MQA) takes 18 KiB per token.
#
# ## 5. The calculators that assumed multi-head attention (slide 11)
#
# kipply's post, NVIDIA's and Baseten's articles give the cache as 2 · 2 · L · d_model bytes per token in
# 16-bit, which is right only when KV · HS = d_model (multi-head attention, head_dim = d / heads). The
# EleutherAI cookbook's `calc_transformer_mem.py` uses bytes · hidden · layers: it also drops the factor 2
# for K *and* V. Web calculators repeat these mistakes: gpu_poor ("Can your GPU run this?",
# https://github.com/RahulSChand/gpu_poor, src/App.js) computes the KV cache as 2·ctx·2·2·hidden·layers bytes,
# without GQA; vllm-fit overcounted a GQA model's cache 8× (https://github.com/jranaraki/vllm-fit/issues/2);
# LMCache assumed head_dim = hidden / heads, which is wrong for Qwen3
# (https://github.com/LMCache/LMCache/issues/688). On the same models:

# %%
print(f"{'model':<12} {'exact':>10} {'2·2·L·d (MHA)':>14} {'error':>7} {'2·L·d (no K/V 2)':>17} {'error':>7}")
mha_error = {}
for name, exact in kv16.items():
    c = Config.preset(name)
    mha = 2 * 2 * c.n_layers * c.d_model
    no_two = 2 * c.n_layers * c.d_model
    mha_error[name] = mha / exact
    print(f"{name:<12} {exact:>10,} {mha:>14,} {mha / exact:>6.2f}x {no_two:>17,} {no_two / exact:>6.2f}x")

# %% [markdown]
# For the multi-head models with head_dim = d / heads (GPT-2, Llama-2-7B) the MHA formula is exact. It
# overstates Llama-3-8B and Mistral by 4×, Gemma-2B by 8×; and it *understates* Gemma-7B, whose 16 heads of
# 256 are 4096 wide against d_model = 3072 (assuming head_dim = d / heads is its own bug). Dropping the
# factor 2 halves everything.
#
# ## 6. What fits (slides 12, 13)
#
# After the weights, the rest of a GPU's memory holds the cache. How many tokens (summed over the batch)
# fit next to the bf16 weights on a 24 GB card and on an 80 GB one:

# %%
print(f"{'model':<12} {'weights':>9} {'tokens in 24 GB':>16} {'tokens in 80 GB':>16}")
fits = {}
for name in ("llama-2-7b", "llama-3-8b", "mistral-7b", "gemma-2b"):
    c = Config.preset(name)
    weights = formulas.param_bytes(c, "bfloat16")
    fits[name] = [max(0, int((cap - weights) // kv16[name])) for cap in (24e9, 80e9)]
    print(f"{name:<12} {weights / 1e9:>7.2f}GB {fits[name][0]:>16,} {fits[name][1]:>16,}")

# %% [markdown]
# Llama-2-7B on a 24 GB card has room for about 20,000 tokens: four full sequences of 4096 (Baseten's
# A10 example reaches the same batch of 4 with rounder numbers). Llama-3-8B's bigger weights are
# more than paid back by its 4× smaller cache. The cache, not the weights, is what limits the batch, and
# the batch is what makes decoding efficient (lesson 5). `minitx kv MODEL --dtype bf16 --batch B --seq T`
# prints these numbers for any preset or `config.json`.
#
# ## 7. Two ways to keep less: a sliding window, a smaller format (slides 11, 12)
#
# Mistral-7B (v0.1) attends to the last W = 4096 positions only. A query never looks further back, so the cache
# can keep a rolling window: position p lives in column p mod X, overwriting a key no query will read again (X
# is W plus room for one call's new tokens). And the cache may be stored in a smaller format than the weights:
# int8 keys and values take half of bf16's bytes. Allocate the caches (shape-only: the arrays have shapes and
# dtypes but no data, so a 32k-token cache costs nothing here) and read their sizes:

# %%
mistral = Config.preset("mistral-7b")
print(f"mistral-7b: window W = {mistral.sliding_window}, context n_ctx = {mistral.n_ctx:,}")
print(f"{'cache for one 32,768-token sequence':<38} {'positions':>10} {'bytes (allocated)':>18} {'formula':>15}")
window_caches = {}
for label, kv_format, rolling in (("full, bf16", "bfloat16", False), ("rolling window, bf16", "bfloat16", True),
                                  ("rolling window, int8", "int8", True)):
    shaped_cache = KVCache(mistral, batch=1, max_len=32_768, dtype=kv_format, rolling=rolling, chunk=1,
                           shape_only=True) if rolling else KVCache(mistral, 1, 32_768, kv_format, shape_only=True)
    formula = formulas.kv_cache_bytes(mistral, 1, 32_768, kv_format, rolling=rolling, chunk=1)
    window_caches[label] = shaped_cache.nbytes
    print(f"{label:<38} {shaped_cache.capacity:>10,} {shaped_cache.nbytes:>18,} {formula:>15,}")
    assert shaped_cache.nbytes == formula
# by hand: 2 (K, V) · 32 layers · 8 KV heads · 128 · 2 bytes = 131,072 bytes per position
assert window_caches["full, bf16"] == 131_072 * 32_768 and window_caches["rolling window, bf16"] == 131_072 * 4096

# %% [markdown]
# An 8× smaller cache for a 32k-token conversation, and half again in int8. (The window is a property of the
# model, trained into it; a smaller KV format trades a little accuracy for bytes.) A decode step reads only
# what the cache holds, so the window also caps the bytes each step reads. `minitx kv mistral-7b --seq 32768`
# (and `--kv-dtype int8`) prints both caches; its rolling one leaves room for a whole prompt chunk of W tokens
# per call (2W − 1 positions), where this one, written a token at a time (chunk=1), keeps exactly W.
#
# The whole section in one picture: the cache of one sequence in bf16 against its context, each model up to its
# own context length. Every point is the size of a cache allocated by shape. The slope is the bytes per token
# (GQA and MQA make it shallower); the rolling window makes Mistral's line flat from W on. Llama-3-8B and
# Mistral-7B keep the same 131,072 bytes per token, so their lines coincide up to 4k.

# %%
growth = {}
for name, label in (("llama-2-7b", "llama-2-7b (MHA: 32 KV heads of 32)"),
                    ("llama-3-8b", "llama-3-8b (GQA: 8 KV heads of 32)"),
                    ("gemma-2b", "gemma-2b (MQA: 1 KV head of 8, head_dim 256)"),
                    ("mistral-7b", f"mistral-7b (GQA), rolling window W = {mistral.sliding_window}")):
    c = Config.preset(name)
    contexts = list(range(512, c.n_ctx + 1, 512))
    rolling = c.sliding_window is not None
    growth[label] = (contexts, [KVCache(c, 1, n, "bfloat16", rolling=rolling, chunk=1 if rolling else None,
                                        shape_only=True).nbytes for n in contexts])
print(plots.draw("04_kv_cache_growth", plots.kv_cache_chart, growth,
                 title="KV cache of one sequence in bf16, allocated by shape"))
