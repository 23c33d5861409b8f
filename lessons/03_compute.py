# %% [markdown]
# # Lesson 3: compute, 2 FLOPs per parameter per token (and where that rule comes from)
#
# The talk's compute claims:
#
# * a forward pass costs about **2 FLOPs per parameter per token**: every weight is multiplied by the
#   token's activation and added to a sum once;
# * the backward pass costs **twice** the forward: for each weight matrix one matmul gives the gradient
#   with respect to the weights (dW, to update them) and one the gradient with respect to the inputs
#   (dX, to pass back to earlier layers);
# * so training costs about **3 × inference**, about **6 FLOPs per parameter per token**.
#
# We count every op of a small model as it runs, compare with the exact formulas and with the rules of
# thumb, then look at what the rules leave out (attention) and why published formulas disagree.
#
# First, what is being counted. minitx states its conventions once, in `minitx.conventions`:

# %%
import numpy as np

from minitx import Config, Transformer, conventions, count, formulas

doc = conventions.__doc__
start = doc.find("What one FLOP is")
end = doc.find("What attention counts")
print(doc[start:end].strip() if 0 <= start < end else doc.strip().splitlines()[0])

# %% [markdown]
# ## 1. One matmul (slide 6)
#
# `small-llama` (4 layers, d = 128, no biases) on B = 4 sequences of T = 64 tokens. The MLP's up projection
# of layer 0 is an (N, K) @ (K, M) matmul with N = B·T rows, K = d, M = 2·d_ff (the gated MLP computes gate
# and up in one matmul). It does N·K·M multiply-adds: N·K·M MACs, 2·N·K·M FLOPs.

# %%
cfg = Config.preset("small-llama")
B, T = 4, 64
N = B * T
model = Transformer(cfg, seed=0)
rng = np.random.default_rng(0)
tokens = rng.integers(0, cfg.vocab_size, (B, T))
targets = np.roll(tokens, -1, axis=1)

with count() as infer:
    model.forward(tokens)

up = infer.filter("layers.0.mlp.up").totals()
K, M = cfg.d_model, 2 * cfg.d_ff
print(f"layers.0.mlp.up: ({N}, {K}) @ ({K}, {M})")
print(f"  MACs  counted {up.macs:>12,}   N·K·M   = {N * K * M:>12,}")
print(f"  FLOPs counted {up.flops:>12,}   2·N·K·M = {2 * N * K * M:>12,}")
assert up.macs == N * K * M and up.flops == 2 * N * K * M

# %% [markdown]
# ## 2. Forward ≈ 2 FLOPs per parameter per token (slide 6)
#
# Summed over the whole forward, by kind of op:

# %%
P = model.num_params()
tokens_n = B * T
fwd = infer.flops
print(f"{'op':<12} {'FLOPs':>14} {'share':>7}")
for op, t in sorted(infer.by("op").items(), key=lambda kv: -kv[1].flops):
    print(f"{op:<12} {t.flops:>14,} {t.flops / fwd:>7.1%}")
fwd_formula = formulas.forward_pass(cfg, B, T).flops
print(f"{'total':<12} {fwd:>14,}   formula forward_pass: {fwd_formula:,}")
assert fwd == fwd_formula

# %% [markdown]
# The matmuls of the linear layers are exactly 2 FLOPs per *matmul* weight per token: every weight matrix
# and the LM head, but not the norms' scales, and not the token embedding, which is a table lookup. The
# attention scores (q·kᵀ) and mix (p·v) are matmuls too, but between activations: no weight is involved,
# and their cost grows with T. The rest (norms, softmax, activations, RoPE) is O(d) per token against the
# matmuls' O(d²).

# %%
matmul = infer.filter(op="matmul").flops
attention = infer.filter(op="attention").flops
W = formulas.matmul_params(cfg)
print(f"linear layers: counted {matmul:>13,}   2·(matmul weights)·tokens = 2·{W:,}·{tokens_n} = "
      f"{2 * W * tokens_n:,}")
print(f"scores + mix:  counted {attention:>13,}   4·L·T·(NH·HS)·tokens = "
      f"{formulas.attention_flops_palm(cfg, T) * tokens_n:,}")
print(f"forward total: counted {fwd:>13,}   2·P·tokens = {2 * P * tokens_n:,} ({fwd / (2 * P * tokens_n) - 1:+.1%}); "
      f"+ attention: {2 * P * tokens_n + attention:,} ({fwd / (2 * P * tokens_n + attention) - 1:+.1%})")
assert matmul == 2 * formulas.matmul_params(cfg) * tokens_n
assert attention == formulas.attention_flops_palm(cfg, T) * tokens_n

