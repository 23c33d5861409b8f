# %% [markdown]
# # Lesson 2: memory, training vs inference
#
# The talk's claim, from its simple neural network: at inference we need the weights and **only the largest
# activation** (each one can be thrown away once the next layer has read it); at training we need the
# weights, their **gradients**, Adam's **two extra copies** of the weights, and **all the activations**,
# because the backward pass reads every one of them.
#
# We check each part on a small Llama-style model: measured from the buffers the code allocates and the
# arrays it keeps, next to the closed form in `minitx.formulas`. Then we scale the formulas up to a 7B model
# and look at what the dtype and the training recipe do. Units: MB = 1e6 bytes, GB = 1e9 bytes,
# GiB = 2^30 bytes.

# %%
import numpy as np

from minitx import AdamW, Config, Transformer, formulas, hardware, memory, plots

# %% [markdown]
# ## 1. Weights, gradients and Adam's state (slide 7)
#
# `small-llama`: 4 layers, d = 128, grouped-query attention, float32. One training step on B = 4 sequences
# of T = 64 tokens allocates the gradient buffer; AdamW allocates its moments m and v.

# %%
cfg = Config.preset("small-llama")
B, T, dtype = 4, 64, "float32"
model = Transformer(cfg, seed=0)
opt = AdamW(model, lr=1e-3)
tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T))
loss, grads = model.loss_and_grads(tokens, np.roll(tokens, -1, axis=1))
opt.step(grads)

P = model.num_params()
rows = [("weights", model.flat.nbytes, formulas.param_bytes(cfg, dtype), "P × 4 B"),
        ("gradients", model.grad_flat.nbytes, formulas.grad_bytes(cfg, dtype), "one per weight"),
        ("Adam m + v", opt.m.nbytes + opt.v.nbytes, formulas.adam_state_bytes(cfg, dtype), "2 × weights")]
print(f"P = {P:,} parameters, float32")
print(f"{'':<12} {'allocated':>12} {'formula':>12}")
for name, measured, formula, note in rows:
    print(f"{name:<12} {measured:>12,} {formula:>12,}   {note}")
    assert measured == formula
adam_copies = (opt.m.nbytes + opt.v.nbytes) / model.flat.nbytes
print(f"Adam's state / weights = {adam_copies:.0f}")

# %% [markdown]
# Adam keeps, for every weight, a running mean of its gradient (m) and of its squared gradient (v): two
# more arrays the size of the model. Weights + gradients + Adam is four copies of the model, before a
# single activation is stored. (The talk, after Rush, counts three: weights + two Adam copies, with no
# separate gradient buffer.)
#
# ## 2. What training keeps for the backward (slide 7)
#
# `memory.measure_saved_activations` runs the training forward exactly as `loss_and_grads` does and adds up
# the distinct arrays its caches hold for the backward: each layer's inputs to its matmuls, the norms'
# statistics, q, k, v, the attention probabilities, the MLP's hidden activations, and the logits.

# %%
saved = memory.measure_saved_activations(model, tokens)
saved_formula = formulas.saved_activation_bytes(cfg, B, T, dtype, include_loss=True)
print(f"saved activations: measured {saved:,} B, formula {saved_formula:,} B")
assert saved == saved_formula

parts = formulas.saved_activation_breakdown(cfg, B, T, dtype, include_loss=True)
for name, n in parts.items():
    if name != "total" and n:
        print(f"  {name:<12} {n:>12,} B  {n / parts['total']:6.1%}")

# %% [markdown]
# Most of it is in the layers, and each layer keeps about the same amount: the activations grow linearly
# with the depth, with the batch, and (through the attention probabilities, B·NH·T² per layer) with the
# square of the sequence length. At only B·T = 256 tokens they already weigh about three times the weights:

# %%
print(f"saved activations / weights = {saved / model.flat.nbytes:.2f}")

# %% [markdown]
# ## 3. What inference needs (slide 7)
#
# An inference forward keeps nothing for a backward. `memory.measure_inference_peak` runs `model.forward`
# under `tracemalloc` and reports the high-water mark of the arrays allocated during the call. The largest
# single activation a forward produces is a formula too:

# %%
sizes = formulas.activation_sizes(cfg, B, T, dtype)
largest_formula = max(sizes.values())
largest = memory.largest_activation(model, tokens)
peak = memory.measure_inference_peak(model, tokens)
for name, n in sizes.items():
    print(f"  {name:<10} {n:>10,} B" + ("   <- the largest" if n == largest_formula else ""))
