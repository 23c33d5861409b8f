"""A serving engine that really runs a minitx model: many requests, batched step by step by the scheduler, their
keys and values in a real KV store, each step one call of the model over one packed batch.

    engine = minitx.Engine(model, policy="continuous", kv_layout="paged", block_size=16, max_batch=8)
    a = engine.submit([5, 3, 9], max_new_tokens=20)                       # greedy
    b = engine.submit(prompt_ids, 50, temperature=0.8, seed=1, stop=[0], arrival_step=4)
    result = engine.run()
    result.requests[a].tokens          the generated ids (the stop token included, as minitx.generate does)
    result.requests[a].ttft_steps      timeline: arrival, first token, finish (in steps; in modelled seconds
                                       with hardware="h100-sxm": each step's counted costs on its roofline)
    result.steps[i]                    per step: sequences, tokens, KV bytes reserved and used, seconds
    result.summary                     throughput, TTFT and TPOT p50/p99, kv_waste, preemptions, max_batch_seen

One step. The scheduler (minitx.serving.scheduler) says which sequences run and how many tokens each: a chunk of
a prompt, or the one token each decoding sequence sampled last step. The engine packs every chunk's tokens into
one TokenBatch (minitx.core.batch.pack: one row per token, each with its sequence's slot and its position) and
calls `model.run(batch, kv, logits_rows=...)` once: the linear layers see all the step's tokens as one matrix,
attention each sequence's own keys. Only the chunks that end at a sequence's last known token ask for logits,
and one token is sampled from each.

KV layouts. "contiguous": a KVCache with one row per slot, as long as the longest request (prompt + cap); the
scheduler's block manager reserves each request's prompt + cap when it is admitted, and that reservation is what
the engine reports as reserved. "paged": a PagedKVCache (minitx.core.paged_cache), a pool of num_blocks blocks;
after each step is formed, each running sequence's block table row is filled from the block manager, and the
model reads and writes through it.

Sampling. Each request has its own Sampler (minitx.core.generate), seeded from the request (its `seed`, or the
engine's seed and the request's id), drawing once per token it samples. So what a request generates depends on
its prompt, its settings and the model, never on who shares its batch or when it was preempted: with greedy
sampling in float64 it is exactly what `minitx.generate` gives for that prompt alone (the tests check it).

Time. Steps are counted from 0; a request's arrival_step is the first step it may join. A token sampled in step
s exists at the end of step s, time s + 1: a request admitted at its arrival and prefilled whole has a TTFT of
one step. When nothing can run, the clock jumps to the next arrival. With `hardware`, each step's counted costs
(a minitx.count() around the model call) are placed on the chip's roofline (minitx.serving.roofline.analyze)
in the model's precision; a step takes that long, an idle stretch no time at all (arrivals are in steps), and
the timeline is also given in modelled seconds.

kv_waste: per step, the reserved KV bytes that hold no token over the reserved KV bytes, averaged over the steps.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from .. import checks
from ..accounting.counting import count, phase
from ..core.batch import pack
from ..core.generate import Sampler, _check_stop_tokens
from ..core.kv_cache import KVCache
from ..core.model import Transformer
from ..core.paged_cache import PagedKVCache
from ..dtypes import numpy_dtype
from ..measure.machine import require_memory
from .hardware import Hardware, get as get_hardware
from .roofline import analyze
from .scheduler import LAYOUTS, MAX_BLOCKS, POLICIES, BlockManager, Request, Scheduler, Step

DEFAULT_MAX_BATCH = 16
LIST_ENTRY_BYTES = 40      # a Python list's slot (8 bytes) and the int object it points at (28 to 32 bytes)


# ==============================================================================================================
# What a run returns

@dataclass
class RequestResult:
    """One request: its generated tokens and its timeline. Times in steps (a token sampled in step s exists at
    s + 1); the *_s fields in modelled seconds when the engine has hardware, else None."""
    id: int
    prompt_len: int
    tokens: list[int]
    stop_reason: str                 # "stop" (a stop token) or "length" (max_new_tokens)
    arrival_step: int
    first_token_step: int
    finish_step: int
    preemptions: int
    arrival_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    logits: np.ndarray | None = field(default=None, repr=False)   # (len(tokens), V): with keep_logits=True

    @property
    def ttft_steps(self) -> int:
        return self.first_token_step - self.arrival_step

    @property
    def tpot_steps(self) -> float | None:
        """Steps per output token after the first; None for a single token."""
        n = len(self.tokens)
        return (self.finish_step - self.first_token_step) / (n - 1) if n > 1 else None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        n = len(self.tokens)
        return None if self.finish_s is None or n < 2 else (self.finish_s - self.first_token_s) / (n - 1)

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt_len": self.prompt_len, "tokens": list(self.tokens),
                "stop_reason": self.stop_reason, "preemptions": self.preemptions,
                "timeline": {"arrival_step": self.arrival_step, "first_token_step": self.first_token_step,
                             "finish_step": self.finish_step, "ttft_steps": self.ttft_steps,
                             "tpot_steps": self.tpot_steps, "arrival_s": self.arrival_s,
                             "first_token_s": self.first_token_s, "finish_s": self.finish_s,
                             "ttft_s": self.ttft_s, "tpot_s": self.tpot_s}}


@dataclass
class StepRecord:
    """One step (one model call): its sequences and tokens, the KV memory once it has run, its modelled time."""
    index: int                       # the step's time, in steps
    sequences: int
    tokens: int                      # new tokens run: prefill + decode
    prefill_tokens: int
    decode_tokens: int
    preempted: list[int]
    reserved_bytes: int              # KV bytes the running sequences' blocks (or reservations) hold
    used_bytes: int                  # KV bytes holding a token
    seconds: float | None = None     # modelled, with hardware
    costs: object = field(default=None, repr=False)   # the step's Ledger (a Counter), with hardware or keep_costs

    @property
    def waste(self) -> float:
        """Reserved KV bytes holding no token, over reserved KV bytes."""
        return (self.reserved_bytes - self.used_bytes) / self.reserved_bytes if self.reserved_bytes else 0.0

    def to_dict(self) -> dict:
        return {"index": self.index, "sequences": self.sequences, "tokens": self.tokens,
                "prefill_tokens": self.prefill_tokens, "decode_tokens": self.decode_tokens,
                "preempted": list(self.preempted), "kv_reserved_bytes": self.reserved_bytes,
                "kv_used_bytes": self.used_bytes, "seconds": self.seconds}


@dataclass
class EngineResult:
    requests: list[RequestResult]    # in id order
    steps: list[StepRecord]
    summary: dict

    def to_dict(self, steps: bool = True) -> dict:
        out = {"summary": self.summary, "requests": [r.to_dict() for r in self.requests]}
        if steps:
            out["steps"] = [s.to_dict() for s in self.steps]
        return out


# ==============================================================================================================
# The engine

@dataclass
class _Submitted:
    prompt: np.ndarray               # (P,) int64, checked
    max_new_tokens: int
    sampler_args: tuple              # (temperature, top_k, top_p, seed)
    stops: frozenset
    arrival_step: int


class Engine:
    """Serve many requests with one minitx model (see the module docstring).

    model            a minitx.Transformer that runs (not shape-only)
    policy           "continuous" (Orca's iteration-level scheduling) or "static" (batch by batch)
    kv_layout        "paged" (a block pool: minitx.core.paged_cache) or "contiguous" (one row per slot)
    block_size       positions per KV block
    num_blocks       blocks in the pool (default: room for max_batch of the longest request submitted)
    max_batch        sequences per step at most
    chunked_prefill  None, or a per-step token budget shared by prefill chunks and decode tokens (≥ max_batch)
    hardware         None, or a preset name / minitx.hardware.Hardware: modelled seconds per step
    seed             seeds the sampling of requests submitted without a seed of their own
    keep_logits      keep, per request, the logits each token was sampled from (RequestResult.logits)
    keep_costs       keep each step's counted Ledger (StepRecord.costs); always kept with hardware
    """

    def __init__(self, model: Transformer, policy: str = "continuous", kv_layout: str = "paged",
                 block_size: int = 16, num_blocks: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 chunked_prefill: int | None = None, hardware: "str | Hardware | None" = None, seed: int = 0,
                 keep_logits: bool = False, keep_costs: bool = False):
        checks.instance("model", model, Transformer, "a minitx.Transformer")
        if model.shape_only:
            raise ValueError("the engine runs real models; a shape-only model is counted, not run (the serving "
                             "simulator prices steps of any model from their counts)")
        self.model, self.cfg = model, model.cfg
        self.policy = checks.one_of("policy", policy, POLICIES)
        self.kv_layout = checks.one_of("kv_layout", kv_layout, LAYOUTS)
        self.block_size = checks.integer("block_size", block_size)
        self.max_batch = checks.integer("max_batch", max_batch)
        self.num_blocks = None if num_blocks is None else checks.integer("num_blocks", num_blocks)
        self.chunked_prefill = chunked_prefill
        # the scheduler's own checks (chunked_prefill against max_batch), now rather than at run()
        Scheduler(BlockManager(1, self.block_size, self.kv_layout), self.policy, self.max_batch, chunked_prefill,
                  self.cfg.n_ctx)
        self.hardware = None if hardware is None else get_hardware(hardware)
        if self.hardware is not None:
            self.hardware.peak(model.precision.activations)       # refuses a chip without this dtype's peak
        self.seed = checks.integer("seed", seed, 0)
        self.keep_logits = bool(checks.instance("keep_logits", keep_logits, bool))
        self.keep_costs = bool(checks.instance("keep_costs", keep_costs, bool))
        self._submitted: list[_Submitted] = []

    # ---- requests ------------------------------------------------------------------------------------------
    def submit(self, prompt_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop=None, arrival_step: int = 0) -> int:
        """Queue a request; returns its id (0, 1, 2, ... in submission order). Every argument is checked now:
        prompt_ids a 1-D sequence of ids in [0, V); 1 ≤ max_new_tokens with prompt + max_new_tokens within the
        model's context and the KV pool; sampling as minitx.generate; stop an id or ids; arrival_step ≥ 0."""
        rid = len(self._submitted)
        arr = np.asarray(prompt_ids) if not isinstance(prompt_ids, np.ndarray) else prompt_ids
        if arr.ndim != 1:
            raise ValueError(f"prompt_ids must be a 1-D sequence of token ids, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError("prompt_ids is empty: a request needs at least one prompt token")
        prompt = self.model.check_tokens(arr[None, :], "prompt_ids")[0]
        n_new = checks.integer("max_new_tokens", max_new_tokens)
        tokens = len(prompt) + n_new
        if tokens > self.cfg.n_ctx:
            raise ValueError(f"the prompt has {len(prompt)} tokens; with max_new_tokens={n_new} that is {tokens} > "
                             f"the model's context n_ctx={self.cfg.n_ctx}")
        need = -(-tokens // self.block_size)
        if self.num_blocks is not None and need > self.num_blocks:
            raise ValueError(f"prompt + max_new_tokens = {tokens} tokens need {need} KV blocks of {self.block_size}; "
                             f"the pool has num_blocks={self.num_blocks}, so this request could never run")
        Sampler(temperature, top_k, top_p, seed)                  # checks the sampling arguments
        stops = _check_stop_tokens(stop, self.cfg.vocab_size)
        arrival = checks.integer("arrival_step", arrival_step, 0)
        self._submitted.append(_Submitted(prompt, n_new, (temperature, top_k, top_p, seed), stops, arrival))
        return rid

    # ---- the run -------------------------------------------------------------------------------------------
    def run(self) -> EngineResult:
        """Serve every request submitted so far, from step 0, to the end; deterministic."""
        if not self._submitted:
            raise ValueError("no requests: submit() some first")
        longest = max(len(s.prompt) + s.max_new_tokens for s in self._submitted)
        num_blocks = self.pool_blocks(longest)
        self._refuse_oversized(longest, num_blocks)
        blocks = BlockManager(num_blocks, self.block_size, self.kv_layout)
        sched = Scheduler(blocks, self.policy, self.max_batch, self.chunked_prefill, self.cfg.n_ctx)
        state = _RunState(self, blocks, self._store(longest, num_blocks))
        for rid, s in enumerate(self._submitted):
            sched.add(Request(rid, len(s.prompt), s.max_new_tokens, s.arrival_step))
        steps: list[StepRecord] = []
        now = 0
        while sched.unfinished:
            step = sched.next_step(now)
            if step is None:                                    # idle: jump to the next arrival
                now = max(now + 1, math.ceil(sched.next_arrival()))
                continue
            state.place(step)
            logits, costs = self._run_step(step, state)
            done = state.sample(step, logits, now)
            steps.append(self._record(now, step, blocks, state.per_token, costs))
            sched.finish(step, done)
            state.leave(done)
            now += 1
        results = [RequestResult(rid, len(s.prompt), state.generated[rid], state.reason[rid], s.arrival_step,
                                 state.first[rid], state.finish[rid], sched.progress(rid).preemptions,
                                 logits=np.array(state.logits[rid]) if self.keep_logits else None)
                   for rid, s in enumerate(self._submitted)]
        if self.hardware is not None:
            _place_in_seconds(results, steps)
        summary = summarize(results, steps, self.hardware is not None)
        summary.update(kv_blocks=num_blocks, kv_block_size=self.block_size, kv_pool_bytes=state.store.nbytes)
        return EngineResult(results, steps, summary)

    def pool_blocks(self, longest: int) -> int:
        """Blocks in the pool: num_blocks, or by default room for max_batch of the longest request submitted."""
        return self.num_blocks or self.max_batch * -(-longest // self.block_size)

    def _refuse_oversized(self, longest: int, num_blocks: int) -> None:
        """Refuse, before anything is allocated, a run whose KV store and bookkeeping would pass this machine's
        memory: a ValueError naming the settings, not a process the system kills. The store is a pool of
        num_blocks blocks and a block table of max_batch rows (paged), or max_batch rows of the longest request
        (contiguous); the block manager and the slots are Python lists, an entry per block and per slot."""
        if num_blocks > MAX_BLOCKS:
            raise ValueError(f"a KV pool of {num_blocks:,} blocks (num_blocks, or by default max_batch="
                             f"{self.max_batch:,} × the blocks of the longest request) is more than the engine keeps "
                             f"track of ({MAX_BLOCKS:,}): give a smaller num_blocks or max_batch, or larger blocks")
        c = self.cfg
        per_position = 2 * c.n_layers * c.n_kv_heads * c.head_dim * numpy_dtype(self.model.precision.kv).itemsize
        if self.kv_layout == "paged":
            store = num_blocks * self.block_size * per_position + self.max_batch * -(-longest // self.block_size) * 8
        else:
            store = self.max_batch * longest * per_position
        require_memory(store + LIST_ENTRY_BYTES * (num_blocks + self.max_batch),
                       f"the engine's KV store (max_batch={self.max_batch:,}, {num_blocks:,} blocks of "
                       f"{self.block_size:,})")

    def _store(self, longest: int, num_blocks: int):
        """The KV store: a block pool (paged), or one row per slot as long as the longest request."""
        model = self.model
        if self.kv_layout == "paged":
            store = PagedKVCache(self.cfg, num_blocks, self.block_size, self.max_batch, longest, model.precision.kv)
        else:
            store = KVCache(self.cfg, self.max_batch, longest, model.precision.kv)
        store.reset()
        return store

    def _run_step(self, step: Step, state: "_RunState"):
        """Pack the step's chunks (by slot, so equal chunks in neighbouring slots share an attention block) and
        run the model once: (logits of the chunks that want them, in step order; the step's counted costs)."""
        slot_of, known = state.slot_of, state.known
        order = sorted(step.chunks, key=lambda c: slot_of[c.request_id])
        ids, seq, pos, last_row = [], [], [], {}
        for c in order:                        # Python lists, one array each at the end: most chunks are 1 token
            ids += known[c.request_id][c.start:c.end]
            seq += [slot_of[c.request_id]] * c.n
            pos += range(c.start, c.end)
            last_row[c.request_id] = len(ids) - 1
        batch = pack(np.array(ids, dtype=np.int64), np.array(seq, dtype=np.int64), np.array(pos, dtype=np.int64))
        logits_rows = np.array([last_row[c.request_id] for c in step.chunks if c.wants_logits], dtype=np.int64)
        costs = None
        with phase("decode" if all(self._is_decode(c) for c in step.chunks) else "prefill"):
            if self.hardware is not None or self.keep_costs:
                with count() as costs:
                    logits, _ = self.model.run(batch, state.store, logits_rows=logits_rows)
            else:
                logits, _ = self.model.run(batch, state.store, logits_rows=logits_rows)
        return logits, costs

    def _is_decode(self, c) -> bool:
        """A decode token: one token past the prompt (a recomputation after preemption is a prefill)."""
        return c.n == 1 and c.start >= self._submitted[c.request_id].prompt.shape[0]

    def _record(self, now: int, step: Step, blocks: BlockManager, per_token: int, costs) -> StepRecord:
        prefill = sum(c.n for c in step.chunks if not self._is_decode(c))
        n = step.n_tokens
        seconds = None
        if self.hardware is not None:
            seconds = analyze(costs, self.hardware, self.model.precision).time
        return StepRecord(now, len(step.chunks), n, prefill, n - prefill, list(step.preempted),
                          blocks.reserved_tokens * per_token, blocks.used_tokens * per_token, seconds,
                          costs if (self.keep_costs or self.hardware is not None) else None)

    def __repr__(self) -> str:
        return (f"Engine({self.cfg.name!r}, policy={self.policy}, kv_layout={self.kv_layout}, block_size="
                f"{self.block_size}, num_blocks={self.num_blocks}, max_batch={self.max_batch}, chunked_prefill="
                f"{self.chunked_prefill}, requests={len(self._submitted)})")


class _RunState:
    """One run's bookkeeping beside the scheduler: each request's known tokens and sampler, which KV slot each
    running sequence has, what each request generated and when."""

    def __init__(self, engine: Engine, blocks: BlockManager, store):
        self.engine, self.blocks, self.store = engine, blocks, store
        self.paged = isinstance(store, PagedKVCache)
        positions = store.num_blocks * store.block_size if self.paged else store.batch * store.capacity
        self.per_token = store.nbytes // positions        # KV bytes of one position, all layers, K and V
        subs = engine._submitted
        self.known = [s.prompt.tolist() for s in subs]    # prompt + generated ids, per request
        self.samplers = []
        for rid, s in enumerate(subs):
            temperature, top_k, top_p, seed = s.sampler_args
            sampler = Sampler(temperature, top_k, top_p, seed)
            if seed is None:            # a stream of its own, from the engine's seed and the request's id
                sampler.rng = np.random.default_rng([engine.seed, rid])
            self.samplers.append(sampler)
        self.greedy = [s.sampler_args[0] == 0 for s in subs]
        self.generated: list[list[int]] = [[] for _ in subs]
        self.logits: list[list[np.ndarray]] = [[] for _ in subs]
        self.first, self.finish, self.reason = {}, {}, {}
        self.slot_of: dict[int, int] = {}
        self.blocks_in_table: dict[int, int] = {}        # paged: entries of the slot's table row filled so far
        self.free_slots = list(range(engine.max_batch - 1, -1, -1))   # pop() hands out slot 0 first

    def place(self, step: Step) -> None:
        """Slots for the step's sequences (a preempted one gives its slot back) and, paged, their block tables."""
        for rid in step.preempted:
            self._free(rid)
        self.free_slots.sort(reverse=True)
        for c in step.chunks:
            rid = c.request_id
            if rid not in self.slot_of:
                self.slot_of[rid] = self.free_slots.pop()
                self.blocks_in_table[rid] = -1
            if self.paged and self.blocks_in_table[rid] != len(self.blocks.table(rid)):
                table = self.blocks.table(rid)           # it grew (or is new): the row again, checked
                self.store.assign(self.slot_of[rid], table)
                self.blocks_in_table[rid] = len(table)

    def sample(self, step: Step, logits: np.ndarray, now: int) -> set[int]:
        """One token for each chunk that wanted logits (logits row i for the i-th of them); the requests that
        ended: a stop token, or their max_new_tokens. Greedy requests take one argmax over their rows together
        (what each one's Sampler does at temperature 0); the others draw from their own streams."""
        wanted = [c.request_id for c in step.chunks if c.wants_logits]
        argmax = logits.argmax(axis=-1)
        subs, done = self.engine._submitted, set()
        for row, rid in enumerate(wanted):
            token = int(argmax[row]) if self.greedy[rid] else int(self.samplers[rid](logits[row:row + 1])[0])
            if self.engine.keep_logits:
                self.logits[rid].append(np.array(logits[row], dtype=np.float64))
            self.generated[rid].append(token)
            self.known[rid].append(token)
            self.first.setdefault(rid, now + 1)
            stopped = token in subs[rid].stops
            if stopped or len(self.generated[rid]) == subs[rid].max_new_tokens:
                done.add(rid)
                self.finish[rid], self.reason[rid] = now + 1, "stop" if stopped else "length"
        return done

    def leave(self, done: set[int]) -> None:
        for rid in sorted(done):
            self._free(rid)

    def _free(self, rid: int) -> None:
        slot = self.slot_of.pop(rid)
        del self.blocks_in_table[rid]
        self.free_slots.append(slot)
        if self.paged:
            self.store.release(slot)


# ==============================================================================================================
# Seconds and the summary

def _place_in_seconds(results: list[RequestResult], steps: list[StepRecord]) -> None:
    """Step times to modelled seconds: a step starts when the one before it ended; idle stretches take none.
    Time t (in steps) is, in seconds, the sum of the steps run before t."""
    index = [s.index for s in steps]
    elapsed = np.concatenate([[0.0], np.cumsum([s.seconds for s in steps])])

    def at(t: int) -> float:
        return float(elapsed[bisect.bisect_left(index, t)])
    for r in results:
        r.arrival_s, r.first_token_s, r.finish_s = at(r.arrival_step), at(r.first_token_step), at(r.finish_step)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(results: list[RequestResult], steps: list[StepRecord], seconds: bool) -> dict:
    """Throughput, TTFT and TPOT (p50, p99; in steps, and in modelled seconds when there is hardware), KV waste
    averaged over steps, preemptions, the largest batch seen."""
    tokens = sum(len(r.tokens) for r in results)
    end = max(r.finish_step for r in results)
    ttft = [r.ttft_steps for r in results]
    tpot = [r.tpot_steps for r in results if r.tpot_steps is not None]
    out = {"requests": len(results), "output_tokens": tokens, "steps": len(steps), "duration_steps": end,
           "throughput_tok_step": tokens / end,
           "ttft_p50_steps": _percentile(ttft, 50), "ttft_p99_steps": _percentile(ttft, 99),
           "tpot_p50_steps": _percentile(tpot, 50), "tpot_p99_steps": _percentile(tpot, 99)}
    duration = sum(s.seconds for s in steps) if seconds else None
    ttft_s = [r.ttft_s for r in results] if seconds else []
    tpot_s = [r.tpot_s for r in results if r.tpot_s is not None] if seconds else []
    out.update({"duration_s": duration, "throughput_tok_s": tokens / duration if duration else None,
                "ttft_p50_s": _percentile(ttft_s, 50), "ttft_p99_s": _percentile(ttft_s, 99),
                "tpot_p50_s": _percentile(tpot_s, 50), "tpot_p99_s": _percentile(tpot_s, 99)})
    out.update({"kv_waste": float(np.mean([s.waste for s in steps])),
                "kv_reserved_bytes_mean": float(np.mean([s.reserved_bytes for s in steps])),
                "kv_used_bytes_mean": float(np.mean([s.used_bytes for s in steps])),
                "kv_reserved_bytes_max": max(s.reserved_bytes for s in steps),
                "preemptions": sum(len(s.preempted) for s in steps),
                "max_batch_seen": max(s.sequences for s in steps)})
    return out


__all__ = ["Engine", "EngineResult", "RequestResult", "StepRecord", "summarize"]
