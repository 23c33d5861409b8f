# %% [markdown]
# # Lesson 1: where the parameters live
#
# A transformer has four kinds of weights:
#
# * the **vocabulary tables**: the embedding, a table of V rows of d numbers, one row per token of the
#   vocabulary (GPT-2 also has a table of positions), and the **LM head** that turns the last hidden state
#   back into V scores. Many models *tie* the two: the head reuses the embedding table;
# * per layer, **attention**: the q, k, v and output projections;
# * per layer, the **MLP** (feed-forward): two matrices d × 4d in GPT-2, three d × F in the gated MLPs of
#   Llama and Gemma;
# * the scales (and shifts) of the norms, which hardly count.
#
# We count them three ways: by allocating a model and measuring its parameter buffer, with the exact
# closed form in `minitx.formulas`, and with the rule of thumb P ≈ 12·L·d² that the talk and kipply use.
# Then we check the closed form against the figures published for GPT-2, Llama, Mistral and Gemma.

# %%
from minitx import Config, Transformer, formulas

# %% [markdown]
# ## 1. A small model, allocated and counted (slide 8)
#
# `small-gpt2` has GPT-2's shape with small sizes: L = 4 layers, d = 128, V = 256. Every parameter lives in
# one flat buffer (`model.flat`); `model.table` names each tensor and says which part it belongs to.

# %%
cfg = Config.preset("small-gpt2")
model = Transformer(cfg, seed=0)
print(f"{'tensor':<26} {'shape':>12} {'parameters':>11}  part")
for spec in model.table[:14]:          # the embeddings, the first layer, and the start of the second
    print(f"{spec.name:<26} {str(spec.shape):>12} {spec.size:>11,}  {spec.part}")
print("...")

allocated = {}
for spec in model.table:
    allocated[spec.part] = allocated.get(spec.part, 0) + spec.size
breakdown = formulas.param_breakdown(cfg)
print(f"\n{'part':<12} {'allocated':>12} {'formula':>12}")
for part, n in allocated.items():
    print(f"{part:<12} {n:>12,} {breakdown[part]:>12,}")
    assert n == breakdown[part]
print(f"{'total':<12} {model.num_params():>12,} {formulas.num_params(cfg):>12,}")
assert model.num_params() == model.flat.size == formulas.num_params(cfg)

# %% [markdown]
# Per layer, GPT-2 has 12·d² + 13·d parameters: q, k, v (3·d² + 3·d with biases), the output projection
# (d² + d), the MLP's up and down matrices (4·d² + 4·d and 4·d² + d), and two LayerNorms (2·d each).
# So the whole model is V·d + n_ctx·d + L·(12·d² + 13·d) + 2·d:

# %%
d, L, V = cfg.d_model, cfg.n_layers, cfg.vocab_size
by_hand = V * d + cfg.n_ctx * d + L * (12 * d * d + 13 * d) + 2 * d
print(f"V·d + n_ctx·d + L·(12d² + 13d) + 2d = {by_hand:,}  (allocated: {model.num_params():,})")
assert by_hand == model.num_params()

# %% [markdown]
# ## 2. The GPT-2 family (slide 8)
#
# The same formula for the four published GPT-2 sizes (V = 50,257, n_ctx = 1024). These are the counts
# PyTorch reports for the Hugging Face checkpoints; the GPT-2 paper's table rounds them differently
# (117M, 345M, 762M, 1542M).

# %%
published = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
             "gpt2-xl": 1_557_611_200}
print(f"{'model':<12} {'L':>3} {'d':>5} {'exact formula':>15} {'published':>15} {'12·L·d² + V·d':>15} "
      f"{'embeddings':>10}")
for name, pub in published.items():
    c = Config.preset(name)
    exact = formulas.num_params(c)
    share = formulas.param_breakdown(c)["embedding"] / exact
    approx = formulas.approx_params_12Ld2(c, embedding=True)
    print(f"{name:<12} {c.n_layers:>3} {c.d_model:>5} {exact:>15,} {pub:>15,} {approx:>15,} {share:>10.1%}")
    assert exact == pub