print(f"largest activation: measured {largest:,} B, formula {largest_formula:,} B")
print(f"inference peak (tracemalloc): {peak:,} B = {peak / largest:.1f} × the largest activation")
print(f"training keeps {saved:,} B = {saved / peak:.1f} × the inference peak")
assert largest == largest_formula

# %% [markdown]
# The inference peak is a handful of activations, not just the largest one: this unfused NumPy forward
# holds the intermediate arrays of a block or two at a time (and the returned logits count too). The
# talk's point survives in the form that matters, which shows when we change the depth: training's
# memory grows with every layer, inference's does not.

# %%
print(f"{'layers':>6} {'training keeps':>16} {'formula':>16} {'inference peak':>16}")
by_depth = {}
for L in (2, 4, 8):
    c = cfg.replace(n_layers=L, name=f"small-llama-{L}L")
    m = Transformer(c, seed=0)
    kept = memory.measure_saved_activations(m, tokens)
    by_depth[L] = (kept, memory.measure_inference_peak(m, tokens))
    print(f"{L:>6} {kept:>16,} {formulas.saved_activation_bytes(c, B, T, dtype, include_loss=True):>16,} "
          f"{by_depth[L][1]:>16,}")
    assert kept == formulas.saved_activation_bytes(c, B, T, dtype, include_loss=True)

# %% [markdown]
# Four times the layers: about 3.7 times the saved activations (the logits do not grow with depth), and the
# same inference peak to within a few hundred bytes.
#
# ## 4. The totals (slides 5, 7)
#
# Training holds weights + gradients + Adam + saved activations at the start of the backward; inference
# holds the weights and the forward's peak.

# %%
train_total = model.flat.nbytes + model.grad_flat.nbytes + opt.m.nbytes + opt.v.nbytes + saved
infer_total = model.flat.nbytes + peak
print(f"training  {train_total:>12,} B   formula {formulas.training_memory(cfg, B, T, dtype)['total']:,} B")
print(f"inference {infer_total:>12,} B   = weights {model.flat.nbytes:,} + peak {peak:,}")
print(f"training / inference = {train_total / infer_total:.1f}")
assert train_total == formulas.training_memory(cfg, B, T, dtype)["total"]

# %% [markdown]
# As a picture (drawn here in a notebook; run as a script, the lesson saves a PNG and prints where). Every bar
# is made of the buffers the code allocated:

# %%
small_memory = {"training": {"weights": model.flat.nbytes, "gradients": model.grad_flat.nbytes,
                             "Adam m + v": opt.m.nbytes + opt.v.nbytes, "saved activations": saved},
                "inference": {"weights": model.flat.nbytes, "activations (forward peak)": peak}}
print(plots.draw("02_memory_small_llama", plots.memory_chart,
                 {f"{cfg.name}, B={B}, T={T}, float32: allocated and measured": small_memory},
                 title="training keeps weights, gradients, Adam's m and v, and every saved activation"))

# %% [markdown]
# ## 5. Scaled up: a 7B model (slides 5, 7)
#
# The same formulas for Llama-2-7B (6.74B parameters), without allocating anything. First the weights
# alone, by precision: the "a 7B model takes 14 GB" rule is 2 bytes per parameter. Each figure is counted too,
# by a shape-only model (`shape_only=True`: every array has its shape and dtype but no data), which lays out its
# weights as a real one would: 16-bit, or int8 / int4 matrices (weight-only quantization) with a float16 scale
# per 128 inputs while the embeddings, norms and head stay in bf16.

# %%
big = Config.preset("llama-2-7b")
P7 = formulas.num_params(big)
weights_by_dtype = {}
print(f"{'weights':<9} {'counted (shape-only model)':>27} {'formula':>15} {'bytes/param':>12}")
for dt in ("float32", "bfloat16", "int8", "int4"):
    shaped_model = Transformer(big, dtype=dt if dt in ("float32", "bfloat16") else "bfloat16",
                               weight_dtype=None if dt in ("float32", "bfloat16") else dt, shape_only=True)
    weights_by_dtype[dt] = shaped_model.weight_nbytes
    formula = formulas.param_bytes(big, shaped_model.precision)
    print(f"{dt:<9} {shaped_model.weight_nbytes:>27,} {formula:>15,} {shaped_model.weight_nbytes / P7:>12.3f}")
    assert shaped_model.weight_nbytes == formula

