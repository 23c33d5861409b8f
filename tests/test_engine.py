"""The serving engine (minitx.serving.engine) against references that do not go through it.

What must hold: with greedy sampling in float64, every request's tokens, under every policy, KV layout,
chunked prefill, preemption forced by a small pool, and arrivals drawn by hypothesis, equal `minitx.generate` for
that prompt alone; sampled tokens too, when the request carries its own seed; in float32 the logits each token was
sampled from agree with a float64 forward of the same weights within the float32 rounding rule. The timeline,
the KV accounting (reserved vs used, and the KV bytes attention reads) and the modelled seconds are checked
against hand derivations and the closed forms.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitx
from minitx import Transformer, formulas, generate
from minitx.serving.engine import Engine
from minitx.serving.roofline import analyze
from reference_ops import assert_close
from strategies import TINY_GPT2, TINY_LLAMA

CONFIGS = {"llama": TINY_LLAMA.replace(n_ctx=24), "gpt2": TINY_GPT2.replace(n_ctx=24)}
MODELS = {(name, attention): Transformer(cfg, dtype="float64", attention=attention)
          for name, cfg in CONFIGS.items() for attention in ("unfused", "fused")}


@lru_cache(maxsize=None)
def alone(key, prompt: tuple, cap: int, **sampling) -> list[int]:
    """The reference: minitx.generate for this prompt alone (KV-cached decoder, no engine)."""
    return generate(MODELS[key], [list(prompt)], cap, **sampling)[0]


requests = st.lists(st.tuples(st.integers(1, 9), st.integers(1, 7), st.integers(0, 3)), min_size=2, max_size=5)


@pytest.mark.parametrize("chunk_extra", [None, 0, 2], ids=["whole-prefill", "chunked", "chunked+2"])
@pytest.mark.parametrize("layout", ["paged", "contiguous"])
@pytest.mark.parametrize("policy", ["static", "continuous"])
@settings(max_examples=4)
@given(st.sampled_from(sorted(MODELS)), requests, st.sampled_from([0, 8]), st.integers(1, 5), st.integers(2, 4),
       st.data())
def test_greedy_float64_equals_generate_alone(policy, layout, chunk_extra, key, work, spare, block_size, max_batch,
                                              data):
    """Every combination of policy, layout and chunked prefill, with hypothesis drawing the model, the requests
    (prompts, caps, arrival steps), the block size, max_batch and the pool: the largest request's blocks and no
    more (spare 0: sequences crowd each other out and, paged, get preempted) or 8 spare blocks."""
    cfg = CONFIGS[key[0]]
    prompts = [tuple(data.draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=p, max_size=p)))
               for p, _, _ in work]
    largest = max(-(-(p + g) // block_size) for p, g, _ in work)
    engine = Engine(MODELS[key], policy, layout, block_size=block_size, num_blocks=largest + spare,
                    max_batch=max_batch, chunked_prefill=None if chunk_extra is None else max_batch + chunk_extra)
    for prompt, (_, cap, arrival) in zip(prompts, work):
        engine.submit(list(prompt), cap, arrival_step=arrival)
    result = engine.run()
    for r, prompt, (_, cap, _) in zip(result.requests, prompts, work):
        assert r.tokens == alone(key, prompt, cap), (r.id, result.summary)


def test_preemption_happens_and_changes_nothing():
    # 4 requests of prompt 6 and cap 6 in a pool of 5 blocks of 4 (20 positions): each needs up to 11, so at most
    # one runs to the end at a time and the later ones are preempted and recomputed
    key = ("llama", "unfused")
    prompts = [tuple(int(t) for t in np.random.default_rng(i).integers(0, 13, 6)) for i in range(4)]
    engine = Engine(MODELS[key], "continuous", "paged", block_size=4, num_blocks=5, max_batch=4)
    for p in prompts:
        engine.submit(list(p), 6)
    result = engine.run()
    assert result.summary["preemptions"] > 0
    assert sum(r.preemptions for r in result.requests) == result.summary["preemptions"]
    assert [r.tokens for r in result.requests] == [alone(key, p, 6) for p in prompts]


@pytest.mark.parametrize("policy", ["static", "continuous"])
def test_sampling_is_the_requests_own_stream(policy):
    # temperature 0.9, top-k 5, each request its own seed: the same draws as minitx.generate for it alone, in
    # any batch, across preemptions (a pool of 8 blocks of 2 positions forces them: the 5-token prompt alone
    # grows to 5 + 7 - 1 = 11 positions, 6 blocks)
    key = ("gpt2", "fused")
    prompts = [(1, 2, 3), (4, 5, 6, 7, 8), (9,), (3, 3)]
    engine = Engine(MODELS[key], policy, "paged", block_size=2, num_blocks=8, max_batch=3)
    for i, p in enumerate(prompts):
        engine.submit(list(p), 7, temperature=0.9, top_k=5, seed=100 + i, arrival_step=i % 2)
    result = engine.run()
    assert result.summary["preemptions"] > 0
    for i, (r, p) in enumerate(zip(result.requests, prompts)):
        assert r.tokens == alone(key, p, 7, temperature=0.9, top_k=5, seed=100 + i)
    again = engine.run()                                   # deterministic, and run() can be repeated
    assert again.to_dict() == result.to_dict()
    assert len({tuple(r.tokens) for r in result.requests}) > 1, "a degenerate case: too weak a test"


def test_stop_tokens_end_a_request_and_are_kept():
    key = ("llama", "fused")
    prompt = (1, 4, 2)
    ref = alone(key, prompt, 8)
    stop = ref[2]                                      # the third greedy token
    cut = ref.index(stop) + 1
    engine = Engine(MODELS[key], max_batch=2)
    a = engine.submit(list(prompt), 8, stop=[stop])
    b = engine.submit(list(prompt), 8)
    result = engine.run()
    assert result.requests[a].tokens == ref[:cut] and result.requests[a].stop_reason == "stop"
    assert result.requests[b].tokens == ref and result.requests[b].stop_reason == "length"


def test_float32_logits_agree_with_a_float64_forward_of_the_same_weights():
    cfg = CONFIGS["llama"]
    m32 = Transformer(cfg, dtype="float32", attention="fused")
    m64 = Transformer(cfg, dtype="float64")
    m64.flat[:] = m32.flat                              # the same weights, exactly (float32 -> float64 is exact)
    engine = Engine(m32, "continuous", "paged", block_size=3, num_blocks=12, max_batch=2, chunked_prefill=4,
                    keep_logits=True)
    prompts = [[1, 5, 2, 7, 7, 3, 0, 9], [4, 4], [11, 2, 6, 1, 8]]
    for i, p in enumerate(prompts):
        engine.submit(p, 6, arrival_step=i)
    for r, p in zip(engine.run().requests, prompts):
        seq = p + r.tokens
        ref = m64.forward([seq])[0, len(p) - 1:len(seq) - 1]          # the logits each token was drawn from
        # the longest float32 sum behind a logit: the head's d_model, the MLP's d_ff, attention's head_dim and
        # the keys (≤ n_ctx)
        terms = max(cfg.d_model, cfg.d_ff, cfg.head_dim, cfg.n_ctx)
        assert_close(r.logits, ref, f"request {r.id} logits", np.float32, terms=terms)


# ---- timeline, memory, seconds: by hand ---------------------------------------------------------------------

def two_requests(policy, **kw):
    """A: prompt 3, 4 tokens, arrives at step 0. B: prompt 2, 2 tokens, arrives at step 2."""
    engine = Engine(MODELS[("llama", "unfused")] if "model" not in kw else kw.pop("model"), policy, max_batch=2,
                    **kw)
    engine.submit([1, 2, 3], 4)
    engine.submit([4, 5], 2, arrival_step=2)
    return engine.run()


def test_timeline_in_steps_static_vs_continuous():
    # continuous: step 0 A's prefill (first token at the end of step 0: time 1), steps 1-3 A's decodes (A done at
    # 4); B joins at its arrival, step 2 (first token at 3), decodes in step 3 (done at 4)
    cont = two_requests("continuous")
    a, b = cont.requests
    assert (a.arrival_step, a.first_token_step, a.finish_step, a.ttft_steps, a.tpot_steps) == (0, 1, 4, 1, 1.0)
    assert (b.arrival_step, b.first_token_step, b.finish_step, b.ttft_steps, b.tpot_steps) == (2, 3, 4, 1, 1.0)
    # static: the batch {A} runs to its end (time 4) before B's batch: B prefilled in step 4, decoded in step 5
    static = two_requests("static")
    a, b = static.requests
    assert (a.first_token_step, a.finish_step) == (1, 4)
    assert (b.first_token_step, b.finish_step, b.ttft_steps) == (5, 6, 3)
    # 6 tokens in 4 steps vs 6
    assert cont.summary["throughput_tok_step"] == 6 / 4 and static.summary["throughput_tok_step"] == 6 / 6
    assert cont.summary["max_batch_seen"] == 2 and static.summary["max_batch_seen"] == 1
    assert cont.summary["ttft_p50_steps"] == 1 and static.summary["ttft_p50_steps"] == (1 + 3) / 2


@pytest.mark.parametrize("layout", ["paged", "contiguous"])
def test_reserved_and_used_kv_bytes_at_every_step(layout):
    """Three requests arrive at step 0 (prompts 5, 2, 9; caps 4, 7, 3), blocks of 4, a pool large enough: at step s
    request i holds P_i + s positions once the step has run (its prompt at step 0, one more per step), for s < its
    cap. Reserved and used bytes equal formulas.paged_kv_bytes for those lengths (paged: their blocks; contiguous:
    their prompt + cap), and the KV bytes the step's attention reads equal the used bytes."""
    cfg = CONFIGS["gpt2"]
    model = Transformer(cfg, attention="unfused")
    P, caps, X = [5, 2, 9], [4, 7, 3], 4
    engine = Engine(model, "continuous", layout, block_size=X, num_blocks=30, max_batch=3, keep_costs=True)
    for i, (p, g) in enumerate(zip(P, caps)):
        engine.submit([i + 1] * p, g)
    result = engine.run()
    assert len(result.steps) == max(caps)
    waste = []
    for s, step in enumerate(result.steps):
        running = [i for i in range(3) if s < caps[i]]
        lengths = [P[i] + s for i in running]
        expected = formulas.paged_kv_bytes(cfg, lengths, X, caps=None if layout == "paged" else
                                           [P[i] + caps[i] for i in running])
        assert (step.reserved_bytes, step.used_bytes) == (expected["reserved"], expected["used"])
        assert step.costs.reads["kv_cache"] == expected["used"]
        waste.append(expected["waste"] / expected["reserved"])
    assert result.summary["kv_waste"] == pytest.approx(np.mean(waste), rel=1e-12)