# %% [markdown]
# For GPT-2 the rule of thumb is good: 12·L·d² + V·d misses only the biases, the norms and the position
# table. Note how large the embedding is for GPT-2 small: almost a third of the model.
#
# ## 3. Real Llama, Mistral and Gemma configs (slide 8)
#
# These models differ from GPT-2 in ways that change the count:
#
# * a **gated MLP**: three d × F matrices (gate, up, down) instead of two d × 4d;
# * **grouped-query attention** (GQA): fewer key/value heads than query heads, so k and v are smaller
#   (Gemma 2B goes all the way to a single kv head: multi-query attention);
# * a free **head_dim** (Gemma: 256, whatever d / heads is);
# * **untied** LM heads (Llama, Mistral): a second V × d matrix;
# * no biases, RMSNorm (a scale only), and no position table (RoPE has no parameters).
#
# We describe each model by the `config.json` fields Hugging Face publishes, read them with
# `Config.from_hf`, and count. Two more columns: the **vocabulary tables** (the embedding plus an untied LM
# head) as a share of the total, and the **non-embedding** count, the total without them: Kaplan's N leaves
# out both the embedding and the unembedding, and the non-embedding count is what names a model like
# "Gemma 2B".

# %%
hf_configs = {
    "Llama-2-7B": dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "Llama-3-8B": dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False),
    "Mistral-7B-v0.1": dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                            max_position_embeddings=32768, sliding_window=4096),
    "Gemma-2B": dict(model_type="gemma", vocab_size=256000, hidden_size=2048, intermediate_size=16384,
                     num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                     max_position_embeddings=8192, hidden_act="gelu"),
    "Gemma-7B": dict(model_type="gemma", vocab_size=256000, hidden_size=3072, intermediate_size=24576,
                     num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16, head_dim=256,
                     max_position_embeddings=8192, hidden_act="gelu"),
}
published = {"Llama-2-7B": 6_738_415_616, "Llama-3-8B": 8_030_261_248, "Mistral-7B-v0.1": 7_241_732_096,
             "Gemma-2B": 2_506_172_416, "Gemma-7B": 8_537_680_896}
real = {name: Config.from_hf(hf) for name, hf in hf_configs.items()}

print(f"{'model':<16} {'exact formula':>15} {'published':>15} {'vocab tables':>14} {'% of total':>10} "
      f"{'non-embedding':>15}")
for name, c in real.items():
    exact = formulas.num_params(c)
    parts = formulas.param_breakdown(c)
    vocab = parts["embedding"] + parts["lm_head"]       # the token table, and the LM head when it is untied
    print(f"{name:<16} {exact:>15,} {published[name]:>15,} {vocab:>14,} {vocab / exact:>10.1%} "
          f"{formulas.non_embedding_params(c):>15,}")
    assert exact == published[name]
    assert formulas.non_embedding_params(c) == exact - vocab

# %% [markdown]
# Every total matches the published figure to the parameter. These models are too big to allocate here
# (Llama-2-7B is 27 GB in float32), but the formula is the same one that counted `small-gpt2` above. To
# see it hold for the Llama and Gemma layouts too, shrink Gemma-2B to a laptop size, keeping everything
# that makes it Gemma (MQA, head_dim larger than d / heads, a gated GELU MLP, tied embeddings), and allocate:

# %%
mini_gemma = real["Gemma-2B"].replace(vocab_size=512, d_model=64, n_layers=2, head_dim=32, d_ff=256, n_ctx=64,
                                      name="mini-gemma")
m = Transformer(mini_gemma, seed=0)
print(f"mini-gemma: allocated {m.num_params():,}, formula {formulas.num_params(mini_gemma):,}")
assert m.num_params() == formulas.num_params(mini_gemma)

# %% [markdown]
# ## 4. Why "Gemma 2B" is closer to 3B (slide 5)
#
# The talk's hook. The name "2B" is the **non-embedding** count: the Gemma report lists 1,981,884,416
# non-embedding parameters. But Gemma's vocabulary has 256,000 tokens, so its embedding table alone is
# 256,000 × 2048 = 524,288,000 parameters: a fifth of the model.

