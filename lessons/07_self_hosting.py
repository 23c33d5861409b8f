# %% [markdown]
# # Lesson 7: when does self-hosting pay?
#
# A rented GPU costs the same per hour whether it makes 200 tokens per second or 20,000. So a
# self-hosted token costs
#
#     $ per token = (GPU $ per hour / 3600) / (tokens per second) / utilization
#
# and everything in lessons 5 and 6 (prefill vs decode, batching, the KV cache) enters through the tokens per
# second. Utilization is the fraction of paid hours the GPU spends working. An API charges per token,
# with separate prices for input (prompt) and output (completion) tokens.
#
# The talk's conclusion: self-hosting can pay for **batch jobs run asynchronously** and for **prompt-heavy**
# work (long prompts, short completions). We derive it. All prices here are round illustrative numbers
# (`minitx.cost.EXAMPLE_PRICES`), not market data: an H100 at $2.50/h, an API at $0.50 per million input
# and $1.50 per million output tokens. Money in US dollars; "per M" = per million tokens.

# %%
from minitx import Config, cost, hardware, measured, roofline, serving

cfg = Config.preset("llama-3-8b")
h100 = hardware.get("h100-sxm")
GPU_PER_HOUR = cost.EXAMPLE_PRICES["gpu_price_per_hour"]["h100-sxm"]
API = cost.ApiPrice(input_per_million=cost.EXAMPLE_PRICES["api_price_per_million"]["input"],
                    output_per_million=cost.EXAMPLE_PRICES["api_price_per_million"]["output"])
print(f"GPU ${GPU_PER_HOUR:.2f}/h; API ${API.input_per_million:.2f}/M in, ${API.output_per_million:.2f}/M out")

# %% [markdown]
# ## 1. From step time to dollars (slide 17)
#
# Decode throughput is B tokens per step. With the classic step model of lesson 6, at 2,048 tokens of
# context, a step takes B · KV/BW + max(weights/BW, 2·B·P/peak), and a million tokens cost:

# %%
print(f"{'B':>5} {'step ms':>8} {'tokens/s':>9} {'$ per M tokens':>15} {'by hand':>8}")
for B in (1, 8, 32, 64, 128):
    step = serving.decode_floor(cfg, h100, "bf16", batch=B, context=2048)
    usd = cost.cost_per_million_tokens(GPU_PER_HOUR, step.tokens_per_s)
    by_hand = GPU_PER_HOUR / 3600 / (B / step.time) * 1e6
    print(f"{B:>5} {step.time * 1e3:>8.3f} {step.tokens_per_s:>9,.0f} {usd:>15.2f} {by_hand:>8.2f}")
need = serving.memory_needed(cfg, "bf16", 256, 2048)
print(f"B=256 would need {need / 1e9:.1f} GB (weights + KV cache) of the H100's 80 GB: it does not fit")

# %% [markdown]
# At batch 1, a token costs about $3.40 per million, more than the API's output price. At batch 64 it costs
# 11 cents. The hourly price did not change; the same weight reads now serve 64 users.
#
# ## 2. Input tokens are cheap to self-host, output tokens are not (slides 4, 17)
#
# Prefill pushes all of a prompt's tokens through each weight read: compute-bound, tens of thousands of
# tokens per second. Decode makes one token per sequence per step: memory-bound. Attribute GPU time to
# each phase (op-by-op roofline, batch 32, prompts of 1,000 tokens, 200 new tokens):

# %%
point = serving.serving_point(cfg, h100, "bf16", batch=32, prompt=1000, gen=200)
throughput = cost.Throughput.from_step_times(batch=32, decode_step_seconds=point.tpot, prompt_tokens=1000,
                                             prefill_seconds=point.ttft)
usd_in = cost.cost_per_million_tokens(GPU_PER_HOUR, throughput.prefill_tokens_per_s)
usd_out = cost.cost_per_million_tokens(GPU_PER_HOUR, throughput.decode_tokens_per_s)
print(f"prefill {throughput.prefill_tokens_per_s:,.0f} tok/s -> ${usd_in:.4f} per M input tokens")
print(f"decode  {throughput.decode_tokens_per_s:,.0f} tok/s -> ${usd_out:.4f} per M output tokens")
print(f"self-hosted output/input price ratio {usd_out / usd_in:.1f}x; the API's "
      f"{API.output_per_million / API.input_per_million:.1f}x")

# %% [markdown]
# A self-hosted output token costs about 10× an input token. The API's output/input ratio is only 3×. So
# the more a workload leans on input, the better self-hosting compares.
#
# ## 3. Workloads: prompt-heavy or not, batch or interactive (slides 4, 17)
#
# Three request shapes, in two serving modes:
#
# * **async batch job**: requests queue up, we decode 64 at a time, and the GPU is busy 90% of the paid hours;
# * **interactive**: few users at a time (batch 2), and the GPU is busy 20% of the hours (nights, weekends).

