# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 9: fewer bits per weight — what it costs in accuracy, what it buys in speed
#
# Decoding one token reads every weight once and does two FLOPs with it (lesson 5), so at batch 1 the time of a
# step is the bytes of the weights over the memory's bandwidth. Store the weights in fewer bits and the step
# should get faster in proportion: bfloat16 halves the bytes, int8 quarters them, int4 takes an eighth (plus
# one float16 scale per 128 weights). This lesson runs all of them for real: the counts first (the bytes each
# step reads, counted by the ops and predicted by the formulas), then the accuracy they cost, then the speed on
# this machine.

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import minitx
from minitx import Config, Transformer, count, formulas

# %% [markdown]
# ## 1. Bytes per step: counted, by shape, by formula (slides 13, 14)
#
# A model in bfloat16 stores weights, activations and KV cache in 16 bits and computes in float32; `minitx.quantize`
# stores the layers' matrices as int8 or int4 with float16 scales and dequantizes them inside the matmul kernel.
# Each op records the bytes of the arrays it was handed, so a real run, a shape-only run and the closed form agree.

# %%
cfg = Config.preset("small-llama")
f32 = Transformer(cfg, seed=0)
bf16 = Transformer(cfg, dtype="bfloat16", init=False)
for name, view in bf16.params.items():
    view[...] = f32.params[name]
models = {"float32": f32, "bfloat16": bf16, "int8": minitx.quantize(bf16, "int8", group_size=32),
          "int4": minitx.quantize(bf16, "int4", group_size=32)}
prompt = np.arange(16)[None, :] % cfg.vocab_size
print(f"{'precision':<10}{'stored MB':>10}{'formula MB':>11}{'step reads':>12}{'shape-only':>12}{'formula':>12}")
for fmt, model in models.items():
    p = model.precision
    shaped = Transformer(cfg, dtype=p.activations, weight_dtype=p.weights, group_size=p.group_size, shape_only=True)
    reads = []
    for m in (model, shaped):
        cache = m.new_cache(1, 17)
        m.prefill(prompt, cache)
        with count() as step:
            m.decode([1], cache)
        reads.append(sum(step.reads.values()))
    want = sum(formulas.decode_step(cfg, 1, 16, p).reads.values())
    stored = model.flat.nbytes + sum(q.nbytes for q in model.quantized.values())
    print(f"{fmt:<10}{stored / 1e6:>10.3f}{formulas.param_bytes(cfg, p) / 1e6:>11.3f}{reads[0]:>12,}{reads[1]:>12,}"
          f"{want:>12,}")

# %% [markdown]
# ## 2. Accuracy: Hugging Face checkpoints (the test fixtures) at every precision (slide 5)
#
# The logits' largest difference from the float32 model, and how many greedy tokens (of each continuation the
# fixture holds) come out the same as float32's. bfloat16 keeps 8 bits of mantissa (about 2–3 decimal digits),
# float16 11; int8 and int4 put each group of 32 weights on a grid of 255 or 15 levels.

# %%
here = Path.cwd() if "__file__" not in globals() else Path(__file__).resolve().parent
fixtures = next(p for p in (here.parent / "tests" / "fixtures", here / "tests" / "fixtures") if p.exists())
print(f"{'fixture':<16}{'format':<10}{'max |Δlogit|':>13}{'greedy agree':>14}")
for name in ("gpt2_tiny", "llama_tiny_gqa", "mistral_tiny", "gemma_tiny"):
    with np.load(fixtures / f"{name}.npz", allow_pickle=False) as f:
        config = json.loads(str(f["config_json"]))
        params = {k[len("param/"):]: f[k] for k in f.files if k.startswith("param/")}
        tokens, logits = f["tokens"], f["logits"]
        prompts = [f["gen_prompt_0"], f["gen_prompt_1"]]
        paths = [f["gen_output_0"], f["gen_output_1"]]
    for fmt in ("bfloat16", "float16", "int8", "int4"):
        if fmt.startswith("int"):
            model = minitx.load_hf(config, params, weight_dtype=fmt, group_size=16)
        else:
            model = minitx.load_hf(config, params, dtype=fmt)
        err = np.abs(model.forward(tokens).astype(np.float64) - logits).max()
        agree = sum(int(np.cumprod(np.array(minitx.generate(model, [p], len(t))[0]) == t).sum())
                    for p, t in zip(prompts, paths))
        print(f"{name:<16}{fmt:<10}{err:>13.4f}{agree:>9} / {sum(len(t) for t in paths)}")

