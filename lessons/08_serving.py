# %% [markdown]
# # Lesson 8: serving many users
#
# Lessons 6 and 7 batched B equal requests that arrive together and leave together. A real server sees something
# else: requests arrive one at a time, with prompts and answers of every length, and each wants its first token
# soon. A server makes two decisions about them, step after step:
#
# * **when a request joins the batch.** *Static* batching forms a batch, runs it until its longest member ends,
#   then forms the next. *Continuous* batching (Orca's "iteration-level scheduling", Yu et al., OSDI 2022)
#   re-forms the batch at every step: a finished request leaves at once and a waiting one takes its place.
# * **where its keys and values live.** A *contiguous* cache reserves, when a request is admitted, room for its
#   prompt plus every token it may generate (its cap). A *paged* cache (vLLM's PagedAttention, Kwon et al.,
#   SOSP 2023) hands out blocks of 16 positions as the sequence grows, so at most the end of one block is empty.
#
# `minitx.Engine` makes both decisions with a real scheduler and runs a real minitx model, one packed model call
# per step. `minitx.serving.simulate` runs the very same scheduler for models too large for this machine (Llama-3-8B
# on an H100), pricing each step from its exact op costs on the chip's roofline instead of running it. We use the
# first on this machine, then the second, then redo lesson 7's sums with what it finds.
#
# Units: µs = 1e-6 s, ms = 1e-3 s; tok/s counts generated (output) tokens over the whole run, all users together.

# %%
import numpy as np

from minitx import Config, Engine, Transformer, cost, generate, hardware, plots, serving, timed

h100 = hardware.get("h100-sxm")

# %% [markdown]
# ## 1. Many requests through one model, executed on this machine (slides 12, 16)
#
# Eight requests for the small Llama-style model, with prompts of 3 to 30 tokens and caps of 6 to 24 new tokens,
# arriving over the first ten steps. The engine serves at most 4 at a time, in KV blocks of 8 positions. The paged
# runs get a pool so small (6 blocks) that the engine must **preempt**: when a running sequence needs a block and
# none is free, the request admitted last gives all its blocks back and is recomputed later (vLLM's recompute
# mode). The contiguous runs get room for 4 of the longest request, and make requests wait instead. The continuous
# runs also cut long prompts into chunks: at most 8 tokens per step, shared with the decode tokens (chunked
# prefill, section 7).
#
# Whatever happens to a request (who shares its steps, how its prompt is split, whether it is thrown out and
# recomputed), each request must get exactly the tokens it would get alone. With greedy decoding in float64 the
# engine's tokens are compared with `minitx.generate` for each prompt alone, which never goes through the engine.

# %%
small = Config.preset("small-llama")
exact = Transformer(small, seed=0, dtype="float64")
rng = np.random.default_rng(0)
PROMPT_LENS = (12, 5, 30, 8, 20, 3, 16, 9)
CAPS = (10, 24, 6, 16, 12, 20, 8, 14)
ARRIVALS = (0, 0, 1, 2, 4, 6, 7, 10)           # the first step each request may join
prompts = [rng.integers(0, small.vocab_size, n).tolist() for n in PROMPT_LENS]
alone = [generate(exact, [p], cap)[0] for p, cap in zip(prompts, CAPS)]   # the reference, one prompt at a time


def serve(model, policy, layout, hw=None, **kw):
    """Submit the eight requests to a fresh engine and run it."""
    engine = Engine(model, policy=policy, kv_layout=layout, block_size=8, max_batch=4, hardware=hw, **kw)
    for p, cap, step in zip(prompts, CAPS, ARRIVALS):
        engine.submit(p, cap, arrival_step=step)
    return engine.run()


