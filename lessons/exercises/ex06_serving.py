# %% [markdown]
# # Exercise 6: time to first token, time per output token, and what a token costs (slides 14, 15 and 17)
#
# The grader runs each step of a real model by shape in bfloat16 (fused attention, what servers run), places
# the counted ops on the chip's roofline (`minitx.roofline.analyze`), and compares your estimates within ±15%.
# `hardware` is a preset name: `minitx.hardware.get(hardware)` gives `.peak("bf16")` (FLOP/s) and `.bandwidth`
# (bytes/s). Lessons 6 and 7 are the background. Your ex05 functions may help: paste them here.

# %%
def ttft_seconds(cfg, hardware, batch, prompt) -> float:
    """Seconds to the first token when `batch` prompts of `prompt` tokens arrive together: the prefill's FLOPs
    at the chip's bf16 peak (prefill is compute-bound). The prefill runs every projection on every prompt token,
    causal attention (query i sees i + 1 keys; fused: only the visible pairs are computed), and the LM head on
    each prompt's last token only. Within ±15%.
    """
    raise NotImplementedError


# %%
def tpot_seconds(cfg, hardware, batch, context) -> float:
    """Seconds per output token: one bf16 decode step of `batch` sequences with `context` tokens cached, on the
    chip's roofline: no faster than its FLOPs at the peak, nor than its bytes at the bandwidth. Within ±15%.
    """
    raise NotImplementedError


# %%
def cost_per_million_output_tokens(cfg, hardware, batch, context, gpu_price_per_hour) -> float:
    """Dollars per million output tokens, the GPU rented at `gpu_price_per_hour` and busy all the time: a step
    makes `batch` tokens in tpot_seconds. Within ±15%.
    """
    raise NotImplementedError


# %%
def break_even_utilization(cfg, hardware, batch, context, gpu_price_per_hour, api_price_per_million) -> float:
    """The fraction of the paid hours the GPU must be busy for its output tokens to cost what an API charges
    (`api_price_per_million` dollars per million output tokens). Idle hours are paid too. Within ±15%.
    """
    raise NotImplementedError
