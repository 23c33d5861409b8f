# %% [markdown]
# # Lesson 6: batching, and what it costs in latency
#
# Lesson 5 ended on a waste. A decode step reads every weight to produce one token per sequence, so on an
# H100 the arithmetic units idle more than 99% of the time. The fix is to decode **several sequences
# together**. Each weight is then read once and multiplied by B rows instead of one. The arithmetic
# intensity grows with B at almost the same bytes, so tokens per second grow almost for free...
# until one of three limits arrives:
#
# 1. the matmuls turn **compute-bound** (the critical batch, near the ridge point);
# 2. the **KV cache**, which grows with every sequence, fills the memory or dominates the bytes read;
# 3. **latency**: every user waits for the whole batch's step, and for the whole batch's prefill.
#
# Real models are computed from the formulas (nothing is allocated); a small model is measured on this CPU.
# Units: ms = 1e-3 s; GB = 1e9 bytes; tokens/s summed over the batch unless it says "per user".

# %%
from minitx import Config, formulas, hardware, measured, plots, roofline, serving

cfg = Config.preset("llama-3-8b")
h100 = hardware.get("h100-sxm")

# %% [markdown]
# ## 1. Intensity grows with the batch (slide 15)
#
# One decode step of Llama-3-8B in bf16, with a short context (the KV cache is empty: t = 0), for growing B.
# Every weight matrix is an (B, K) @ (K, M) matmul. Its intensity is 2·B·K·M / (2·(K·M + B·K + B·M)), which
# is ≈ B while B is small next to K and M. In bf16 one parameter is 2 bytes and meets 2·B FLOPs.

# %%
print(f"{'B':>5} {'matmul FLOP/B':>14} {'≈ B':>6} {'step ms':>9} {'tokens/s':>10} {'matmuls':>9}")
decode_steps = {}
for B in (1, 8, 32, 64, 128, 256, 512, 1024):
    step = serving.decode_roofline(cfg, h100, "bf16", batch=B, context=0)
    decode_steps[B] = step
    mm = step.by_op()["matmul"]
    print(f"{B:>5} {mm.intensity:>14.1f} {B:>6} {step.time * 1e3:>9.3f} {B / step.time:>10,.0f} {mm.bound:>9}")

# %% [markdown]
# On the roofline, the batch walks the matmuls up the slope (each B a marker, each op kind a colour): from
# 1 FLOP per byte at B = 1 to the roof past the ridge. The norms and activations stay where they were: their
# bytes grow with B as fast as their FLOPs.

# %%
print(plots.draw("06_decode_batches_on_the_roofline", plots.roofline_chart,
                 {f"decode B={B}": decode_steps[B] for B in (1, 8, 64, 256, 1024)},
                 title=f"{cfg.name} decode steps on the H100 SXM, bf16, as the batch grows"))

# %% [markdown]
# From B = 1 to B = 64 the step time barely moves (the weights are read once either way), so tokens/s grow
# almost 64×. Past a few hundred sequences, the matmuls are compute-bound: doubling B then doubles the
# step time too, and throughput stops growing.
#
# ## 2. The critical batch is the ridge point (slides 15, 16)
#
# With weights only, the intensity of a decode step is 2·B / b FLOP per byte, b the bytes stored per weight. It
# reaches the ridge peak / bandwidth at **B* = ridge · b / 2**, which is the ridge itself in bf16 (b = 2).
# Counting the activations each unfused matmul also reads and writes moves the crossing up a little.

# %%
print(f"{'hardware':<12} {'weights':<8} {'ridge':>7} {'b':>6} {'B* = ridge·b/2':>15} {'B* from ops':>12}")
for name, dtype in (("h100-sxm", "bf16"), ("h100-sxm", "int8"), ("h100-sxm", "int4"), ("a100-80gb", "bf16"),
                    ("l4", "bf16"), ("h200", "bf16")):
    crit = serving.critical_batch(cfg, name, dtype)
    print(f"{name:<12} {dtype:<8} {crit.ridge:>7.1f} {crit.bytes_per_weight:>6.3f} {crit.analytic:>15.1f} "
          f"{crit.from_ops:>12}")
crit = serving.critical_batch(cfg, h100, "bf16")

# %% [markdown]
# Quantized weights (int8, int4: weight-only, W8A16 and W4A16) are dequantized and multiplied in bf16, so the
# bf16 ridge still applies, but each weight now costs b ≈ 1.14 or 0.71 bytes (the scales, and the embedding and
# head left in bf16, keep b above 1 and 1/2): the step's intensity rises and the critical batch falls, to ~170
# and ~105 on an H100. (Running the matmuls in int8 too, W8A8, would use the int8 peak, twice bf16's, and bring
# it back near 300; minitx does not model that.) On the L4, whose ridge is ~400, a batch must be larger still
# before decoding uses the arithmetic units.
#
# ## 3. The KV cache: bytes and memory (slide 16)
#
# Each sequence also reads its own KV cache every step: 131,072 bytes per token for Llama-3-8B (GQA: 8 KV
# heads of 128, 32 layers, K and V, 2 bytes). At long context and large batch, those reads rival the weights:
# step ≥ (weight bytes + B · KV bytes per sequence) / bandwidth.

