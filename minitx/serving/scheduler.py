"""Who runs next: the scheduler of a serving engine, and the KV block manager it asks for memory.

    blocks = BlockManager(num_blocks=64, block_size=16, layout="paged")
    sched = Scheduler(blocks, policy="continuous", max_batch=8, chunked_prefill=64)
    sched.add(Request(id=0, prompt_len=40, max_new_tokens=20, arrival=0))
    step = sched.next_step(now=0)          # Step(chunks=[Chunk(0, start=0, n=40, wants_logits=True)], ...)
    ...run the model over the step's chunks, sample a token for each chunk that wants logits...
    sched.finish(step, done={...})         # the requests that ended (a stop token, or their own end)

Pure Python: no model, no arrays. The engine (minitx.serving.engine) runs its steps through a real model; the
simulator runs the very same steps against a clock. Both call only what is here, so what they show about
batching is the scheduler's doing, not an artefact of two implementations.

A request's life. A request has a prompt of P tokens and a cap of max_new_tokens it may generate. Its "known"
tokens are the prompt and what it has generated so far (P + G). The model must run every known token once, to
write its key and value into the KV cache, and the last one's logits give the next token. A step gives each
scheduled sequence a Chunk: n consecutive known tokens starting at position `start` (= how many it has in the
cache). A prefill chunk covers part or all of the prompt; a decode chunk is the one token generated last step.
A chunk that reaches the last known token wants logits, and one new token is sampled from them: the executor
reports which requests ended (a stop token, the cap, or, in the simulator, the trace's output length).

Memory: the block manager (vLLM, Kwon et al., "Efficient Memory Management for Large Language Model Serving with
PagedAttention", SOSP 2023). The KV cache is a pool of `num_blocks` blocks, each holding the keys and values of
`block_size` token positions (all layers, K and V). Two layouts:
  * contiguous: what servers did before vLLM. A request gets all the memory it might ever need when it is
    admitted: ceil((P + max_new_tokens) / block_size) blocks, its prompt plus its own cap (the most a server knows
    in advance). Until it has generated all of them, most of that reservation holds nothing: the paper measures
    60-80% of KV memory wasted this way. (Counted by blocks, not by placement: external fragmentation, the third
    waste the paper names, is not modelled, so this is the contiguous layout at its best.)
  * paged: a sequence holds ceil(tokens / block_size) blocks, anywhere in the pool, listed in its block table,
    and takes one more only when its last block is full. It wastes less than one block: < block_size positions.
A sequence's memory is reserved when a step is formed, for the tokens that step will write; `used_tokens` is then
what the running sequences hold once the step has run, `reserved_tokens` the blocks they hold, in positions.

Policies.
  * static: the classic batch. When nothing runs, a batch is formed from the requests waiting (up to max_batch,
    what fits); it runs until its longest member ends, finished members leaving their place empty, and only then
    is the next batch formed. A short request in a batch with a long one waits for it; a request arriving while
    a batch runs waits for the whole batch.
  * continuous: iteration-level scheduling (Orca, Yu et al., "Orca: A Distributed Serving System for
    Transformer-Based Generative Models", OSDI 2022). The batch is re-formed at every step: finished requests
    leave at once and waiting ones join as soon as there is room (a place among max_batch, and KV memory).
  * chunked_prefill = a per-step token budget shared by prefill chunks and decode tokens (vLLM's
    max_num_batched_tokens; Sarathi-Serve, Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference
    with Sarathi-Serve", OSDI 2024). Decode tokens are scheduled first, one per running sequence, and prompts are
    prefilled in chunks in the budget left, so a long prompt no longer stalls everyone's next token for a whole
    prefill. Without it, a prompt is prefilled whole in the step its request is admitted. As in vLLM, the budget
    must be at least max_batch (every running sequence's decode token fits in every step).

Preemption (vLLM's recompute mode). When a sequence needs a block and none is free, the most recently admitted
running request is preempted: its blocks are freed, and it goes back to the front of the waiting queue. When it
is admitted again, everything it knows is prefilled again, its prompt AND the tokens it already generated (the
last of which has no KV yet anyway), and the last position's logits give its next token, as a decode step would
have. The sequences admitted first always make progress, so every request finishes.

Order and fairness. Requests are admitted first come, first served (by arrival, then by the order added): a
request that does not fit blocks those behind it (no overtaking, so a long prompt cannot be starved by short
ones). Running sequences are served oldest admission first. Everything is deterministic: the same requests give
the same steps.

A request that could never run (its prompt and cap need more blocks than the whole pool, or more positions than
the model's context) is refused when it is added, with the numbers.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from .. import checks

LAYOUTS = ("paged", "contiguous")
POLICIES = ("static", "continuous")
# The block manager keeps a Python list of its free block ids: ten million of them take about a second and 400 MB,
# and a pool that large is a typo (or a model far too small for its chip). More is refused, not allocated.
MAX_BLOCKS = 10_000_000


# ==============================================================================================================
# What the scheduler is told, and what it answers

@dataclass(frozen=True)
class Request:
    """What the scheduler knows about a request: its id, prompt length, the cap on new tokens (the most the
    server knows in advance; the actual output may stop earlier), and when it may be admitted (a step index in
    the engine, seconds in the simulator)."""
    id: int
    prompt_len: int
    max_new_tokens: int
    arrival: float = 0

    def __post_init__(self):
        checks.integer("Request id", self.id, 0)
        checks.integer("Request prompt_len", self.prompt_len)
        checks.integer("Request max_new_tokens", self.max_new_tokens)
        checks.number("Request arrival", self.arrival, 0.0)


@dataclass(slots=True)
class Chunk:
    """One sequence's work in one step: n new tokens at positions start..start+n-1 (start = the tokens already
    in its KV cache); wants_logits when the chunk ends at its last known token (the prompt's last, or a decode
    token), i.e. when a new token will be sampled from it."""
    request_id: int
    start: int
    n: int
    wants_logits: bool

    @property
    def end(self) -> int:
        """Positions the sequence holds once the chunk has run: the keys its attention reads (start + n)."""
        return self.start + self.n


@dataclass
class Step:
    """One iteration: the chunks to run together (decode tokens first, then prefill chunks of running
    sequences, then the first chunks of newly admitted ones) and the requests preempted to make room."""
    chunks: list[Chunk]
    preempted: list[int]

    @property
    def n_tokens(self) -> int:
        return sum(c.n for c in self.chunks)


# ==============================================================================================================
# KV memory

class BlockManager:
    """The KV cache as a pool of `num_blocks` blocks of `block_size` token positions (all layers' K and V).

    layout "paged": a sequence holds ceil(tokens / block_size) blocks, taken one at a time as it grows;
           "contiguous": a sequence reserves ceil(cap_tokens / block_size) blocks when it is allocated (its
           prompt plus its cap on new tokens), and grows inside that reservation.

        bm.allocate(id, tokens, cap_tokens)   a new sequence holding `tokens` positions
        bm.grow(id, tokens)                   it now holds `tokens` positions (more blocks when paged)
        bm.free(id)                           its blocks back to the pool
        bm.table(id)                          its block ids, in position order (block i holds positions
                                              i·block_size .. (i+1)·block_size − 1)
        bm.num_free, bm.reserved_tokens, bm.used_tokens      over all live sequences, now

    Blocks are handed out lowest id first from a stack of free ones, so the same calls give the same tables.
    """

    def __init__(self, num_blocks: int, block_size: int, layout: str = "paged"):
        self.num_blocks = checks.integer("num_blocks", num_blocks, 1, MAX_BLOCKS)
        self.block_size = checks.integer("block_size", block_size)
        self.layout = checks.one_of("layout", layout, LAYOUTS)
        self._free = list(range(self.num_blocks - 1, -1, -1))      # pop() takes block 0 first
        self._tables: dict[int, list[int]] = {}
        self._used: dict[int, int] = {}
        self.used_tokens = 0                                        # Σ positions held, over live sequences

    # ---- sizes -----------------------------------------------------------------------------------------------
    def blocks_for(self, tokens: int) -> int:
        """ceil(tokens / block_size): the blocks that hold `tokens` positions."""
        return -(-tokens // self.block_size)

    @property
    def capacity_tokens(self) -> int:
        """Positions the whole pool holds: num_blocks · block_size."""
        return self.num_blocks * self.block_size

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def reserved_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def reserved_tokens(self) -> int:
        """Positions in blocks that live sequences hold, whether or not a token is in them yet."""
        return self.reserved_blocks * self.block_size

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._tables

    def __len__(self) -> int:
        """Live sequences."""
        return len(self._tables)

    def table(self, request_id: int) -> list[int]:
        """The sequence's block ids, in order (a copy)."""
        return list(self._tables[self._known(request_id)])

    def used(self, request_id: int) -> int:
        """Positions the sequence holds."""
        return self._used[self._known(request_id)]

    # ---- allocation ------------------------------------------------------------------------------------------
    def _reservation(self, tokens: int, cap_tokens: int) -> int:
        return self.blocks_for(cap_tokens if self.layout == "contiguous" else tokens)

    def can_allocate(self, tokens: int, cap_tokens: int) -> bool:
        """Whether a new sequence holding `tokens` positions (at most `cap_tokens`, ever) fits now."""
        return self._reservation(tokens, cap_tokens) <= len(self._free)

    def allocate(self, request_id: int, tokens: int, cap_tokens: int) -> None:
        """A new sequence that holds `tokens` positions now and may grow to `cap_tokens`: paged, the blocks for
        `tokens`; contiguous, the blocks for `cap_tokens`, all at once."""
        if request_id in self._tables:
            raise ValueError(f"request {request_id} already holds blocks")
        if not 0 <= tokens <= cap_tokens:
            raise ValueError(f"tokens={tokens} must lie in [0, cap_tokens={cap_tokens}]")
        need = self._reservation(tokens, cap_tokens)
        if need > len(self._free):
            raise ValueError(f"request {request_id} needs {need} blocks; {len(self._free)} are free")
        self._tables[request_id] = [self._free.pop() for _ in range(need)]
        self._used[request_id] = tokens
        self.used_tokens += tokens

    def can_grow(self, request_id: int, tokens: int) -> bool:
        """Whether the sequence can hold `tokens` positions (contiguous: within its reservation; paged: with
        the free blocks)."""
        have = len(self._tables[request_id])
        need = self.blocks_for(tokens)
        if self.layout == "contiguous":
            return need <= have
        return need - have <= len(self._free)

    def grow(self, request_id: int, tokens: int) -> None:
        """The sequence now holds `tokens` positions (never fewer than before)."""
        old = self._used[self._known(request_id)]
        if tokens < old:
            raise ValueError(f"request {request_id} holds {old} positions; it cannot shrink to {tokens}")
        if not self.try_grow(request_id, tokens):
            where = "its reservation" if self.layout == "contiguous" else f"the {len(self._free)} free blocks"
            raise ValueError(f"request {request_id} cannot grow to {tokens} positions: they do not fit {where}")

    def try_grow(self, request_id: int, tokens: int) -> bool:
        """grow() if it fits, and say whether it did: the scheduler's hot path (once per sequence per step), so
        it trusts its caller: a live sequence, not shrinking."""
        table = self._tables[request_id]
        need = -(-tokens // self.block_size) - len(table)
        if need > 0:
            if self.layout == "contiguous" or need > len(self._free):
                return False
            free = self._free
            for _ in range(need):
                table.append(free.pop())
        self.used_tokens += tokens - self._used[request_id]
        self._used[request_id] = tokens
        return True

    def free(self, request_id: int) -> None:
        """Give the sequence's blocks back. (Pushed in reverse, so a freed sequence's first block is the next
        one handed out: deterministic, and a pool that empties is handed out in the same order again.)"""
        table = self._tables.pop(self._known(request_id))
        self._free.extend(reversed(table))
        self.used_tokens -= self._used.pop(request_id)

    def _known(self, request_id: int) -> int:
        if request_id not in self._tables:
            raise ValueError(f"request {request_id!r} holds no blocks")
        return request_id

    def __repr__(self) -> str:
        return (f"BlockManager({self.layout}, {self.num_blocks} blocks of {self.block_size}, free={self.num_free}, "
                f"reserved_tokens={self.reserved_tokens}, used_tokens={self.used_tokens})")


# ==============================================================================================================
# The scheduler

class _Seq:
    """The scheduler's state of one request."""
    __slots__ = ("request", "id", "computed", "generated", "known", "cap_tokens", "preemptions", "added", "state")

    def __init__(self, request: Request, added: int):
        self.request = request
        self.id = request.id
        self.computed = 0            # tokens whose K/V are in the cache (the next chunk's start)
        self.generated = 0           # tokens sampled so far
        self.known = request.prompt_len                       # prompt + generated: the tokens it knows
        self.cap_tokens = request.prompt_len + request.max_new_tokens
        self.preemptions = 0
        self.added = added           # order of add(): breaks ties between equal arrivals
        self.state = "pending"       # -> "waiting" (arrived) -> "running" (admitted) -> "finished"


@dataclass(frozen=True)
class Progress:
    """Where one request stands: tokens in its KV cache, tokens generated, times preempted, and its state
    ("pending": not arrived yet, "waiting", "running", "finished")."""
    computed: int
    generated: int
    preemptions: int
    state: str


class Scheduler:
    """Forms each step's batch from the requests added (see the module docstring for the policies).

        sched.add(Request(...))              queue a request (refused with an error if it could never run)
        sched.next_step(now) -> Step | None  the next step at time `now`; None when nothing can run until an
                                             arrival (see next_arrival)
        sched.finish(step, done)             after running the step: `done` the ids that ended in it
        sched.running, .waiting, .finished   request ids (admission order; queue order; finishing order)
        sched.pending                        ids not yet arrived, by arrival
        sched.preemptions, sched.progress(id), sched.unfinished

    `max_context` (optional): the model's context; a request whose prompt and cap exceed it is refused.
    """

    def __init__(self, blocks: BlockManager, policy: str = "continuous", max_batch: int = 256,
                 chunked_prefill: int | None = None, max_context: int | None = None):
        self.blocks = checks.instance("blocks", blocks, BlockManager, "a minitx BlockManager")
        self.policy = checks.one_of("policy", policy, POLICIES)
        self.max_batch = checks.integer("max_batch", max_batch)
        self.chunked_prefill = None if chunked_prefill is None else checks.integer("chunked_prefill",
                                                                                   chunked_prefill)
        if self.chunked_prefill is not None and self.chunked_prefill < self.max_batch:
            raise ValueError(f"chunked_prefill={self.chunked_prefill} must be at least max_batch={self.max_batch}: "
                             "every running sequence's decode token must fit in a step's token budget (as vLLM "
                             "requires max_num_batched_tokens >= max_num_seqs)")
        self.max_context = None if max_context is None else checks.integer("max_context", max_context)
        if len(blocks):
            raise ValueError("blocks must be an empty BlockManager (it already holds sequences)")
        self._seqs: dict[int, _Seq] = {}
        self._pending: list[tuple[float, int, _Seq]] = []    # heap by (arrival, order added)
        self._waiting: deque[_Seq] = deque()                 # arrived, not running; preempted ones go first
        self._batch: deque[_Seq] = deque()                   # static: the batch's members not yet admitted
        self._running: list[_Seq] = []                       # admission order, oldest first (the newest is
                                                             # the last: the one preempted first)
        self._finished: list[int] = []
        self._open: Step | None = None                       # the step handed out and not yet finished
        self._now = -math.inf
        self.preemptions = 0

    # ---- requests in ------------------------------------------------------------------------------------------
    def add(self, request: Request) -> None:
        """Queue a request. Refused (ValueError) if its id is taken, or if it could never run: its prompt and
        cap need more blocks than the pool has, or more positions than the model's context."""
        checks.instance("request", request, Request, "a minitx.serving.scheduler.Request")
        rid = request.id
        if rid in self._seqs:
            raise ValueError(f"request id {rid} was already added")
        tokens = request.prompt_len + request.max_new_tokens
        if self.max_context is not None and tokens > self.max_context:
            raise ValueError(f"request {rid}: prompt_len {request.prompt_len} + max_new_tokens "
                             f"{request.max_new_tokens} = {tokens} exceeds the model's context "
                             f"{self.max_context}")
        need = self.blocks.blocks_for(tokens)
        if need > self.blocks.num_blocks:
            raise ValueError(f"request {rid}: prompt_len {request.prompt_len} + max_new_tokens "
                             f"{request.max_new_tokens} = {tokens} tokens need {need} blocks of "
                             f"{self.blocks.block_size}; the whole pool has {self.blocks.num_blocks}, so it could "
                             "never run")
        seq = _Seq(request, len(self._seqs))
        self._seqs[rid] = seq
        heapq.heappush(self._pending, (float(request.arrival), seq.added, seq))

    # ---- views ------------------------------------------------------------------------------------------------
    @property
    def running(self) -> tuple[int, ...]:
        return tuple(s.request.id for s in self._running)

    @property
    def waiting(self) -> tuple[int, ...]:
        """Arrived and not running: a static batch's members not yet admitted first, then the queue."""
        return tuple(s.request.id for s in self._batch) + tuple(s.request.id for s in self._waiting)

    @property
    def pending(self) -> tuple[int, ...]:
        """Not arrived yet (at the last step's `now`), by arrival."""
        return tuple(seq.request.id for _, _, seq in sorted(self._pending))

    @property
    def finished(self) -> tuple[int, ...]:
        return tuple(self._finished)

    @property
    def unfinished(self) -> int:
        """Requests added and not finished."""
        return len(self._seqs) - len(self._finished)

    def request(self, request_id: int) -> Request:
        return self._seq(request_id).request

    def progress(self, request_id: int) -> Progress:
        seq = self._seq(request_id)
        return Progress(seq.computed, seq.generated, seq.preemptions, seq.state)

    def next_arrival(self) -> float | None:
        """The earliest arrival among requests not yet admitted (waiting or pending), or None: where a clock
        may jump when next_step returns None."""
        times = [s.request.arrival for s in self._waiting] + [s.request.arrival for s in self._batch]
        if self._pending:
            times.append(self._pending[0][0])
        return min(times) if times else None

    # ---- one step ---------------------------------------------------------------------------------------------
    def next_step(self, now: float) -> Step | None:
        """The chunks to run at time `now` (non-decreasing from call to call), or None when nothing can run
        until a request arrives. Blocks for the step's new tokens are taken now; call finish() after running
        it, before asking for the next one."""
        if self._open is not None:
            raise ValueError("the previous step is not finished: call finish(step, done) first")
        now = checks.number("now", now)
        if now < self._now:
            raise ValueError(f"now={now} goes back in time (the last step was at {self._now})")
        self._now = now
        while self._pending and self._pending[0][0] <= now:
            seq = heapq.heappop(self._pending)[2]
            seq.state = "waiting"
            self._waiting.append(seq)

        budget = self.chunked_prefill if self.chunked_prefill is not None else math.inf
        chunks: dict[int, Chunk] = {}          # by request id, in scheduling order
        preempted: list[int] = []
        bm = self.blocks

        def preempt_newest() -> _Seq:
            nonlocal budget
            victim = self._running.pop()
            bm.free(victim.id)
            dropped = chunks.pop(victim.id, None)
            if dropped is not None:
                budget += dropped.n
            victim.computed = 0                # recompute: everything it knows is prefilled again
            victim.preemptions += 1
            victim.state = "waiting"
            self.preemptions += 1
            self._waiting.appendleft(victim)
            preempted.append(victim.id)
            return victim

        def schedule(seq: _Seq, n: int) -> bool:
            """Reserve memory for seq's next n tokens (preempting the newest running sequences as needed) and
            give it a chunk; False if seq itself had to be preempted."""
            nonlocal budget
            tokens = seq.computed + n
            while not try_grow(seq.id, tokens):
                if preempt_newest() is seq:
                    return False
            chunks[seq.id] = Chunk(seq.id, seq.computed, n, tokens == seq.known)
            budget -= n
            return True

        try_grow, running = bm.try_grow, self._running
        # 1. decode tokens of the running sequences, oldest first (a preempted one is always the newest, so the
        #    loop never revisits a position). The common case inline: no preemption, so no schedule() call.
        i = 0
        while i < len(running):
            seq = running[i]
            if seq.known - seq.computed == 1:
                if try_grow(seq.id, seq.known):
                    chunks[seq.id] = Chunk(seq.id, seq.computed, 1, True)
                    budget -= 1
                elif not schedule(seq, 1):
                    break
            i += 1
        # 2. prompts being prefilled in chunks, oldest first, in the budget left
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            todo = seq.known - seq.computed
            if todo > 1 and seq.id not in chunks and not schedule(seq, min(todo, budget)):
                break
            i += 1
        # 3. admissions: first come, first served, while there is a place, budget and memory
        if self.policy == "static":
            if not self._running and not self._batch:
                self._form_batch()
            source = self._batch
        else:
            source = self._waiting
        while source and len(self._running) < self.max_batch and budget > 0:
            seq = source[0]
            n = min(seq.known, budget)
            if not bm.can_allocate(n, seq.cap_tokens):
                break
            source.popleft()
            bm.allocate(seq.id, n, seq.cap_tokens)
            seq.state = "running"
            self._running.append(seq)
            chunks[seq.id] = Chunk(seq.id, 0, n, n == seq.known)
            budget -= n
        if not chunks:
            return None
        self._open = Step(list(chunks.values()), preempted)
        return self._open

    def _form_batch(self) -> None:
        """static: the next batch, from the front of the queue: up to max_batch requests whose first memory
        (paged: their prompts; contiguous: prompt + cap) fits the free blocks together."""
        free, bm = self.blocks.num_free, self.blocks
        while self._waiting and len(self._batch) < self.max_batch:
            seq = self._waiting[0]
            need = bm.blocks_for(seq.cap_tokens if bm.layout == "contiguous" else seq.known)
            if need > free:
                break
            free -= need
            self._batch.append(self._waiting.popleft())

    def finish(self, step: Step, done: Iterable[int] = ()) -> None:
        """The step has run: each chunk's tokens are in the cache, and each chunk that wanted logits produced one
        token. `done`: the requests that ended in this step (a stop token; the executor's own end). A request also
        ends when it reaches its max_new_tokens."""
        if step is not self._open:
            raise ValueError("finish() takes the step the last next_step() returned, once")
        try:
            done = set(done)
        except TypeError:
            raise TypeError(f"done must be an iterable of request ids, got {type(done).__name__}") from None
        if done:
            stray = done - {c.request_id for c in step.chunks if c.wants_logits}
            if stray:
                raise ValueError(f"done names requests {sorted(stray, key=repr)[:5]} that produced no token in "
                                 "this step (only a chunk that wants logits can end a request)")
        ended = []
        seqs = self._seqs
        for chunk in step.chunks:
            seq = seqs[chunk.request_id]
            seq.computed = chunk.start + chunk.n
            if chunk.wants_logits:
                seq.generated += 1
                seq.known += 1
                if seq.known == seq.cap_tokens or chunk.request_id in done:
                    ended.append(seq)
        if ended:
            for seq in ended:
                seq.state = "finished"
                self.blocks.free(seq.id)
                self._finished.append(seq.id)
            gone = {id(s) for s in ended}
            self._running = [s for s in self._running if id(s) not in gone]
        self._open = None

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _seq(self, request_id: int) -> _Seq:
        if request_id not in self._seqs:
            raise ValueError(f"no request with id {request_id!r}")
        return self._seqs[request_id]

    def __repr__(self) -> str:
        return (f"Scheduler({self.policy}, max_batch={self.max_batch}, chunked_prefill={self.chunked_prefill}, "
                f"running={len(self._running)}, waiting={len(self._waiting) + len(self._batch)}, "
                f"pending={len(self._pending)}, finished={len(self._finished)}, preemptions={self.preemptions})")


__all__ = ["BlockManager", "Chunk", "Progress", "Request", "Scheduler", "Step", "LAYOUTS", "MAX_BLOCKS",
           "POLICIES"]
