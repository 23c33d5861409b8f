# %% [markdown]
# # Solutions, exercise 8: the serving engine's KV cache, paged or contiguous

# %%
def kv_reserved_bytes(cfg, prompt_lens, max_new_tokens, block_size, layout) -> int:
    per_position = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4          # K and V, every layer, float32

    def whole_blocks(positions):
        return -(-positions // block_size) * block_size                         # ceil to a whole block

    if layout == "paged":                       # blocks for what each sequence holds now: its prompt
        held = sum(whole_blocks(p) for p in prompt_lens)
    else:                                       # reserved up front: the prompt and every token it may make
        held = sum(whole_blocks(p + max_new_tokens) for p in prompt_lens)
    return held * per_position