# %%
kv_token = formulas.kv_bytes_per_token(cfg, "bf16")
print(f"KV cache: {kv_token:,} bytes per token; weights {formulas.param_bytes(cfg, 'bf16') / 1e9:.2f} GB")
print(f"{'B':>5} {'context':>8} {'weights ms':>11} {'KV ms':>8} {'step ms':>9} {'by hand: B·S·KV/BW ms':>22}")
for B, S in ((1, 0), (1, 8000), (32, 2048), (32, 8000), (64, 8000)):
    f = serving.decode_floor(cfg, h100, "bf16", batch=B, context=S)
    print(f"{B:>5} {S:>8} {f.t_weights * 1e3:>11.3f} {f.t_kv * 1e3:>8.3f} {f.time * 1e3:>9.3f} "
          f"{B * S * kv_token / 3.35e12 * 1e3:>22.3f}")

# %% [markdown]
# And memory: the weights and every sequence's cache must fit on the chip. The largest batch is
# floor((memory − weight bytes) / (context · KV bytes per token)).

# %%
for S in (2048, 8192):
    most = serving.max_batch(cfg, h100, "bf16", context=S)
    by_hand = int((80e9 - formulas.param_bytes(cfg, "bf16")) // (S * kv_token))
    print(f"context {S}: at most {most} sequences fit in 80 GB (by hand {by_hand}); "
          f"B={most + 1} would need {serving.memory_needed(cfg, 'bf16', most + 1, S) / 1e9:.1f} GB")
print(f"critical batch {crit.from_ops}: at 8k context the memory runs out first")

# %% [markdown]
# ## 4. Latency: what each user waits (slide 15)
#
# A batch of B requests, each with a 1,000-token prompt and 200 new tokens:
#
# * **TTFT** (time to first token) is the prefill. Prompts batched together are prefilled together, so TTFT
#   grows about linearly with B: prefill is already compute-bound, and batching it gains nothing.
# * **TPOT** (time per output token) is the decode step, which every user in the batch shares.
# * **latency** = TTFT + TPOT · (tokens − 1). The first token comes out of the prefill.

# %%
points = serving.sweep(cfg, h100, "bf16", batches=[1, 8, 32, 64, 128, 256], prompt=1000, gen=200)
print(serving.sweep_table(points))
print(plots.draw("06_batch_sweep_h100", plots.batch_sweep_chart, points,
                 title=f"{cfg.name} on the H100 SXM, bf16: prompts of 1,000 tokens, 200 new tokens each"))

# %% [markdown]
# Throughput rises about 70× from B = 1 to B = 256. Each user's speed (tokens/s per user) falls about 4×,
# and the time to the first token grows about 250×. Batching trades latency for throughput. Servers avoid
# the worst of it with continuous batching: they slip new prompts into running batches instead of
# prefilling a whole batch at once.
#
# ## 5. The same sweep, measured on this CPU (slides 15, 17)
#
# Now a small model for real. The roofline comes from the measured machine (float32: 4 bytes per parameter,
# intensity ≈ B/2, so the critical batch is 2 × the ridge).

# %%
cpu = hardware.get("this-machine")      # measured once per process: about 2 seconds
small = Config.preset("small-gpt2")
sweep = measured.measure_decode_sweep(small, cpu, batches=(1, 4, 16, 64), prompt=16, steps=8, repeats=5)
print(f"this CPU: {cpu.peak('fp32') / 1e9:.1f} GFLOP/s fp32, {cpu.bandwidth / 1e9:.1f} GB/s, "
      f"ridge {cpu.ridge('fp32'):.1f} FLOP/B")
print(f"{'B':>4} {'FLOP/B':>7} {'roofline ms':>12} {'measured ms':>12} {'spread':>7} {'roofline tok/s':>15} "
      f"{'measured tok/s':>15} {'factor':>7}")
for p in sweep:
    print(f"{p.batch:>4} {p.intensity:>7.2f} {p.predicted * 1e3:>12.3f} {p.measured * 1e3:>12.3f} "
          f"{p.timing.spread:>7.0%} {p.predicted_tokens_per_s:>15,.0f} {p.tokens_per_s:>15,.0f} {p.factor:>7.1f}")
print("(measured: the median of 5 runs of 8 steps after a warm-up; spread: the middle half of the runs, "
      "as a share of the median)")
if measured.sweep_warning(sweep):
    print("WARNING: " + measured.sweep_warning(sweep))
cpu_crit = serving.critical_batch(small, cpu, "fp32")
print(plots.draw("06_batch_sweep_this_cpu", plots.batch_sweep_chart, sweep,
                 title=f"{small.name} on this CPU, float32: measured (solid) against the roofline (dashed)"))
print(f"critical batch here: ridge · 4 / 2 = {cpu_crit.analytic:.1f}; from the ops {cpu_crit.from_ops}")

# %% [markdown]
# The two critical batches differ much more here than on the H100. The small model's matrices are only 128
# wide, so the activations each matmul reads and writes are as large as its weights: a big correction.
#
# Compare the two tokens/s columns. The roofline predicts the *shape*: a flat step time while decode is
# memory-bound, so tokens/s rise with B, then a step time that grows with B past the critical batch, so
# tokens/s flatten. On a quiet machine the measured throughput follows it: it rises with the batch, because a
# decode step of a small model is mostly fixed per-op overhead (Python calls, dispatch) that the batch shares
# just as it shares the weight reads, and it flattens once the matmuls dominate. The measured step times sit
# above the roofline by the overhead factor of lesson 5. Each is the median of several runs, with their spread
# beside it: when the spread is large (another program took the cores), the lesson says so above instead of
# letting one slow run put a point below its neighbour.
#
# **Takeaways.** Batching raises arithmetic intensity, roughly B FLOP per byte in bf16, and with it
# throughput, up to the critical batch ≈ the ridge point. The KV cache can run out of memory before that.
# Every user pays in latency: a longer TTFT when prompts are prefilled together, and a slower TPOT as the
# step grows.