# %%
WORKLOADS = {"prompt-heavy (RAG, classify)": (4000, 100), "chat": (500, 500),
             "generation-heavy": (100, 2000)}
MODES = {"async batch": (64, 0.9), "interactive": (2, 0.2)}
print(f"{'workload':<29} {'mode':<12} {'self $/request':>15} {'API $/request':>14} {'break-even util.':>17} "
      f"{'verdict':>10}")
verdicts = {}
for wname, (prompt, gen) in WORKLOADS.items():
    for mname, (B, busy) in MODES.items():
        p = serving.serving_point(cfg, h100, "bf16", batch=B, prompt=prompt, gen=gen)
        thr = cost.Throughput.from_step_times(batch=B, decode_step_seconds=p.tpot, prompt_tokens=prompt,
                                              prefill_seconds=p.ttft)
        c = cost.compare(GPU_PER_HOUR, thr, cost.Workload(prompt, gen), API, utilization=busy)
        verdicts[(wname, mname)] = c
        print(f"{wname:<29} {mname:<12} {c.self_cost_per_request:>15.6f} {c.api_cost_per_request:>14.6f} "
              f"{c.break_even_utilization:>16.1%} {c.verdict:>10}")

# %% [markdown]
# Read the break-even column: the utilization above which self-hosting is cheaper. Run as async batch jobs,
# every workload breaks even at about 5% utilization. Interactive, prompt-heavy work still pays once the
# GPU is busy about 11% of the time, because its tokens are mostly cheap prefill tokens. Chat needs about
# 80%. Generation-heavy interactive traffic needs the GPU busy more
# than the hours it is paid for, so it never breaks even at these prices. Halve the API prices and the
# middle cases flip first.
#
# ## 4. Utilization divides everything (slide 17)
#
# The same chat workload, async batch mode, as the GPU's busy fraction falls:

# %%
p = serving.serving_point(cfg, h100, "bf16", batch=64, prompt=500, gen=500)
thr = cost.Throughput.from_step_times(batch=64, decode_step_seconds=p.tpot, prompt_tokens=500,
                                      prefill_seconds=p.ttft)
for busy in (1.0, 0.5, 0.1, 0.02):
    c = cost.compare(GPU_PER_HOUR, thr, cost.Workload(500, 500), API, utilization=busy)
    print(f"utilization {busy:>4.0%}: ${c.self_blended_per_million:.3f} per M tokens self-hosted vs "
          f"${c.api_blended_per_million:.3f} API -> {c.verdict}")

# %% [markdown]
# ## 5. This machine, measured (slide 17)
#
# The same formula applies to the CPU this lesson runs on, with *measured* tokens per second. Take the small
# model at batch 8, measured and predicted by the measured machine's roofline, and price the CPU at an
# assumed $0.05/h:

# %%
cpu = hardware.get("this-machine")      # measured once per process: about 2 seconds
m = measured.measure_inference("small-gpt2", cpu, batch=8, prompt=32, steps=8, repeats=3)
CPU_PER_HOUR = 0.05
print(f"this CPU: {cpu.peak('fp32') / 1e9:.1f} GFLOP/s fp32, {cpu.bandwidth / 1e9:.1f} GB/s (measured)")
for ph, tokens in (("prefill", 8 * 32), ("decode", 8)):
    c = m.phases[ph]
    measured_tps, predicted_tps = tokens / c.measured, tokens / c.predicted
    print(f"{ph:<8} roofline {predicted_tps:>10,.0f} tok/s  measured {measured_tps:>10,.0f} tok/s  -> "
          f"${cost.cost_per_million_tokens(CPU_PER_HOUR, measured_tps):.3f} per M tokens measured "
          f"(${cost.cost_per_million_tokens(CPU_PER_HOUR, predicted_tps):.4f} at the roofline)")

# %% [markdown]
# The roofline columns show the same shape as on the H100: a prefill token is far cheaper than a decode
# token. Compare the measured columns printed above: on a quiet machine they show the same order, with the
# overheads of lesson 5 on top. They are measurements, though. On a busy machine multi-threaded BLAS stalls
# can slow the prefill's matmuls most (see lesson 5) and narrow the gap between the two, and a one-second
# measurement of the machine can catch it busy, so the roofline itself moves. This is a 0.8M-parameter toy:
# none of its prices mean anything for a real model.
#
# The command line does sections 2 and 3 in one call:
#
#     minitx cost llama-3-8b --hw h100 --gpu-price 2.5 --api-price-in 0.5 --api-price-out 1.5 \
#         --batch 64 --prompt 4000 --gen 100 --utilization 0.9
#
# **Takeaways.** Self-hosting pays when the GPU stays busy and tokens are cheap to make. Large batches make
# cheap tokens, and asynchronous jobs keep the GPU busy. Prompt-heavy work makes the most of cheap prefill
# tokens. Interactive, output-heavy traffic at low load is the API's territory.
