# %% [markdown]
# # Lesson 5: prefill and decode, on the roofline
#
# With a KV cache, generating text happens in two phases:
#
# * **prefill** runs the whole prompt through the model at once. Every weight matrix is multiplied by a
#   *matrix* of T token rows: matrix-matrix work, lots of arithmetic per byte loaded.
# * **decode** then makes one token per sequence per step. Every weight matrix is multiplied by a single
#   row (a *vector*) per sequence: each weight is loaded from memory to be used once.
#
# The roofline model turns that difference into time. An op that does F FLOPs and moves M bytes needs at
# least max(F / peak, M / bandwidth) seconds. Its **arithmetic intensity** F / M decides which term wins,
# against the chip's **ridge point** peak / bandwidth.
#
# In this lesson we count both phases on a small model, compare the counts with the formulas, place them
# on the roofline of *this* CPU, measure them, and then do the same arithmetic for Llama on an H100.
# Conventions: 2 FLOPs per multiply-add; GB = 1e9 bytes; ms = 1e-3 s.

# %%
import numpy as np

from minitx import Config, KVCache, Transformer, count, formulas, hardware, measured, plots, roofline, serving

# %% [markdown]
# ## 1. The same matmul, two shapes (slide 14)
#
# The `reference` configuration is a 4-layer model with d_model = 256 that runs on a laptop. We prefill a
# prompt of T = 64 tokens and take one decode step, and count both.

# %%
cfg = Config.preset("reference")
model = Transformer(cfg, seed=0)
B, T = 1, 64
tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T))
cache = KVCache(cfg, batch=B, max_len=T + 16)

with count() as counter:
    model.prefill(tokens, cache)
    model.decode(tokens[:, -1], cache)

counted = {(r.phase, r.name): r for r in counter.records}
expected = {"prefill": formulas.prefill(cfg, B, T), "decode": formulas.decode_step(cfg, B, T)}

# %% [markdown]
# Look at one weight matrix, the fused q|k|v projection of layer 0: (N, C) @ (C, 3C), with N = B·T rows in
# prefill and N = B rows in decode. In float32 (4 bytes) its intensity is
# 2·N·C·3C / (4·(N·C + C·3C + N·3C)): close to N/2 when N is much smaller than C, and it levels off once
# N is larger than C.

# %%
C = cfg.d_model
print(f"{'phase':<8} {'rows N':>6} {'formula FLOPs':>14} {'counted FLOPs':>14} {'formula bytes':>14} "
      f"{'counted bytes':>14} {'FLOP/byte':>9}")
for ph, N in (("prefill", B * T), ("decode", B)):
    f = expected[ph]["layers.0.attn.qkv"]
    r = counted[(ph, "layers.0.attn.qkv")]
    by_hand = 2 * N * C * 3 * C + N * 3 * C          # + the bias add: 1 FLOP per output
    assert f.flops == r.flops == by_hand
    assert f.bytes_read + f.bytes_written == r.bytes_read + r.bytes_written
    print(f"{ph:<8} {N:>6} {f.flops:>14,} {r.flops:>14,} {f.bytes:>14,} "
          f"{r.bytes_read + r.bytes_written:>14,} {f.intensity:>9.2f}")

# %% [markdown]
# The formula (from the shapes alone) and the counter (from the arrays the op was handed) agree to the
# FLOP and to the byte. Prefill does 64× the arithmetic for barely more traffic; decode does 2 FLOPs per
# 4-byte weight it loads: an intensity of about 0.5 in float32 (about 1 in bf16).
#
# Whole phases, from the counter:

# %%
for ph in ("prefill", "decode"):
    t = counter.filter(phase=ph).totals()
    f = expected[ph]
    assert t == f.totals()          # FLOPs, MACs and bytes per category, all equal
    print(f"{ph:<8} {t.flops / 1e6:9.2f} MFLOP  {t.bytes / 1e6:7.2f} MB moved  intensity {t.intensity:6.2f} FLOP/B")

# %% [markdown]
# ## 2. The hardware: where is the ridge? (slides 13, 14)
#
# A chip is two numbers for the roofline: dense peak FLOP/s and memory bandwidth. Their ratio is the
# intensity an op needs to keep the arithmetic units busy. An H100 SXM needs about 295 FLOP per byte in bf16.
# We also measure this machine: NumPy's best float32 matmul, and a large array copy.

# %%
h100 = hardware.get("h100-sxm")
print(f"H100 SXM: {h100.peak('bf16') / 1e12:.1f} TFLOP/s bf16, {h100.bandwidth / 1e12:.2f} TB/s, "
      f"ridge {h100.ridge('bf16'):.1f} FLOP/B")
cpu = hardware.get("this-machine")      # measured once per process: about 2 seconds
print(f"this CPU: {cpu.peak('fp32') / 1e9:.1f} GFLOP/s fp32, {cpu.bandwidth / 1e9:.1f} GB/s, "
      f"ridge {cpu.ridge('fp32'):.1f} FLOP/B   ({cpu.notes.split(';')[0]})")