print(f"{'policy':<11}{'KV layout':<11}{'KV pool':>8}{'steps':>6}{'preempted':>10}   same tokens as generate alone")
for policy in ("static", "continuous"):
    for layout in ("contiguous", "paged"):
        pool = 6 if layout == "paged" else None        # paged: 6 blocks of 8 for up to 4 sequences of up to 36
        chunk = 8 if policy == "continuous" else None
        run = serve(exact, policy, layout, num_blocks=pool, chunked_prefill=chunk)
        same = sum(r.tokens == a for r, a in zip(run.requests, alone))
        print(f"{policy:<11}{layout:<11}{run.summary['kv_blocks']:>8}{run.summary['steps']:>6}"
              f"{run.summary['preemptions']:>10}   {same}/{len(alone)}")

# %% [markdown]
# The same 8 answers four ways, preemptions included. Here is the last run's timeline, in steps: a request
# arriving at step a whose first token is sampled in step s has it at time s + 1. Its 6-block pool is far too small
# for 4 sequences fed in chunks: requests are thrown out again and again (request 2, the longest prompt, most),
# each time recomputing what it knew, and still every one ends with its own tokens. A real server sizes its pool so
# that this is rare: none of section 4's runs preempts.

# %%
print(f"{'id':>3}{'prompt':>7}{'new':>5}{'arrives':>8}{'1st token':>10}{'done':>6}{'TTFT':>6}{'preempted':>10}")
for r in run.requests:
    print(f"{r.id:>3}{r.prompt_len:>7}{len(r.tokens):>5}{r.arrival_step:>8}{r.first_token_step:>10}"
          f"{r.finish_step:>6}{r.ttft_steps:>6}{r.preemptions:>10}")

# %% [markdown]
# ## 2. The four servers in modelled seconds on an H100 (slides 12, 16)
#
# In steps, every request that is admitted at once has a TTFT of one step, and a batch of B makes B tokens per step:
# steps hide what a step costs. So the engine counts each step as it runs (`minitx.count()` around the model call)
# and places those counts on a chip's roofline: with `hardware="h100-sxm"`, every step takes the modelled time of
# its own ops on an H100 (the float32 model at the H100's fp32 peak), and the timeline comes out in seconds. Arrivals
# stay in steps, and a step in which nothing runs takes no time. The same eight requests, now in float32 and with
# the default pool (room for 4 of the longest request) in both layouts.
#
# `kv_waste` is, per step, the reserved KV bytes that hold no token over the reserved bytes, averaged over the steps.

# %%
f32 = Transformer(small, seed=0)
print(f"{'policy':<11}{'KV layout':<11}{'steps':>6}{'µs':>8}{'tok/s':>12}{'TTFT p50 µs':>12}{'TTFT p99 µs':>12}"
      f"{'TPOT p50 µs':>12}{'kv_waste':>9}{'batch':>6}")
modelled = {}
for policy in ("static", "continuous"):
    for layout in ("contiguous", "paged"):
        modelled[policy, layout] = serve(f32, policy, layout, hw=h100)
        s = modelled[policy, layout].summary
        print(f"{policy:<11}{layout:<11}{s['steps']:>6}{s['duration_s'] * 1e6:>8.1f}{s['throughput_tok_s']:>12,.0f}"
              f"{s['ttft_p50_s'] * 1e6:>12.2f}{s['ttft_p99_s'] * 1e6:>12.2f}{s['tpot_p50_s'] * 1e6:>12.2f}"
              f"{s['kv_waste']:>9.1%}{s['max_batch_seen']:>6}")

# %% [markdown]
# Continuous batching needs fewer steps for the same tokens: a place freed by a short answer is refilled at the
# next step instead of idling until the batch's longest member ends. The contiguous layout reserves each request's
# prompt + cap on admission, so a third of what it reserves waits, empty, for tokens not generated yet; the paged
# one wastes half as much, the unfilled ends of last blocks (8 positions each, in sequences of a few dozen). With a
# pool this generous the layout changes the waste, not the schedule: on a GPU it is the memory that limits the
# batch, which section 4 shows.
#
# Each request's timeline in modelled seconds, static against continuous (paged): the time at a step is the sum of
# the steps run before it.