def test_modelled_seconds_are_each_steps_roofline():
    """With hardware, each step takes the roofline time of its counts; by hand, the steps of two_requests run the
    blocks (b, n, p): step 0 A's prompt (1, 3, 0); step 1 A's decode (1, 1, 3); step 2 A at 4 and B's prompt,
    (1, 1, 4), (1, 2, 0); step 3 (1, 1, 5), (1, 1, 2). B arrives at the start of step 2 and has its first token
    at its end: its TTFT is step 2's time."""
    model = Transformer(CONFIGS["llama"], attention="fused")
    result = two_requests("continuous", model=model, hardware="h100-sxm")
    blocks = [([(1, 3, 0)], 1), ([(1, 1, 3)], 1), ([(1, 1, 4), (1, 2, 0)], 2), ([(1, 1, 5), (1, 1, 2)], 2)]
    times = [analyze(formulas.step(model.cfg, b, "float32", "fused", logits_rows=n), "h100-sxm", "fp32").time
             for b, n in blocks]
    assert [s.seconds for s in result.steps] == pytest.approx(times, rel=1e-12)
    a, b = result.requests
    assert b.ttft_s == pytest.approx(times[2], rel=1e-12)
    assert a.ttft_s == pytest.approx(times[0], rel=1e-12) and a.finish_s == pytest.approx(sum(times), rel=1e-12)
    assert result.summary["throughput_tok_s"] == pytest.approx(6 / sum(times), rel=1e-12)