# %% [markdown]
# ## 3. A model trained by `minitx train`: validation loss at each precision (slide 5)
#
# Train a tiny byte-level Llama for a few seconds, then score the same validation windows (the held-out tail of
# the corpus) in each format: mean next-byte cross-entropy, computed here in float64 from each model's logits.

# %%
ckpt = Path(tempfile.mkdtemp()) / "tiny.ckpt"
subprocess.run([sys.executable, "-m", "minitx.cli", "train", "--preset", "tiny-llama", "--seq", "32", "--steps",
                "100", "--eval-every", "100", "--log-every", "100", "--out", str(ckpt)], check=True,
               capture_output=True)
trained, _, _ = minitx.load_model(ckpt)
tokens = minitx.data.ByteTokenizer().encode(minitx.data.load_corpus())
_, val = minitx.data.split(tokens, 0.1)
rng = np.random.default_rng(1)
windows = [minitx.data.get_batch(val, 8, 32, rng) for _ in range(8)]


def val_loss(model) -> float:
    total = 0.0
    for x, y in windows:
        z = model.forward(x).astype(np.float64).reshape(-1, model.cfg.vocab_size)
        z -= z.max(axis=1, keepdims=True)
        total += float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), y.reshape(-1)]))
    return total / len(windows)


half = Transformer(trained.cfg, dtype="bfloat16", init=False)
for name, view in half.params.items():
    view[...] = trained.params[name]
print(f"validation loss: float32 {val_loss(trained):.4f}, bfloat16 {val_loss(half):.4f}, "
      f"int8 {val_loss(minitx.quantize(trained, 'int8', group_size=16)):.4f}, "
      f"int4 {val_loss(minitx.quantize(trained, 'int4', group_size=16)):.4f}   (ln 256 = {np.log(256):.2f})")

# %% [markdown]
# ## 4. Speed: decode a model too big for the caches (slides 13, 14)
#
# A Llama-style model of 4 layers, C = 1024, vocabulary 2048: 56 M parameters, 225 MB in float32 (the
# benchmark, `benchmarks/decode_precision.py`, runs 8 layers). Every step at B = 1 is timed with `minitx.timed`
# (median of 5 runs of 3 steps, with its spread), next to the bytes the step reads (counted) and the time this
# machine's measured copy bandwidth predicts for them. What limits each format is printed with it: once the
# bytes are few, the kernels' arithmetic (widening, dequantizing) and the per-op overheads are what is left.

# %%
big = Config(name="decode-lesson", vocab_size=2048, n_ctx=256, d_model=1024, n_layers=4, n_heads=16, d_ff=2816,
             norm="rmsnorm", mlp="gated", activation="silu", position="rope", bias=False, tie_embeddings=False)
machine = minitx.hardware.get("this-machine")
b32 = Transformer(big, seed=0, attention="fused")
b16 = Transformer(big, dtype="bfloat16", attention="fused", init=False)
for name, view in b16.params.items():
    view[...] = b32.params[name]
runs = {"float32": b32, "bfloat16": b16, "int8": minitx.quantize(b16, "int8"), "int4": minitx.quantize(b16, "int4")}
timings, rows = [], []
for fmt, model in runs.items():
    cache = model.new_cache(1, 64)
    model.prefill(prompt, cache)
    with count() as step:
        model.decode([1], cache)
    t = minitx.timed(lambda: [model.decode([2], cache) for _ in range(3)], repeats=5, warmup=1).scaled(3)
    timings.append(t)
    rows.append((fmt, 1 / t.median, step.bytes, step.bytes / machine.bandwidth, t))
print(f"this machine: copy bandwidth {machine.bandwidth / 1e9:.1f} GB/s")
print(f"{'precision':<10}{'tokens/s':>9}{'vs fp32':>9}{'MB/step':>9}{'predicted':>11}{'measured':>10}{'ratio':>7}")
for fmt, tps, nbytes, predicted, t in rows:
    print(f"{fmt:<10}{tps:>9.1f}{tps / rows[0][1]:>8.2f}x{nbytes / 1e6:>9.1f}{predicted * 1e3:>9.2f}ms"
          f"{t.median * 1e3:>8.2f}ms{t.median / predicted:>6.1f}x")
# Each timing knows its own spread (the middle half of its runs, over the median): a noisy one says so.
noisiest = max(timings, key=lambda t: t.spread)
print(f"WARNING: this machine was too noisy to conclude: a timing spread by {noisiest.spread:.0%} of its median; "
      "close other programs and run again" if noisiest.noisy else
      "spreads within the noise limit: the ratios above can be trusted")