# %%
print(f"{'':>12}{'static, µs':^24}{'continuous, µs':^24}")
print(f"{'id':>3}{'arrives':>9}" + f"{'arrives':>9}{'TTFT':>7}{'done':>8}" * 2)
print(f"{'':>3}{'(step)':>9}")
for a, b in zip(modelled["static", "paged"].requests, modelled["continuous", "paged"].requests):
    print(f"{a.id:>3}{a.arrival_step:>9}" + "".join(f"{r.arrival_s * 1e6:>9.1f}{r.ttft_s * 1e6:>7.1f}"
                                                    f"{r.finish_s * 1e6:>8.1f}" for r in (a, b)))

# %% [markdown]
# (An arrival is a step, so it falls at a different second in each run: the two servers did different work before
# it.) Under static batching, a request that arrives while a batch runs waits for that batch's longest member; under
# continuous batching it starts at the next step with a free place.
#
# ## 3. Predicted, counted, measured (slide 16)
#
# Three views of one workload: 16 requests queued at once (the simulator takes arrivals in seconds and the engine
# in steps: a queue is the same for both), served 4 at a time.
#
# * **predicted**: `serving.simulate` runs the scheduler alone and prices each step from the closed forms;
# * **counted**: the engine runs the model, counts each step's ops, and prices them on the same roofline;
# * **measured**: the engine's wall-clock time on this CPU, the median of 5 runs after a warm-up (`minitx.timed`).

# %%
QUEUE_PROMPTS = (8, 20, 12, 24, 16, 8, 20, 12, 24, 16, 8, 20, 12, 24, 16, 8)
QUEUE_GENS = (12, 2, 8, 1, 10, 4, 6, 3, 12, 2, 8, 1, 10, 4, 6, 3)
queue = [rng.integers(0, small.vocab_size, n).tolist() for n in QUEUE_PROMPTS]
jobs = [serving.Job(0.0, p, g, g) for p, g in zip(QUEUE_PROMPTS, QUEUE_GENS)]
tokens_out = sum(QUEUE_GENS)


def queued_engine(policy, hw=None):
    engine = Engine(f32, policy=policy, max_batch=4, hardware=hw)
    for p, g in zip(queue, QUEUE_GENS):
        engine.submit(p, g)
    return engine


print(f"{'policy':<11}{'predicted tok/s':>16}{'counted tok/s':>14}{'steps':>6}{'measured here tok/s':>20}"
      f"{'spread':>7}")
queue_rates = {}
for policy in ("static", "continuous"):
    predicted = serving.simulate(small, h100, jobs, "float32", f32.attention, policy=policy, max_batch=4).summary
    counted = queued_engine(policy, h100).run().summary
    wall = timed(queued_engine(policy).run, repeats=5, warmup=1)
    queue_rates[policy] = (predicted.throughput_tok_s, counted["throughput_tok_s"], tokens_out / wall.median)
    print(f"{policy:<11}{predicted.throughput_tok_s:>16,.0f}{counted['throughput_tok_s']:>14,.0f}"
          f"{counted['steps']:>6}{tokens_out / wall.median:>20,.0f}{wall.spread:>7.0%}")
    if wall.noisy:
        print(f"  WARNING: the {policy} runs disagree by {wall.spread:.0%} (another program is using the cores): "
              "the measured figure is not worth comparing")
ratios = [queue_rates["continuous"][i] / queue_rates["static"][i] for i in range(3)]
print(f"continuous ÷ static: predicted {ratios[0]:.2f}x, counted {ratios[1]:.2f}x, measured here {ratios[2]:.2f}x")