# ---- refusals --------------------------------------------------------------------------------------------------

def test_requests_that_cannot_run_are_refused_at_submit():
    engine = Engine(MODELS[("llama", "unfused")], block_size=4, num_blocks=3, max_batch=2)
    with pytest.raises(ValueError, match="13 tokens need 4 KV blocks of 4; the pool has num_blocks=3"):
        engine.submit([1] * 10, 3)
    with pytest.raises(ValueError, match="20 tokens; with max_new_tokens=5 that is 25 > the model's context n_ctx=24"):
        Engine(MODELS[("llama", "unfused")]).submit([1] * 20, 5)
    with pytest.raises(ValueError, match="no requests"):
        engine.run()
    with pytest.raises(ValueError, match="chunked_prefill=2 must be at least max_batch=4"):
        Engine(MODELS[("llama", "unfused")], max_batch=4, chunked_prefill=2)
    with pytest.raises(ValueError, match="no peak FLOP/s for 'float64'"):
        Engine(MODELS[("llama", "unfused")], hardware="h100-sxm")
    with pytest.raises(ValueError, match="shape-only"):
        Engine(Transformer(CONFIGS["llama"], shape_only=True))


json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.integers(2 ** 60, 2 ** 70),
                        st.floats(allow_nan=True), st.text(max_size=3),
                        st.lists(st.one_of(st.integers(-2, 30), st.floats(), st.text(max_size=2)), max_size=4))


