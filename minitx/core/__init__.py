"""What runs: the configuration, the parameters, the ops, the model, the optimizer, the KV cache and the decoder.

    config.py     Config: the shape of a model (GPT-2 and Llama families), and the real presets
    params.py     the parameter table, one flat buffer, named views, initialisation
    ops/          each op an <op>_forward / <op>_backward pair that records its own cost
    batch.py      tokens packed one row each, and the attention blocks they form
    model.py      Transformer: run() over packed tokens; forward, loss_and_grads, prefill, decode on top
    kv_cache.py   KVCache, and the store protocol the model reads keys and values through
    optim.py      AdamW on the flat buffers
    generate.py   generate / stream: sampling, with the cache or the recompute-everything reference
"""
