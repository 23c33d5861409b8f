# %% [markdown]
# # Exercise 7: run your own experiment, predict this machine's decode (slide 17)
#
# The talk ends on "run your own experiments". Here the experiment is the machine in front of you: how many
# tokens per second does it decode a small model at, for batches of 1 to 64 sequences? Predict it, then
# `minitx grade ex07_experiment.py`: the grader decodes the models for real on this CPU (small-gpt2 and
# small-llama, float32, 16 tokens cached), times each batch (the median of 5 runs of 8 steps after a warm-up;
# it says so when the machine is too noisy to conclude) and compares your prediction. It passes within 2×.
#
# First try the roofline alone. `minitx hw --measure` prints this CPU's matmul peak (FLOP/s) and copy bandwidth
# (bytes/s); a decode step of small-gpt2 (P = 842,496 parameters, 4 bytes each) at batch B does about 2·P·B
# FLOPs and reads the 4·P bytes of the weights once. max(2·P·B / peak, 4·P / bandwidth) is a fraction of a
# millisecond: several times faster than the machine really runs. A step is ~60 op calls, and each costs a few
# microseconds of Python and dispatch whatever the batch: a *fixed* cost per step that the roofline does not
# know, shared by the batch just like the weight reads. On top of it, every sequence in the batch adds its own
# rows to every matmul: a cost *per sequence*, which runs below the measured peak on such thin matrices.
#
# So you are given two measurements, the step at B = 1 and at B = 16, and the question is the shape: how does
# the step time, and with it the tokens per second, follow from them at any B?

# %%
def decode_tokens_per_s(cfg, batch, step_s_at_1, step_s_at_16) -> float:
    """Predict the tokens per second of the *whole batch* when this machine decodes `batch` sequences together
    with the model `cfg` (float32, 16 tokens cached per sequence): `batch` tokens per step / seconds per step.

    step_s_at_1 and step_s_at_16 are this machine's measured decode steps (seconds, medians of the grader's
    runs) at batch 1 and at batch 16. Assume a step costs a fixed part (per-op overhead, paid once per step
    whatever the batch) plus a part that grows in proportion to the batch (each sequence's own work). Graded at
    B = 1, 2, 4, 8, 16, 32, 64 against the measured median step: right within a factor of 2 either way.
    Return a number (tokens per second).
    """
    raise NotImplementedError


# %% [markdown]
# Try it before you grade it (this cell runs in a notebook or as `python ex07_experiment.py`; the grader skips
# it). `minitx.measured.measure_decode_sweep` is what the grader runs, in a process whose BLAS is pinned to one
# thread: start Python with `OPENBLAS_NUM_THREADS=1` for the same numbers. On a busy laptop a multi-threaded
# matmul that waits for a core can take 100 times longer, run after run.

# %%
if __name__ == "__main__":
    import minitx

    cfg = minitx.Config.preset("small-gpt2")
    sweep = minitx.measured.measure_decode_sweep(cfg, batches=(1, 16, 64))
    runs = {p.batch: p for p in sweep}
    for B, p in runs.items():
        print(f"B={B:>2}: measured {p.tokens_per_s:>9,.0f} tokens/s ({p.timing}); the bare roofline says "
              f"{p.predicted_tokens_per_s:,.0f}")
    if minitx.measured.sweep_warning(sweep):
        print("WARNING: " + minitx.measured.sweep_warning(sweep))
    try:
        print(f"yours at B=64: {decode_tokens_per_s(cfg, 64, runs[1].measured, runs[16].measured):,.0f} tokens/s")
    except NotImplementedError:
        print("decode_tokens_per_s is not written yet")
