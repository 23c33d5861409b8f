"""The scheduler and the KV block manager (minitx.serving.scheduler): pure Python, so these run in milliseconds.

The property test drives the scheduler the way the engine and the simulator do (next_step, then finish with the
requests that ended) over hypothesis-drawn workloads, and checks at every step what must always hold: no block is
held twice, used ≤ reserved, paged waste < one block per sequence, the token budget and max_batch are respected,
every running decode gets its token, admission is first come first served, every request finishes, and the same
workload gives the same steps.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx.serving.scheduler import BlockManager, Request, Scheduler


# ---- a driver: what an executor does ----------------------------------------------------------------------------

def drive(sched: Scheduler, stop_after: dict[int, int] | None = None, check=None, max_steps: int = 5000):
    """Run to completion: a request ends after stop_after[id] tokens (its "stop token"), else at its cap. Returns
    the trace [(now, [(id, start, n, wants_logits)], preempted)]. `check(sched, step)` runs after each step is
    formed."""
    stop_after = stop_after or {}
    made: dict[int, int] = {}
    trace, now = [], 0
    for _ in range(max_steps):
        if not sched.unfinished:
            return trace
        step = sched.next_step(now)
        if step is None:
            nxt = sched.next_arrival()
            assert nxt is not None and nxt > now, "idle with nothing to wait for: a hang"
            now = math.ceil(nxt)
            continue
        if check:
            check(sched, step)
        trace.append((now, [(c.request_id, c.start, c.n, c.wants_logits) for c in step.chunks], list(step.preempted)))
        done = set()
        for c in step.chunks:
            if c.wants_logits:
                made[c.request_id] = made.get(c.request_id, 0) + 1
                if made[c.request_id] == stop_after.get(c.request_id):
                    done.add(c.request_id)
        sched.finish(step, done)
        now += 1
    pytest.fail(f"not finished after {max_steps} steps: {sched!r}")


def invariants(blocks: BlockManager, max_batch: int, budget: int | None):
    """A check for drive(): everything that must hold at every step."""
    def check(sched: Scheduler, step):
        held = [b for rid in sched.running for b in blocks.table(rid)]
        assert len(held) == len(set(held)), "a block is held by two sequences (or twice by one)"
        assert all(0 <= b < blocks.num_blocks for b in held)
        assert len(held) + blocks.num_free == blocks.num_blocks, "blocks leaked or invented"
        assert blocks.used_tokens <= blocks.reserved_tokens == len(held) * blocks.block_size
        assert blocks.used_tokens == sum(blocks.used(rid) for rid in sched.running)
        for rid in sched.running:
            req, used = sched.request(rid), blocks.used(rid)
            if blocks.layout == "paged":       # ceil(used / bs) blocks: fewer than block_size positions empty
                assert len(blocks.table(rid)) * blocks.block_size - used < blocks.block_size
            else:                              # the whole prompt + cap, reserved up front
                assert len(blocks.table(rid)) == -(-(req.prompt_len + req.max_new_tokens) // blocks.block_size)
        ids = [c.request_id for c in step.chunks]
        assert len(ids) == len(set(ids)) and set(ids) <= set(sched.running)
        assert len(sched.running) <= max_batch
        if budget is not None:
            assert step.n_tokens <= budget
        for c in step.chunks:
            p = sched.progress(c.request_id)
            assert c.n >= 1 and c.start == p.computed and blocks.used(c.request_id) == c.start + c.n
            assert c.wants_logits == (c.start + c.n == sched.request(c.request_id).prompt_len + p.generated)
        # every running sequence with one token to run (a decode) gets it: the budget always covers them
        for rid in sched.running:
            p = sched.progress(rid)
            if sched.request(rid).prompt_len + p.generated - p.computed == 1:
                assert rid in ids, f"request {rid}'s decode token was skipped"
    return check


workloads = st.lists(st.tuples(st.integers(1, 12), st.integers(1, 8), st.integers(0, 4), st.integers(0, 8)),
                     min_size=1, max_size=8)   # (prompt_len, max_new_tokens, arrival, stop after: 0 = the cap)


@pytest.mark.parametrize("layout", ["paged", "contiguous"])
@pytest.mark.parametrize("policy", ["static", "continuous"])
@settings(max_examples=25)
@given(workloads, st.integers(1, 5), st.integers(1, 4), st.sampled_from([None, 0, 3]), st.sampled_from([0, 1, 12]))
def test_invariants_over_drawn_workloads(policy, layout, work, block_size, max_batch, chunk_extra, spare_blocks):
    # the pool: the largest request's blocks (so each can run alone) plus 0, 1 or 12 spare: tight pools force
    # preemptions (paged), roomy ones none
    largest = max(-(-(p + g) // block_size) for p, g, _, _ in work)
    budget = None if chunk_extra is None else max_batch + chunk_extra
    blocks = BlockManager(largest + spare_blocks, block_size, layout)
    sched = Scheduler(blocks, policy, max_batch=max_batch, chunked_prefill=budget)
    for i, (p, g, a, _) in enumerate(work):
        sched.add(Request(i, p, g, a))
    stops = {i: s for i, (p, g, a, s) in enumerate(work) if 0 < s < g}
    trace = drive(sched, stops, invariants(blocks, max_batch, budget))

    # every request finished, with the tokens it was meant to make, and the pool is whole again
    assert sorted(sched.finished) == list(range(len(work)))
    assert blocks.num_free == blocks.num_blocks and blocks.used_tokens == 0
    sampled = {i: 0 for i in range(len(work))}
    for _, chunks, _ in trace:
        for rid, _, _, wants in chunks:
            sampled[rid] += wants
    assert sampled == {i: stops.get(i, g) for i, (p, g, a, s) in enumerate(work)}
    # no request runs before it arrives; first admissions are first come, first served
    order = []                                 # first admissions, in order (a step lists its admissions last)
    for now, chunks, _ in trace:
        for rid, *_ in chunks:
            assert now >= work[rid][2]
            if rid not in order:
                order.append(rid)
    assert order == sorted(order, key=lambda r: (work[r][2], r)), "a later arrival was admitted first"
    # contiguous reservation never runs out mid-way: it never preempts
    if layout == "contiguous":
        assert sched.preemptions == 0
    assert sched.preemptions == sum(len(pre) for _, _, pre in trace)
    # deterministic: the same workload, the same steps
    again = Scheduler(BlockManager(largest + spare_blocks, block_size, layout), policy, max_batch=max_batch,
                      chunked_prefill=budget)
    for i, (p, g, a, _) in enumerate(work):
        again.add(Request(i, p, g, a))
    assert drive(again, stops) == trace


# ---- the policies, on small hand-made workloads --------------------------------------------------------------

def run(policy, requests, **kw):
    blocks = BlockManager(kw.pop("num_blocks", 64), kw.pop("block_size", 4), kw.pop("layout", "paged"))
    sched = Scheduler(blocks, policy, **kw)
    for r in requests:
        sched.add(r)
    return drive(sched), sched


def test_static_waits_for_the_longest_member_continuous_does_not():
    # Requests 0 and 1 arrive at step 0 (caps 2 and 6 tokens), request 2 at step 1.
    reqs = [Request(0, 3, 2, 0), Request(1, 3, 6, 0), Request(2, 3, 2, 1)]
    static, _ = run("static", reqs, max_batch=4)
    cont, _ = run("continuous", reqs, max_batch=4)
    start = lambda trace: next(now for now, chunks, _ in trace if any(c[0] == 2 for c in chunks))
    # static: the batch {0, 1} runs 6 steps (the prefill makes token 1 of 6, then 5 decodes: steps 0..5), so
    # request 2 starts at step 6; continuous admits it at its arrival, step 1
    assert start(static) == 6 and start(cont) == 1
    # and request 0's place stays empty in the static batch once it is done (after steps 0, 1)
    assert [len(chunks) for now, chunks, _ in static][:6] == [2, 2, 1, 1, 1, 1]


def test_prefill_whole_without_chunking_and_in_budget_with_it():
    # A 10-token prompt with max_batch 2 and a budget of 4: chunks of 4, 4, 2 (the last wants logits)
    trace, _ = run("continuous", [Request(0, 10, 1, 0)], max_batch=2, chunked_prefill=4)
    assert [c for _, chunks, _ in trace for c in chunks] == [(0, 0, 4, False), (0, 4, 4, False), (0, 8, 2, True)]
    trace, _ = run("continuous", [Request(0, 10, 1, 0)], max_batch=2)
    assert trace[0][1] == [(0, 0, 10, True)]


def test_decodes_go_first_and_prefill_chunks_share_the_rest():
    # Request 0 (prompt 2) is decoding when request 1's 9-token prompt arrives at step 1, budget 4, max_batch 2:
    # each step runs request 0's decode token and 4 - 1 = 3 of the prompt (Sarathi-Serve's stall-free batching)
    trace, _ = run("continuous", [Request(0, 2, 5, 0), Request(1, 9, 1, 1)], max_batch=2, chunked_prefill=4)
    assert trace[1][1] == [(0, 2, 1, True), (1, 0, 3, False)]
    assert trace[2][1] == [(0, 3, 1, True), (1, 3, 3, False)]
    assert trace[3][1] == [(0, 4, 1, True), (1, 6, 3, True)]


def test_contiguous_reserves_prompt_plus_cap_paged_what_it_holds():
    # prompt 5, cap 7, blocks of 4: contiguous reserves ceil((5 + 7) / 4) = 3 blocks = 12 positions at admission;
    # paged holds ceil(5 / 4) = 2 blocks = 8 for the 5 prompt tokens
    for layout, reserved in (("contiguous", 12), ("paged", 8)):
        blocks = BlockManager(10, 4, layout)
        sched = Scheduler(blocks, "continuous", max_batch=2)
        sched.add(Request(0, 5, 7, 0))
        step = sched.next_step(0)
        assert (blocks.reserved_tokens, blocks.used_tokens) == (reserved, 5)
        assert len(blocks.table(0)) == reserved // 4
        sched.finish(step)


def test_preemption_frees_the_newest_and_recomputes_what_it_knew():
    # A pool of 4 blocks of 1 position; three requests of prompt 1 arrive at step 0 (caps 3, 3, 2).
    # step 0: all three admitted, 1 block each, 1 free; each samples its 1st token.
    # step 1: request 0's decode (position 1) takes the free block; request 1's needs one, none is free: the
    #         newest, request 2, is preempted (its block freed), and request 1 grows into it.
    # step 2: request 0 needs a block again; the newest running is now request 1: preempted (2 blocks freed),
    #         request 0 takes one and makes its 3rd and last token. Request 1 (3 known tokens: 3 blocks) heads
    #         the queue but only 1 block is free: nothing is admitted (and request 2 may not overtake it).
    # step 3: request 0's 3 blocks are back: request 1 re-runs prompt + its 2 tokens, 0..2, and samples its 3rd.
    #         Request 2 (prompt + 1 token: 2 blocks) does not fit the 1 block left.
    # step 4: request 2 re-runs its 2 known tokens and makes its 2nd and last.
    trace, sched = run("continuous", [Request(0, 1, 3, 0), Request(1, 1, 3, 0), Request(2, 1, 2, 0)],
                       num_blocks=4, block_size=1, max_batch=3)
    assert trace == [(0, [(0, 0, 1, True), (1, 0, 1, True), (2, 0, 1, True)], []),
                     (1, [(0, 1, 1, True), (1, 1, 1, True)], [2]),
                     (2, [(0, 2, 1, True)], [1]),
                     (3, [(1, 0, 3, True)], []),
                     (4, [(2, 0, 2, True)], [])]
    assert sched.preemptions == 2 and sched.progress(1).preemptions == sched.progress(2).preemptions == 1


def test_idle_until_the_next_arrival():
    blocks = BlockManager(8, 4)
    sched = Scheduler(blocks, "continuous", max_batch=2)
    sched.add(Request(0, 2, 1, arrival=5.5))
    assert sched.next_step(0) is None and sched.next_arrival() == 5.5 and sched.pending == (0,)
    assert sched.next_step(5) is None
    step = sched.next_step(5.5)
    assert step.chunks[0].request_id == 0 and sched.running == (0,)
    sched.finish(step)
    assert sched.finished == (0,) and sched.next_arrival() is None and sched.next_step(6) is None


# ---- refusals ------------------------------------------------------------------------------------------------

def test_requests_that_could_never_run_are_refused_when_added():
    sched = Scheduler(BlockManager(4, 4), "continuous", max_batch=2, max_context=20)
    with pytest.raises(ValueError, match=r"17 tokens need 5 blocks of 4; the whole pool has 4"):
        sched.add(Request(0, 10, 7, 0))                  # ceil(17 / 4) = 5 > 4 blocks
    with pytest.raises(ValueError, match="exceeds the model's context 20"):
        Scheduler(BlockManager(99, 4), max_context=20).add(Request(0, 15, 6, 0))
    sched.add(Request(0, 10, 6, 0))                      # 16 positions: exactly the pool
    with pytest.raises(ValueError, match="already added"):
        sched.add(Request(0, 1, 1, 0))


@pytest.mark.parametrize("kw, message", [
    (dict(policy="fifo"), "policy='fifo' is unknown"),
    (dict(max_batch=0), "max_batch=0 must be a positive integer"),
    (dict(max_batch=4, chunked_prefill=3), "chunked_prefill=3 must be at least max_batch=4"),
    (dict(max_context=0), "max_context=0"),
])
def test_bad_scheduler_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        Scheduler(BlockManager(4, 4), **kw)


def test_a_pool_too_large_to_keep_track_of_is_refused_not_allocated():
    # the free list holds one Python int per block: 10**12 of them would take 40 TB; refused at once, by name
    with pytest.raises(ValueError, match=r"num_blocks=1000000000000 must be an integer in \[1, 10000000\]"):
        BlockManager(10 ** 12, 4)


def test_misuse_of_steps_is_an_error():
    sched = Scheduler(BlockManager(8, 4), max_batch=2)
    sched.add(Request(0, 2, 3, 0))
    step = sched.next_step(1)
    with pytest.raises(ValueError, match="previous step is not finished"):
        sched.next_step(2)
    with pytest.raises(ValueError, match="produced no token"):
        sched.finish(step, {7})
    with pytest.raises(TypeError, match="done must be an iterable"):
        sched.finish(step, 3)
    sched.finish(step)
    with pytest.raises(ValueError, match="once"):
        sched.finish(step)
    with pytest.raises(ValueError, match="goes back in time"):
        sched.next_step(0)


json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2 ** 70), st.floats(allow_nan=True),
                        st.text(max_size=4), st.lists(st.integers(), max_size=2))


@settings(max_examples=80)
@given(json_values, json_values, json_values, json_values, json_values, json_values, json_values)
def test_hostile_arguments_give_clean_errors(a, b, c, d, e, f, g):
    for build in (lambda: Request(a, b, c, d), lambda: BlockManager(a, b, c),
                  lambda: Scheduler(BlockManager(4, 2), e, f, g, a)):
        try:
            build()
        except (ValueError, TypeError) as err:
            assert str(err)
    sched = Scheduler(BlockManager(4, 2), max_batch=2)
    for call in (lambda: sched.add(a), lambda: sched.next_step(a), lambda: sched.progress(a)):
        try:
            step = call()
        except (ValueError, TypeError) as err:
            assert str(err)
        else:
            if step is not None and hasattr(step, "chunks"):
                sched.finish(step)
