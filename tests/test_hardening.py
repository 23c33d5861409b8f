"""Misuse that used to crash, diverge silently or run away, each pinned by a test that failed before its fix.

* the public dicts: rebinding `model.params[name]` made a kernel index past an array of another shape (a
  segfault) or ran one array while saving another; rebinding a gradient made AdamW read a stale one;
* a 70B preset handed to `Transformer` started allocating 276 GB; a huge KVCache likewise;
* counting: entering one counter twice counted everything twice; another thread's uncounted run was counted;
* sampling at a subnormal temperature overflowed to inf and picked the first token instead of the argmax;
* the serving calculator's memory grew with --gen (a steps × ops matrix);
* --json printed `Infinity` (not JSON) and had no schema version.
"""
from __future__ import annotations

import json
import threading
import tracemalloc

import numpy as np
import pytest

import minitx
from minitx import AdamW, Config, KVCache, Transformer, count, serving
from minitx.cli import main
from minitx.core.generate import Sampler

TINY = Config.preset("tiny-llama")


# ---- the parameter and gradient mappings -------------------------------------------------------------------

def test_rebinding_a_parameter_or_a_gradient_is_refused_writing_into_it_works():
    model = Transformer(TINY)
    wte = model.params["wte"]
    for bad in (np.zeros((3, 3), np.float32), np.zeros_like(wte)):      # another shape, or the same shape
        with pytest.raises(TypeError, match="cannot rebind 'wte'.*write into the view"):
            model.params["wte"] = bad
    with pytest.raises(TypeError, match="cannot rebind"):
        del model.params["wte"]
    model.params["wte"][...] = 0.5                                       # the supported way: into the buffer
    assert (model.flat[:wte.size] == 0.5).all()

    tokens = np.arange(8).reshape(2, 4) % TINY.vocab_size
    _, grads = model.loss_and_grads(tokens, tokens)
    with pytest.raises(TypeError, match="cannot rebind"):
        grads["wte"] = grads["wte"] * 0.5
    opt = AdamW(model, lr=0.1)
    for g in grads.values():                                             # clipping in place is seen by AdamW
        g[...] = 0.0
    before = model.flat.copy()
    opt.step(grads)
    np.testing.assert_array_equal(model.flat, before)                   # zero gradient, no decay: no change


# ---- models and caches too big for the machine -------------------------------------------------------------

def test_a_70b_model_or_a_huge_cache_is_refused_before_allocating():
    tracemalloc.start()
    with pytest.raises(ValueError, match="needs 275.9 GB.*more than this machine"):
        Transformer(Config.preset("llama-2-70b"))
    with pytest.raises(ValueError, match="KVCache needs"):
        KVCache(Config.preset("llama-3-8b"), batch=10_000, max_len=8192)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20


# ---- counting ----------------------------------------------------------------------------------------------

def test_a_counter_entered_twice_is_refused():
    c = count()
    with c:
        with pytest.raises(ValueError, match="already active"):
            with c:
                pass


def test_counting_is_per_thread():
    model = Transformer(TINY)
    tokens = np.zeros((1, 4), dtype=np.int64)
    with count() as alone:
        model.forward(tokens)
    started, stop = threading.Event(), threading.Event()

    def busy():                                     # an uncounted model running beside the counted one
        started.set()
        while not stop.is_set():
            model.forward(tokens)

    thread = threading.Thread(target=busy)
    thread.start()
    started.wait()
    try:
        with count() as c:
            model.forward(tokens)
    finally:
        stop.set()
        thread.join()
    assert c.records == alone.records


# ---- sampling ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [5e-324, 1e-310, 1e-300])
def test_a_tiny_temperature_is_greedy(temperature):
    logits = np.array([[1.0, 3.0, 2.0], [-5.0, -1.0, -3.0]])
    np.testing.assert_array_equal(Sampler(temperature, None, None, 0)(logits), [1, 1])


# ---- the serving calculator ---------------------------------------------------------------------------------

def test_the_mean_decode_step_takes_constant_memory_in_the_number_of_steps():
    cfg = Config.preset("llama-3-8b").replace(n_ctx=2_000_000)
    tracemalloc.start()
    serving.decode_steps(cfg, "h100", "bf16", batch=8, first=100, steps=1_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20                         # was a (steps × ops) matrix: over 8 GiB at a million steps


# ---- --json ------------------------------------------------------------------------------------------------

JSON_COMMANDS = [["params", "gpt2"], ["memory", "llama-2-7b", "--seq", "512"], ["flops", "gpt2", "--seq", "64"],
                 ["count", "gpt2", "--seq", "64"], ["kv", "mistral-7b", "--seq", "128"], ["hw"],
                 ["roofline", "llama-3-8b", "--batch", "1"],
                 ["cost", "llama-3-8b", "--gpu-price", "1e308", "--api-price-in", "1e-300", "--api-price-out",
                  "1e-300", "--utilization", "1e-300"]]


@pytest.mark.parametrize("argv", JSON_COMMANDS, ids=lambda a: a[0])
def test_every_json_output_is_valid_json_with_a_schema_version(capsys, argv):
    assert main(argv + ["--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert data["schema_version"] == 1
    assert minitx.__version__


# ---- the optimizer -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("attr, value, message", [("lr", float("nan"), "lr must be"), ("lr", -1.0, "lr must be"),
                                                  ("betas", (1.0, 1.0), r"betas\[0\] must be in \[0, 1\)"),
                                                  ("betas", (0.9,), "betas must be a pair"),
                                                  ("eps", 0.0, "eps must be"), ("weight_decay", float("inf"),
                                                                                  "weight_decay must be")])
def test_hyperparameters_set_after_construction_are_checked_at_each_step(attr, value, message):
    model = Transformer(TINY)
    tokens = np.arange(8).reshape(2, 4) % TINY.vocab_size
    _, grads = model.loss_and_grads(tokens, tokens)
    opt = AdamW(model)
    setattr(opt, attr, value)
    before = model.flat.copy()
    with pytest.raises(ValueError, match=message):
        opt.step(grads)
    np.testing.assert_array_equal(model.flat, before)           # nothing was touched
    assert opt.t == 0


def test_complex_gradients_and_a_model_that_is_not_one_are_refused():
    model = Transformer(TINY)
    grads = {name: np.zeros(p.shape, dtype=np.complex128) for name, p in model.params.items()}
    with pytest.raises(TypeError, match="real numbers"):
        AdamW(model).step(grads)
    with pytest.raises(TypeError, match="model must be a minitx Transformer"):
        AdamW("model")


def test_cache_bookkeeping_is_checked_against_memory_even_by_shape():
    # a shape-only cache holds no keys, but its lengths and block table are real arrays: 10**12 sequences would
    # need 16 TB of int64 lengths + table rows (16 B each), 10**12 paged slots 64 TB of table (a slot's row holds the
    # n_ctx / block_size = 32 / 4 = 8 blocks a full sequence can need, 8 B each)
    from minitx import PagedKVCache
    cfg = Config.preset("tiny-llama")
    with pytest.raises(ValueError, match="KVCache lengths and table needs 16,000.0 GB"):
        KVCache(cfg, batch=10**12, max_len=4, shape_only=True)
    with pytest.raises(ValueError, match="PagedKVCache block table needs 64,000.0 GB"):
        PagedKVCache(cfg, 4, 4, slots=10**12)