# %% [markdown]
# Predicted and counted agree to the last digits: the simulator's closed-form step costs are the counts the model
# records when it runs (the tests check it op by op). Both say continuous batching serves the queue in about half
# the steps. The measured ratio is this CPU's, and a measurement: a step of the small model costs a fixed overhead
# (Python, one BLAS call per layer) plus a share per sequence, so fewer, fuller steps save less here than on a GPU,
# where a decode step reads every weight whatever the batch; on a quiet machine continuous batching still comes out
# ahead (`benchmarks/serving.py` measures it on a larger queue). When the runs' spread is large, another program
# was using the cores, and the lesson says so above instead of drawing a conclusion.
#
# ## 4. Llama-3-8B on an H100, simulated: the four servers (slides 12, 16)
#
# Now at real scale. 600 requests with ShareGPT-like lengths (the vLLM paper's ShareGPT trace averages 161 prompt
# tokens and 338 output tokens, §6.1; here prompts uniform in 16-306 and answers in 16-660, the same means), all
# arriving within a second, so the server is saturated. The clients set no cap, so a request may run to the
# model's 8,192-token context: that is what a contiguous cache must reserve. The KV pool is what fits on the chip
# beside the 16 GB of weights (90% of its 80 GB, as vLLM's default). Up to 256 sequences per step.

# %%
llama = Config.preset("llama-3-8b")
share_gpt = serving.poisson(1000.0, 600, (16, 306), (16, 660), llama.n_ctx, seed=0)
print(f"{'policy':<11}{'KV layout':<11}{'tok/s':>8}{'TTFT p50 s':>11}{'latency p50 s':>14}{'mean batch':>11}"
      f"{'kv_waste':>9}{'preempted':>10}")
four = {}
for policy in ("continuous", "static"):
    for layout in ("paged", "contiguous"):
        four[policy, layout] = sim = serving.simulate(llama, h100, share_gpt, "bf16", policy=policy,
                                                      kv_layout=layout)
        s = sim.summary
        print(f"{policy:<11}{layout:<11}{s.throughput_tok_s:>8,.0f}{s.ttft_p50_s:>11.2f}{s.latency_p50_s:>14.2f}"
              f"{s.mean_batch:>11.1f}{s.kv_waste:>9.1%}{s.preemptions:>10}")
best, worst = four["continuous", "paged"].summary, four["continuous", "contiguous"].summary
print(f"paged ÷ contiguous (continuous): {best.throughput_tok_s / worst.throughput_tok_s:.2f}x the tokens/s; "
      f"KV waste {best.kv_waste:.1%} vs {worst.kv_waste:.1%}")
print(f"continuous ÷ static (paged): "
      f"{best.throughput_tok_s / four['static', 'paged'].summary.throughput_tok_s:.2f}x the tokens/s")
capped = [serving.Job(j.arrival_s, j.prompt_len, j.gen_len, 2048 - j.prompt_len) for j in share_gpt]
orca_max = serving.simulate(llama, h100, capped, "bf16", kv_layout="contiguous").summary
print(f"contiguous, reserving 2,048 positions per request (the vLLM paper's Orca (Max)): KV waste "
      f"{orca_max.kv_waste:.1%}, {orca_max.throughput_tok_s:,.0f} tok/s")

# %% [markdown]
# Paging fits about 3.6 times as many sequences in the same memory (the mean batch column), and so serves over twice
# the tokens per second at lower latency. Contiguous, the reservations fill the pool at about 50 sequences; paged,
# the batch reaches its cap of 256 with most of the pool still free (section 6's middle picture). The vLLM paper
# reports 2-4× the throughput of the systems before it at the same latency, and measures those systems keeping only
# 20-38% of their KV memory for tokens: 60-80% wasted, against under 4% with paging. Reserving the whole context
# wastes still more (95% here); reserving 2,048 positions per request, as the paper's Orca (Max) baseline does,
# lands inside the paper's range. Continuous batching on top adds about half again over static batches, as Orca's
# iteration-level scheduling predicts in direction (Orca's own 36.9× is against FasterTransformer on GPT-3 175B,
# another setting).
#
# ## 5. Batching costs time to first token (slide 15)
#
# B requests with 512-token prompts arrive together and are served as one batch. Lesson 6's closed form
# (`serving.serving_point`: the batch's prefill on the roofline) predicts TTFT; the simulator runs the batch.