# %% [markdown]
# ## 3. Predicted against measured, here (slides 14, 17)
#
# `roofline.analyze` places every counted op on this machine's roofline. `measured.measure_inference`
# does the whole experiment. It times the prefill and the decode steps of the real model: a warm-up, then
# several runs, of which it keeps the median and reports the spread (`minitx.timed`; a single run on a busy
# machine can be many times the typical one). It times each op by the gap between successive counter
# records. Then it sets both against the roofline of the ops' own counts.

# %%
here = measured.measure_inference(model, cpu, batch=1, prompt=T, steps=16, repeats=7)
print(here.table())
decode = here.phases["decode"]
prefill = here.phases["prefill"]
print()
print(f"decode step: roofline {decode.predicted * 1e3:.3f} ms, measured {decode.measured * 1e3:.3f} ms "
      f"-> factor {decode.factor:.2f} (measured / predicted; {decode.timing})")
print(f"prefill:     roofline {prefill.predicted * 1e3:.3f} ms, measured {prefill.measured * 1e3:.3f} ms "
      f"-> factor {prefill.factor:.2f} ({prefill.timing})")
if here.warning:
    print("WARNING: " + here.warning)
print(plots.draw("05_measured_vs_roofline_cpu", plots.predicted_vs_measured_chart, here))

# %% [markdown]
# The roofline is a floor. Measured time can miss it by a wide factor for reasons the model leaves out:
#
# * **Per-op overhead.** A decode step is about 60 op calls, each one a Python call, a NumPy or Numba dispatch
#   and a counter check: a few microseconds each. Ops on one row (norms, softmax over a few keys) are
#   predicted in nanoseconds. Per op kind, their factors run into the hundreds. A GPU has the same
#   problem, where it is called kernel-launch overhead.
# * **BLAS efficiency.** The peak was measured on large square matmuls. Thin matrix-vector products and small
#   matmuls reach only a fraction of it.
# * **Caches.** The bandwidth was measured on arrays far larger than the CPU's caches. This model's weights
#   (13 MB in float32) may partly stay in the last-level cache between steps, which can make decode
#   *faster* than the DRAM roofline. Then the factor drops below 1.
# * **A shared machine.** Other processes compete for the cores, so repeat runs differ. Multi-threaded BLAS
#   suffers most: a thread that waits for a busy core stalls the whole matmul, which can make a prefill
#   100× slower than its roofline. If you see that, run again with `OPENBLAS_NUM_THREADS=1`.
#
# On a quiet machine, the matmuls, which dominate the predicted time, land much closer to their roofline
# than the tiny ops do. That is why real inference engines fuse the small ops into fewer kernels.

# %% [markdown]
# ## 4. The same arithmetic for real models (slide 14)
#
# Real models never need to run here: `formulas` gives every op's FLOPs and bytes from the config, and the
# roofline turns them into time. Two classic back-of-the-envelope forms come first.
#
# **Decode floor** = weight bytes / bandwidth, because every weight crosses the memory bus once per step.
# For Llama-2-7B in bf16 on an H100 SXM that is 6,738,415,616 × 2 bytes / 3.35 TB/s.

# %%
for name in ("llama-2-7b", "llama-3-8b"):
    c = Config.preset(name)
    read = serving.decode_floor(c, h100, "bf16", batch=1, context=0, embedding="read")
    gather = serving.decode_floor(c, h100, "bf16", batch=1, context=0, embedding="gather")
    by_hand = formulas.num_params(c) * 2 / 3.35e12
    print(f"{name}: every parameter read {read.time * 1e3:.2f} ms (by hand {by_hand * 1e3:.2f} ms); "
          f"input embedding only gathered, one row per token: {gather.time * 1e3:.2f} ms "
          f"-> at most {1 / read.time:.0f} tokens/s for one user")

# %% [markdown]
# Minitx's own counts use the second convention: the embedding lookup reads one row per token, not the
# whole table. For Llama-3-8B, with its 128k vocabulary, the two differ by 0.3 ms.
#
# **Prefill** ≈ 2 FLOPs per parameter per token, plus causal attention (QKᵀ and A·V over the visible half
# of the T × T scores), over peak FLOP/s.

# %%
c = Config.preset("llama-3-8b")
for with_embedding in (True, False):
    p = serving.prefill_floor(c, h100, "bf16", tokens=1000, embedding_flops=with_embedding)
    label = "2 FLOPs for every parameter" if with_embedding else "embedding lookup costs no FLOPs"
    print(f"llama-3-8b prefill of 1,000 tokens at 100% of peak ({label}): {p.t_compute * 1e3:.1f} ms "
          f"= ({p.linear_flops / 1e12:,.3f} + {p.attention_flops / 1e12:,.3f} attention) TFLOP / 989.4 TFLOP/s")

