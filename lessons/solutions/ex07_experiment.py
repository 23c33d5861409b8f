# %% [markdown]
# # Solutions, exercise 7: predict this machine's decode from two measured steps

# %%
def decode_tokens_per_s(cfg, batch, step_s_at_1, step_s_at_16) -> float:
    # step(B) = fixed + B · per_sequence: two measurements, two unknowns
    per_sequence = max(step_s_at_16 - step_s_at_1, 0.0) / 15     # what one more sequence adds to a step
    fixed = step_s_at_1 - per_sequence                             # the per-op overhead every step pays
    return batch / (fixed + batch * per_sequence)