# %%
print(f"{'B':>5}{'TTFT ms (formula)':>18}{'TTFT ms (simulated)':>20}{'tok/s':>9}{'TPOT ms':>9}")
ttft_by_batch = {}
for B in (1, 8, 32, 128):
    s = serving.simulate(llama, h100, [serving.Job(0.0, 512, 64, 64)] * B, "bf16", policy="static",
                         max_batch=B).summary
    formula = serving.serving_point(llama, h100, "bf16", batch=B, prompt=512, gen=64, attention="fused")
    ttft_by_batch[B] = s.ttft_p50_s
    print(f"{B:>5}{formula.ttft * 1e3:>18.1f}{s.ttft_p50_s * 1e3:>20.1f}{s.throughput_tok_s:>9,.0f}"
          f"{s.tpot_p50_s * 1e3:>9.2f}")
print(f"TTFT grows {ttft_by_batch[128] / ttft_by_batch[1]:.0f}x from B = 1 to B = 128")

# %% [markdown]
# Throughput rises with the batch, by less and less, and TTFT rises with it: the prompts are prefilled together,
# and a prefill of 512 tokens is already compute-bound, so B of them take about B times as long. **Slide 15's text
# says batching *decreases* the time to first token** (while giving the reason it increases: the cache must be
# filled for more sequences); the counts show it increases. Continuous batching softens this for a request that
# joins a running batch (its prompt is prefilled alone or with a few others), which is why servers use it.
#
# ## 6. Latency against load, memory over time (slide 16)
#
# A server is judged at a given load. The same 150 ShareGPT-like requests, offered at about 4 to 32 requests per second
# (arrivals compressed or stretched), static against continuous batching. The y axis of the picture's left panel is
# the vLLM paper's normalized latency: each request's end-to-end latency over its output tokens, averaged. The other
# two panels follow the 600-request run of section 4 (continuous, paged): KV memory reserved and in use, and
# sequences per step, over time.

# %%
at_load = serving.poisson(8.6, 150, (16, 306), (16, 660), llama.n_ctx, seed=1)
sweep = serving.load_sweep(llama, h100, at_load, factors=(0.5, 1, 2, 4), dtype="bf16")
print(f"{'policy':<11}{'req/s':>6}{'ms per output token':>21}{'TTFT p50 s':>12}")
for p in sweep:
    print(f"{p.policy:<11}{p.rate:>6.1f}{p.summary.normalized_latency_s * 1e3:>21.1f}{p.summary.ttft_p50_s:>12.3f}")
print(plots.draw("08_llama_3_8b_h100_serving", plots.simulation_figure, four["continuous", "paged"], sweep,
                 title="Llama-3-8B on one H100, bf16, simulated: ShareGPT-like requests"))

# %% [markdown]
# Continuous batching keeps the latency per output token near a decode step's few milliseconds, and TTFT at a few
# milliseconds, while the load grows eightfold; static batching makes every request wait for the batch before it:
# a TTFT over a second at every load, and about three times the latency per token.
#
# ## 7. Chunked prefill: a long prompt no longer stalls everyone (slide 16)
#
# 32 users are decoding (256-token prompts, 200 tokens each) when a 7,000-token prompt arrives. Prefilled whole,
# it takes one long step, and every one of the 32 waits for it before its next token. With a per-step token budget
# (vLLM's `max_num_batched_tokens`), the prompt is cut into chunks that share steps with the decodes: the stall
# becomes a few slightly longer steps (Sarathi-Serve, Agrawal et al., OSDI 2024).

# %%
stall = [serving.Job(0.0, 256, 200, 200)] * 32 + [serving.Job(0.05, 7000, 16, 16)]
print(f"{'chunked_prefill':>16}{'longest wait between two tokens ms':>36}{'long prompt TTFT ms':>21}{'tok/s':>8}")
for budget in (None, 2048, 512):
    r = serving.simulate(llama, h100, stall, "bf16", chunked_prefill=budget)
    decoding = r.steps.start_s < max(t.finish_s for t in r.timelines[:32])   # steps the 32 users are part of
    print(f"{str(budget):>16}{r.steps.duration_s[decoding].max() * 1e3:>36.1f}"
          f"{r.timelines[32].ttft_s * 1e3:>21.1f}{r.summary.throughput_tok_s:>8,.0f}")