@settings(max_examples=60)
@given(st.fixed_dictionaries({}, optional={k: json_values for k in (
    "policy", "kv_layout", "block_size", "num_blocks", "max_batch", "chunked_prefill", "hardware", "seed")}),
       st.fixed_dictionaries({"prompt_ids": json_values, "max_new_tokens": json_values},
                             optional={k: json_values for k in ("temperature", "top_k", "top_p", "seed", "stop",
                                                                "arrival_step")}))
def test_hostile_arguments_give_clean_errors(engine_kw, submit_kw):
    model = MODELS[("gpt2", "unfused")]
    try:
        engine = Engine(model, **engine_kw)
    except (ValueError, TypeError) as e:
        assert str(e)
        engine = Engine(model, max_batch=2)
    try:
        engine.submit(**submit_kw)
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    r = engine.run().requests[0]                       # whatever was accepted runs to its end
    assert 1 <= len(r.tokens) <= submit_kw["max_new_tokens"]
    assert all(0 <= t < model.cfg.vocab_size for t in r.tokens)


def test_exported():
    assert minitx.Engine is Engine


small_or_huge = st.one_of(st.integers(1, 64), st.integers(2 ** 34, 2 ** 53))


@settings(max_examples=30)
@given(st.sampled_from(["paged", "contiguous"]), small_or_huge, st.one_of(st.none(), small_or_huge), small_or_huge)
def test_a_pool_or_batch_past_this_machine_is_refused_before_it_is_allocated(layout, max_batch, num_blocks,
                                                                              block_size):
    """A pool of 2**40 blocks, a block table of 2**40 slots, or a default pool of max_batch × the longest request's
    blocks: a ValueError that names them, before the block manager's free list or the store exists (sizes are
    small or far past this machine, never in between: what is accepted runs)."""
    engine = Engine(MODELS[("gpt2", "unfused")], "continuous", layout, block_size=block_size, num_blocks=num_blocks,
                    max_batch=max_batch)
    try:
        engine.submit([1, 2, 3], 2)
    except ValueError as e:                         # a pool too small for the request: refused at submit
        assert "could never run" in str(e)
        return
    try:
        result = engine.run()
    except ValueError as e:
        assert "KV" in str(e) and ("max_batch" in str(e) or "num_blocks" in str(e)), str(e)
        return
    assert len(result.requests[0].tokens) == 2


def test_an_empty_prompt_is_refused_by_name():
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        Engine(MODELS[("gpt2", "unfused")]).submit([], 3)