# %% [markdown]
# Now op by op, from the formulas. This is minitx's own unfused implementation on an H100: every op's
# max(compute, memory), summed.

# %%
pre = serving.prefill_roofline(c, h100, "bf16", batch=1, prompt=1000)
dec = serving.decode_roofline(c, h100, "bf16", batch=1, context=1000)
print(pre.table("op"))
print()
print(dec.table("op"))

# %% [markdown]
# The same two tables as one picture: each op kind of each phase placed under the H100's roof. A point's x is its
# intensity, its y the FLOP/s the roofline lets it reach; left of the ridge (the dotted line) an op waits on
# memory, right of it on the arithmetic units.

# %%
print(plots.draw("05_roofline_llama_3_8b_h100", plots.roofline_chart,
                 {"prefill, 1,000 tokens": pre, "decode step, 1,000 cached": dec},
                 title=f"{c.name} on the H100 SXM, bf16: prefill vs decode, op kind by op kind"))

# %% [markdown]
# Read the two tables side by side:
#
# * In **prefill** the matmuls sit far above the ridge (intensity ~700) and are compute-bound. The total
#   (about 19 ms) exceeds the 16.5 ms estimate because the norms, softmax, activations and residual adds are
#   memory-bound, and in an unfused implementation each one takes its own trip through memory. It also
#   skips the LM head for all but the last token, which the 2·P·T estimate counts in full.
# * In **decode** every op is memory-bound. The matmuls' intensity is 1 FLOP per byte, against a ridge of
#   295, so the H100's arithmetic units idle over 99% of the time. The step takes as long as reading the
#   weights: 4.5 ms here, against the classic floor of 4.48 ms (embedding gathered).

# %%
print(f"prefill: {pre.time * 1e3:.2f} ms, intensity {pre.intensity:.0f} FLOP/B, {pre.total().bound}-bound")
print(f"decode:  {dec.time * 1e3:.3f} ms per step, intensity {dec.intensity:.2f} FLOP/B, {dec.total().bound}-bound")
floor = serving.decode_floor(c, h100, "bf16", embedding="gather")
print(f"decode floor (embedding gathered): {floor.time * 1e3:.3f} ms")

# %% [markdown]
# ## 5. Fused attention: the same arithmetic, without the score matrix (slides 13, 14)
#
# Every op above is a trip to memory, and in an unfused prefill attention takes three: QKᵀ writes a
# (B, NH, T, T) score matrix, the softmax reads and rewrites it, A·V reads it again. A fused kernel
# (FlashAttention, Dao et al. 2022) walks the keys in tiles, keeps a running max and sum per query (the online
# softmax), and never writes the scores out. minitx has one: `Transformer(cfg, attention="fused")`, for
# inference. Run both on the same weights and count them:

# %%
fused_model = Transformer(cfg, seed=0, attention="fused")
prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, 256))
runs = {}
for kind, m in (("unfused", model), ("fused", fused_model)):
    with count() as ctr:
        logits = m.prefill(prompt, m.new_cache(1, 256))
    attention = ctr.filter(op="attention") + ctr.filter(op="softmax")
    runs[kind] = (logits, attention, ctr.totals())
    print(f"{kind:<8} attention + softmax: {attention.flops / 1e6:7.2f} MFLOP, {attention.bytes / 1e6:6.2f} MB moved; "
          f"whole prefill {runs[kind][2].bytes / 1e6:6.2f} MB")
gap = float(np.max(np.abs(runs["fused"][0] - runs["unfused"][0])))
print(f"the logits agree to {gap:.1e}: float32 rounding, the sums run in another order "
      f"(float32's epsilon is {np.finfo(np.float32).eps:.1e})")
assert gap < 1000 * np.finfo(np.float32).eps

# %% [markdown]
# The fused kernel computes only the tiles a causal query can see, about half of the unfused rectangle's
# arithmetic, and its bytes are the q, k, v it reads and the output it writes: the T² term is gone. On an H100 at a long
# prompt, that is the difference between a prefill whose attention is memory-bound and one whose attention
# runs at the matmul units' pace:

# %%
for prompt_len in (1000, 8000):
    times = {kind: serving.prefill_roofline(c, h100, "bf16", 1, prompt_len, attention=kind).time
             for kind in ("unfused", "fused")}
    print(f"llama-3-8b prefill of {prompt_len:>5,} tokens: unfused {times['unfused'] * 1e3:7.2f} ms, "
          f"fused {times['fused'] * 1e3:7.2f} ms")

# %% [markdown]
# **Takeaways.** Prefill is matrix-matrix and compute-bound. Decode is matrix-vector and memory-bound.
# One decode step costs about as much as reading every weight once, however few FLOPs it does. The next
# lesson makes each weight read serve more tokens: batching.