# %% [markdown]
# ## 3. Backward = dX + dW = 2 × forward (slide 6)
#
# Now a training step. For every linear layer the backward runs two matmuls the size of the forward one:
# dX = dY·Wᵀ and dW = Xᵀ·dY. The attention matmuls do the same (dq and dk from the scores, dp and dv from
# the mix). So, op by op, the backward's MACs are exactly twice the forward's:

# %%
with count() as train:
    model.loss_and_grads(tokens, targets)

print(f"{'op':<22} {'forward MACs':>14} {'backward MACs':>14} {'ratio':>6}")
for name in ("layers.0.attn.qkv", "layers.0.attn.scores", "layers.0.attn.mix", "layers.0.attn.proj",
             "layers.0.mlp.up", "layers.0.mlp.down", "lm_head"):
    f = train.filter(name, phase="forward").macs
    b = train.filter(name, phase="backward").macs
    print(f"{name:<22} {f:>14,} {b:>14,} {b / f:>6.2f}")
    assert b == 2 * f
fwd_train = train.filter(phase="forward").flops
bwd_train = train.filter(phase="backward").flops
print(f"\nwhole step: forward {fwd_train:,} FLOPs, backward {bwd_train:,} FLOPs: ratio {bwd_train / fwd_train:.4f}")

# %% [markdown]
# The whole backward is not exactly 2× because the non-matmul ops are not: a norm's or a softmax's
# backward has its own per-element cost, and the loss (in the training forward only) has its own. They
# are a few percent of the FLOPs, so the ratio lands near 2 anyway.
#
# ## 4. Training ≈ 3 × inference ≈ 6·P·tokens (slide 6)

# %%
train_fb = fwd_train + bwd_train
print(f"training (forward + backward) {train_fb:,} FLOPs")
print(f"  3 × inference forward        {3 * fwd:,}  ({train_fb / (3 * fwd) - 1:+.2%})")
print(f"  6·P·tokens                   {6 * P * tokens_n:,}  ({train_fb / (6 * P * tokens_n) - 1:+.2%})")
step = formulas.training_step(cfg, B, T)
assert train_fb == step.filter(phase="forward").flops + step.filter(phase="backward").flops

# %% [markdown]
# 3 × inference is right to a fraction of a percent. 6·P·tokens is off by the same amount as 2·P·tokens:
# it leaves out attention's scores and mix (and charges the embedding lookup as if it were a matmul).
# The optimizer step (15 FLOPs per parameter for AdamW) is per step, not per token, and negligible:

# %%
adamw = step.filter(phase="optimizer").flops
print(f"AdamW: {adamw:,} FLOPs = {adamw / train_fb:.2%} of this step's forward + backward")

# %% [markdown]
# ## 5. The attention term, and when it matters (slide 9)
#
# Per token, the scores and the mix cost 4·L·T·(NH·HS) FLOPs in the forward (2·T·HS per head for each),
# against 2·P for the weights. For a GPT-2 shape (NH·HS = d, P ≈ 12·L·d²) the ratio is 4·L·T·d / (24·L·d²)
# = T / (6·d): negligible for short contexts, large for long ones. Below, that GPT-2-shape estimate sits
# beside the exact ratio of attention's scores and mix to 2·P per token (which also holds for GQA, gated MLPs
# and free head sizes) and the exact attention share of the whole forward, on real models at batch 1:

# %%
print(f"{'model':<12} {'T':>6} {'T/(6d), GPT-2 shape':>20} {'exact attention / 2P':>21} "
      f"{'attention share of the forward':>31}")
attention_share = {}
for name, T_ in (("gpt2", 1024), ("llama-2-7b", 4096), ("llama-3-8b", 8192), ("gemma-2b", 8192),
                 ("llama-3-70b", 8192)):
    c = Config.preset(name)
    costs = formulas.forward_pass(c, 1, T_)
    total = costs.flops
    att = costs.filter(op="attention").flops          # the scores and mix matmuls
    attention_share[name] = att / total
    per_2p = formulas.attention_flops_palm(c, T_) / (2 * formulas.num_params(c))
    print(f"{name:<12} {T_:>6} {T_ / (6 * c.d_model):>20.1%} {per_2p:>21.1%} {att / total:>31.1%}")

# %% [markdown]
# At a few thousand tokens attention is a tenth to a fifth of the forward pass; a big model at the same
# context spends relatively less on it, because its d is larger. The GPT-2-shape estimate T/(6d) is only a
# guide: it overstates the ratio wherever P is larger than 12·L·d², as with a large vocabulary or a wide
# gated MLP (Gemma-2B: 66.7% against the exact 24.1%). (During decoding, lesson 4, each step's
# attention also reads the whole cache: that costs memory traffic more than FLOPs.)
#
# ## 6. FLOPs or MACs? (slide 6)
#
# Rush's slides count multiply-adds; fvcore and ptflops count MACs too; everyone else counts 2 FLOPs per
# multiply-add. A counter that matches Rush reads exactly half:

