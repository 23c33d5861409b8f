# %% [markdown]
# # Exercise 1: count the parameters (slides 5 and 8)
#
# Write `count_params(cfg)` below, then grade it: `minitx grade ex01_parameters.py`. The grader calls it on
# small models of both families (GPT-2: learned positions, LayerNorm, biases, a tied head; Llama: RoPE, RMSNorm,
# a gated MLP, grouped-query attention, an untied head), each changed one feature at a time, and on real models
# (GPT-2, Llama-3-8B, Mistral-7B, Gemma-2B, Gemma-7B); it compares your answer with the parameters minitx
# allocates for that model. Lesson 1 (`lessons/01_parameters.py`) is the background.
#
# `cfg` is a `minitx.Config`. The fields you need: `vocab_size` (V), `d_model` (C), `n_layers` (L), `n_heads`
# (NH), `n_kv_heads` (KV), `head_dim` (HS), `d_ff` (F), `n_ctx`, `norm` ("layernorm" or "rmsnorm"), `mlp`
# ("standard" or "gated"), `position` ("learned" or "rope"), `bias`, `tie_embeddings`.

# %%
def count_params(cfg) -> int:
    """Every parameter of the model `cfg` describes, each stored tensor counted once.

    Counted, as minitx allocates them:
      * the token embedding, V × C; with learned positions, a position table of n_ctx × C;
      * per layer: the q, k and v projections (C × NH·HS for q, C × KV·HS for each of k and v), the output
        projection (NH·HS × C), the MLP (C × F up and F × C down; a gated MLP has a gate *and* an up matrix,
        C × F each), two norms (a LayerNorm has a scale and a shift of C each, an RMSNorm a scale only);
        with cfg.bias, each of those linear layers has a bias of its output width;
      * a final norm; the LM head, C × V, unless cfg.tie_embeddings (then it *is* the token embedding: once).
    RoPE has no parameters. Return an int.
    """
    raise NotImplementedError