# %%
gemma = real["Gemma-2B"]
gemma_non_embedding = formulas.non_embedding_params(gemma)
gemma_embedding = formulas.param_breakdown(gemma)["embedding"]
gemma_total = formulas.num_params(gemma)
print(f"non-embedding (what the name counts)  {gemma_non_embedding:>15,}")
print(f"embedding, 256,000 × 2048             {gemma_embedding:>15,}   {gemma_embedding / gemma_total:.1%}")
print(f"stored total                          {gemma_total:>15,}")
print(f"total if the head were its own matrix {gemma_total + gemma_embedding:>15,}   (untied-equivalent)")
assert gemma_non_embedding == 1_981_884_416 and gemma_total == 2_506_172_416

# %% [markdown]
# The stored model is 2.51B parameters, already a little closer to 3B than to 2B; and because the
# embedding is tied, the same 0.52B table is used a second time as the LM head: counted as a separate
# matrix (what the LM head costs in compute), Gemma 2B is a 3.03B model. A big vocabulary is cheap to
# look up but expensive to store and to multiply by at the output.
#
# ## 5. When 12·L·d² misleads (slide 8)
#
# 12·L·d² assumes d² for each of q, k, v and o (4·d²) and an ungated MLP of 4·d (8·d²) per layer. Compare it
# with the exact count of what is in the layers (attention + MLP + norms; no embeddings, no LM head), and
# look at the parameters per layer in units of d²:

# %%
print(f"{'model':<16} {'12·L·d²':>15} {'in the layers':>15} {'per layer':>10} {'rule error':>11}  "
      "what breaks the rule")
why = {"GPT-2 small": "nothing much: biases and norms",
       "Llama-2-7B": "gated MLP, but F = 2.69·d makes 3·d·F ≈ 8·d²",
       "Llama-3-8B": "gated F = 3.5·d (10.5·d²); GQA: k and v are ¼ of d² each",
       "Mistral-7B-v0.1": "the same layers as Llama-3-8B",
       "Gemma-2B": "gated F = 8·d (24·d²); MQA: k and v are 1/8 of d² each",
       "Gemma-7B": "gated F = 8·d (24·d²); q, o are 4096 wide, not d = 3072"}
rule_error, per_layer = {}, {}
for name, c in [("GPT-2 small", Config.preset("gpt2"))] + list(real.items()):
    parts = formulas.param_breakdown(c)
    layers = parts["attention"] + parts["mlp"] + parts["norm"]
    rule = formulas.approx_params_12Ld2(c)
    rule_error[name] = rule / layers - 1
    per_layer[name] = layers / (c.n_layers * c.d_model ** 2)
    print(f"{name:<16} {rule:>15,} {layers:>15,} {per_layer[name]:>8.2f}d² {rule_error[name]:>+11.1%}  {why[name]}")

# %% [markdown]
# The rule holds within a percent for GPT-2 and for Llama-2 (whose d_ff = 11008 was chosen so that three
# gated matrices cost about what two 4·d ones do), is 8% low for Llama-3-8B and Mistral, and misses more
# than half of Gemma, whose MLP is three times wider than the rule assumes. Adding V·d for the embeddings
# does not rescue it: for Gemma-2B, 12·L·d² + V·d gives 1.43B against 2.51B. With gated MLPs, GQA and
# large vocabularies, count the matrices, as `formulas.param_breakdown` does:

# %%
columns = ("embedding", "lm_head", "attention", "mlp", "norm")
print(f"{'model':<16} " + " ".join(f"{p:>10}" for p in columns) + f" {'vocab tables':>13}")
for name, c in real.items():
    parts = formulas.param_breakdown(c)
    vocab = (parts["embedding"] + parts["lm_head"]) / parts["total"]
    print(f"{name:<16} " + " ".join(f"{parts[p] / parts['total']:>10.1%}" for p in columns) + f" {vocab:>13.1%}")

# %% [markdown]
# Shares of the total. The MLP holds most of every model's parameters; attention shrinks with GQA
# (Llama-3-8B, Mistral) and almost vanishes with MQA (Gemma-2B); the vocabulary tables (embedding + untied LM
# head) take 3.9% of Llama-2-7B, 13.1% of Llama-3-8B with its 128k vocabulary, and 20.9% of Gemma-2B.
# `minitx params MODEL` prints this breakdown for any preset or `config.json`.