# %% [markdown]
# The worst gap between two tokens falls from about 130 ms to about 10 ms with a budget of 512 tokens; the long
# prompt's own first token comes a little later (its chunks re-read the keys of the chunks before them, and share
# their steps).
#
# ## 8. Realistic efficiencies (slides 13, 16)
#
# Everything above assumes the kernels reach the roofline: every byte at full bandwidth, every FLOP at peak. Real
# servers do not. Databricks measured about 60% of the bandwidth on decode at batch 1 on two H100s (model bandwidth
# utilisation, MBU; "LLM Inference Performance Engineering: Best Practices", 2023), and attention kernels reach
# 50-73% of peak FLOP/s (FlashAttention-2, Dao 2023, on A100). `mbu` and `mfu` scale the roofline's two sides:
# here 60% of the bandwidth and half the peak FLOP/s.

# %%
print(f"{'mfu':>5}{'mbu':>5}{'tok/s':>9}{'TTFT p50 s':>11}{'TPOT p50 ms':>12}")
efficiency = {}
for mfu, mbu in ((1.0, 1.0), (0.5, 0.6)):
    efficiency[mfu, mbu] = s = serving.simulate(llama, h100, share_gpt, "bf16", mfu=mfu, mbu=mbu).summary
    print(f"{mfu:>5.1f}{mbu:>5.1f}{s.throughput_tok_s:>9,.0f}{s.ttft_p50_s:>11.2f}{s.tpot_p50_s * 1e3:>12.2f}")

# %% [markdown]
# At half the peak FLOP/s and 60% of the bandwidth, throughput falls by about 40%. The simulator's numbers are the
# ceiling; a measured server sits below them, by how much its kernels (and its CPU-side scheduling) fall short.
#
# ## 9. A model that does not fit: Llama-2-70B over several GPUs (slide 12)
#
# Llama-2-70B's weights take 138 GB in bf16: more than one H100's 80 GB. The simulator refuses, saying why. With
# tensor parallelism over N chips (Megatron's split), each chip holds 1/N of the weights and of the KV cache, and
# every layer adds two all-reduces over NVLink.

# %%
llama70 = Config.preset("llama-2-70b")
jobs70 = serving.poisson(1000.0, 200, (16, 306), (16, 660), llama70.n_ctx, seed=0)
try:
    serving.simulate(llama70, h100, jobs70, "bf16", tp=1)
except ValueError as refused:
    print(f"tp 1: refused: {refused}")
print(f"{'tp':>3}{'weights GB/chip':>16}{'KV GB/chip':>11}{'tok/s':>8}{'TPOT p50 ms':>12}{'mean batch':>11}")
by_tp = {}
for tp in (2, 4, 8):
    by_tp[tp] = r = serving.simulate(llama70, h100, jobs70, "bf16", tp=tp)
    print(f"{tp:>3}{r.memory.weights / 1e9:>16.1f}{r.memory.kv_bytes / 1e9:>11.1f}{r.summary.throughput_tok_s:>8,.0f}"
          f"{r.summary.tpot_p50_s * 1e3:>12.2f}{r.summary.mean_batch:>11.1f}")

# %% [markdown]
# Two chips hold the weights with little room to spare for the cache, so few sequences fit and throughput is low;
# four chips leave more than ten times the KV memory per chip; eight also halve each chip's weight bytes per step
# again, and the decode step gets faster (the all-reduces, which do not shrink, take a growing share of it).
#
# ## 10. Self-hosting, revisited with the simulated throughput (slide 17)
#
# Lesson 7 priced a token from a static batch's step times. The simulator gives the throughput of a whole serving
# run instead, prompts included: every second of the run is paid for, so a request costs the GPUs' price per second
# times the run's length over the requests served. Same round prices as lesson 7 (`cost.EXAMPLE_PRICES`: an H100
# at $2.50/h, an API at $0.50 per million input and $1.50 per million output tokens). The ShareGPT-like requests
# average about 161 prompt and 338 output tokens.