# %% [markdown]
# Fewer bits per weight, fewer bytes: and since a decode step reads every weight once (lesson 5), a lower floor
# on the time per token. On an H100 SXM's 3.35 TB/s:

# %%
print(plots.draw("02_weights_by_precision", plots.precision_chart, weights_by_dtype, P7,
                 bandwidth=hardware.get("h100-sxm").bandwidth, hardware_name="an H100 SXM",
                 title=f"{big.name}'s weights in four formats (counted by a shape-only model)"))

# %% [markdown]
# int8 is not quite 1 byte per parameter, nor int4 half a byte: the scales add 2 bytes per 128 weights, and the
# two vocabulary tables (0.26B parameters each) stay in bf16.
#
# Training needs more than the weights, and the sources disagree on how much more per parameter, because
# they assume different precisions:
#
# * the talk (after Rush): weights + Adam's two copies, 3 copies, here in bf16;
# * the same plus a gradient buffer: 4 copies;
# * mixed precision (EleutherAI, ZeRO): bf16 weights and gradients, plus an fp32 master copy and fp32 Adam
#   moments: 2 + 2 + 4 + 8 = **16 bytes per parameter**;
# * the Hugging Face docs: 18 bytes (fp16 + fp32 weights, fp32 gradients, Adam 8);
# * nanoGPT's checkpoint: 12 bytes (fp32 weights + Adam, no gradients);
# * pure fp32, as minitx trains: 4 + 4 + 8 = 16 bytes.

# %%
w16 = weights_by_dtype["bfloat16"]
recipes = {
    "talk: W + 2W (bf16)": 3 * w16,
    "W + G + 2W (bf16)": 4 * w16,
    "mixed precision, 16 B/param": formulas.mixed_precision_training_bytes(big, "mixed"),
    "Hugging Face, 18 B/param": formulas.mixed_precision_training_bytes(big, "hf"),
    "nanoGPT checkpoint, 12 B/param": formulas.mixed_precision_training_bytes(big, "checkpoint"),
    "pure fp32, 16 B/param": formulas.param_bytes(big, "float32") + formulas.grad_bytes(big, "float32")
                             + formulas.adam_state_bytes(big, "float32"),
}
for name, n in recipes.items():
    print(f"{name:<32} {n / 1e9:7.1f} GB  ({n / P7:4.1f} bytes per parameter)")

# %% [markdown]
# Then the activations, at one sequence of 4096 tokens in bf16. Training keeps all of them; inference needs
# about the largest one, plus the KV cache (lesson 4) if it generates.

# %%
T7 = 4096
saved7 = formulas.saved_activation_bytes(big, 1, T7, "bfloat16", include_loss=True)
sizes7 = formulas.activation_sizes(big, 1, T7, "bfloat16")
largest7 = max(sizes7, key=sizes7.get)
kv7 = formulas.kv_cache_bytes(big, 1, T7, "bfloat16")
print(f"training keeps       {saved7 / 1e9:8.2f} GB of activations (B=1, T={T7}, bf16)")
print(f"largest activation   {sizes7[largest7] / 1e9:8.2f} GB ({largest7}: B·NH·T·T, unfused attention)")
print(f"KV cache             {kv7 / 1e9:8.2f} GB")
train7 = recipes["mixed precision, 16 B/param"] + saved7
infer7 = w16 + sizes7[largest7] + kv7
print(f"training total (mixed precision) {train7 / 1e9:7.1f} GB vs inference total (bf16) {infer7 / 1e9:6.1f} GB: "
      f"{train7 / infer7:.1f}x")

# %%
w16_pair = 2 * w16            # bf16 weights and bf16 gradients
big_memory = {
    "training (mixed precision)": {"weights": w16, "gradients": w16,
                                   "fp32 master copy + Adam m, v": recipes["mixed precision, 16 B/param"] - w16_pair,
                                   "saved activations": saved7},
    "inference (bf16)": {"weights": w16, "largest activation": sizes7[largest7], "KV cache": kv7}}
print(plots.draw("02_memory_llama_2_7b", plots.memory_chart,
                 {f"{big.name}, one sequence of {T7} tokens (closed forms)": big_memory},
                 title="a 7B model: what training holds against what serving holds"))

# %% [markdown]
# A 7B model that serves from one 24 GB card needs several 80 GB cards to train. Without FlashAttention
# the attention probabilities (32 heads × 4096² per layer) dominate the saved activations; FlashAttention
# and activation recomputation exist to avoid keeping them. `minitx memory MODEL --train --recipe ...`
# prints these numbers for any preset or `config.json`.