# %%
mm = infer.filter(op="matmul").totals()
print(f"linear layers of the forward: {mm.macs:,} MACs = {mm.flops:,} FLOPs / 2")
assert 2 * mm.macs == mm.flops

# %% [markdown]
# ## 7. Why published formulas disagree (slide 6)
#
# Take GPT-2 small at T = 1024 and ask for the training FLOPs per token, as an MFU calculation would:
#
# * **PaLM / nanoGPT**: 6·N + 12·L·H·Q·T, with N = params − wpe (nanoGPT keeps the tied wte: it is the LM head);
# * **llm.c**: 6·N + 6·L·C·T with N = all parameters: Kaplan's attention term, half of PaLM's
#   (count only q·kᵀ, or both products over the causal half);
# * **Kaplan's 6N**: N without any embedding, and no attention term ("we do not include context-dependent
#   terms"): the LM head's matmul is left out;
# * the exact count of the code, from `formulas.training_step` (the formula that matched the counters to
#   the FLOP above, at GPT-2's real shape).

# %%
gpt2 = Config.preset("gpt2")
Tg = 1024
wpe = gpt2.n_ctx * gpt2.d_model
step_g = formulas.training_step(gpt2, 1, Tg)
exact_per_token = (step_g.filter(phase="forward").flops + step_g.filter(phase="backward").flops) / Tg
per_token = {
    "PaLM / nanoGPT: 6(P − wpe) + 12·L·H·Q·T": formulas.palm_training_flops_per_token(
        gpt2, Tg, n_params=formulas.num_params(gpt2) - wpe),
    "llm.c: 6P + 6·L·C·T": 6 * formulas.num_params(gpt2) + 3 * formulas.attention_flops_kaplan(gpt2, Tg),
    "Kaplan: 6N, N non-embedding": formulas.approx_training_flops_6P(gpt2, 1, formulas.non_embedding_params(gpt2)),
    "exact count (forward + backward)": exact_per_token,
}
for name, v in per_token.items():
    print(f"{name:<42} {v:>14,.0f} FLOPs/token  {v / exact_per_token - 1:+7.1%}")
forward_g = step_g.filter(phase="forward")
head = forward_g["lm_head"].flops / forward_g.flops
print(f"the LM head alone is {head:.1%} of GPT-2 small's forward FLOPs at T = {Tg}")

# %% [markdown]
# The PaLM form lands within a fraction of a percent of the exact count (it counts the full T×T attention
# rectangle, as minitx's BLAS matmuls do); llm.c's is 6% lower (half the attention term); Kaplan's 6N is
# 40% lower, because at GPT-2 small's size the vocabulary matmul (27% of the forward) and attention are not
# small. An MFU quoted from one formula is 6.5% higher than the same run quoted from the other: always ask
# which N and which attention term.

# %% [markdown]
# ## 8. Training sees the whole sequence; generation sees one token at a time (slide 9)
#
# In training every token of the sequence is known in advance, so one forward pass over T tokens predicts all T
# next tokens at once: the LM head runs once, on B·T rows. Generating the same T tokens takes T passes, one
# after another, because token t + 1 needs token t (slide 10). Counted: the forward below, and the same T
# tokens produced step by step (a prefill of the first token, then T − 1 cached decode steps, teacher-forced so
# both see the same ids). The linear layers do exactly the same work either way, each token meeting each weight
# once; what differs is that the parallel pass does it as matrix-matrix products, in one go.

# %%
from minitx import KVCache

T9, B9 = 16, 2
ids9 = np.random.default_rng(9).integers(0, cfg.vocab_size, (B9, T9))
with count() as one_pass:
    model.forward(ids9)
cache9 = KVCache(cfg, batch=B9, max_len=T9)
with count() as step_by_step:
    model.prefill(ids9[:, :1], cache9)
    for t in range(1, T9):
        model.decode(ids9[:, t], cache9)
passes = sum(1 for r in step_by_step if r.name == "lm_head")
predicted_rows = one_pass.filter("lm_head").macs // (cfg.d_model * cfg.vocab_size)
linear_parallel = one_pass.filter(op="matmul").flops
linear_serial = step_by_step.filter(op="matmul").flops
print(f"one forward over T={T9}: {predicted_rows} next-token predictions ({B9}·{T9}) in 1 pass")
print(f"generating T={T9} tokens: {passes} passes, one after another")
print(f"linear-layer FLOPs: {linear_parallel:,} in one pass, {linear_serial:,} over {passes} steps")
assert predicted_rows == B9 * T9 and passes == T9 and linear_parallel == linear_serial