# %%
GPU_PER_HOUR = cost.EXAMPLE_PRICES["gpu_price_per_hour"]["h100-sxm"]
API = cost.ApiPrice(input_per_million=cost.EXAMPLE_PRICES["api_price_per_million"]["input"],
                    output_per_million=cost.EXAMPLE_PRICES["api_price_per_million"]["output"])
mean_prompt = np.mean([j.prompt_len for j in share_gpt])
mean_gen = np.mean([j.gen_len for j in share_gpt])
api_per_request = API.cost_per_request(cost.Workload(mean_prompt, mean_gen))
runs = {"8B, continuous + paged": (1, four["continuous", "paged"].summary),
        "8B, continuous + paged, mfu 0.5 mbu 0.6": (1, efficiency[0.5, 0.6]),
        "8B, static + contiguous": (1, four["static", "contiguous"].summary),
        "70B, tp 8, continuous + paged": (8, by_tp[8].summary)}
print(f"{'server':<40}{'GPUs':>5}{'tok/s':>8}{'$ per M output':>15}{'$ per 1k requests':>18}{'API':>7}"
      f"{'break-even':>11}")
for label, (gpus, s) in runs.items():
    per_m = cost.cost_per_million_tokens(gpus * GPU_PER_HOUR, s.throughput_tok_s)
    per_request = gpus * GPU_PER_HOUR / 3600 * s.duration_s / s.requests
    print(f"{label:<40}{gpus:>5}{s.throughput_tok_s:>8,.0f}{per_m:>15.3f}{1000 * per_request:>18.4f}"
          f"{1000 * api_per_request:>7.4f}{per_request / api_per_request:>11.1%}")
point = serving.serving_point(llama, h100, "bf16", batch=64, prompt=round(mean_prompt), gen=round(mean_gen))
lesson7 = cost.compare(GPU_PER_HOUR, cost.Throughput.from_step_times(
    batch=64, decode_step_seconds=point.tpot, prompt_tokens=round(mean_prompt), prefill_seconds=point.ttft),
    cost.Workload(mean_prompt, mean_gen), API)
print(f"lesson 7's estimate (a static batch of 64, same mean lengths): ${1000 * lesson7.self_cost_per_request:.4f} "
      f"per 1k requests, break-even at {lesson7.break_even_utilization:.1%} utilization")

# %% [markdown]
# "Break-even" is the utilization (the share of paid hours the GPUs are busy at this rate) above which self-hosting
# costs less than the API. A saturated continuous, paged server on one H100 breaks even when it is busy a few
# percent of the time; realistic kernels roughly double that; a static, contiguous server needs about four times as
# much; a 70B model on eight GPUs costs more than ten times an 8B one per request. Lesson 7's static batch of 64
# lands in the same range: the simulator adds what a formula for one batch leaves out (the queueing, the mixed
# lengths, the memory that decides how many sequences fit), and here they roughly cancel. The talk's conclusion
# holds, with the same caveat: it pays when the GPUs are kept busy, which is what continuous batching and paging
# make possible.
#
# The command line runs the same simulations:
#
#     minitx simulate llama-3-8b --hw h100 --dtype bf16 --rate 1000 --num-requests 600 --prompt 16-306 \
#         --gen 16-660 --policy continuous --kv-layout paged --plot serving.png
#     minitx serve small-llama --requests requests.jsonl --hw h100 --json
#
# **Takeaways.** A server's throughput comes from keeping the batch full: continuous batching refills it at every
# step, and a paged KV cache leaves the memory for tokens rather than reservations, so more sequences fit. Batching
# still costs each user time to the first token (the slide says the opposite), and a long prompt stalls everyone
# unless it is chunked. The simulator's numbers are ceilings at the roofline; real kernels reach a fraction of it.
