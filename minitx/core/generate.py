"""Generation: prefill the prompts, then decode one token at a time, sampling each from the logits.

    new = generate(model, prompts, 20)                 the new token ids of each prompt, in prompt order
    for seq, token in stream(model, prompts, 20): ...   the same, as each token is produced

With the cache (the default), the prompts run once through `model.prefill` and every new token through one
`model.decode` step (minitx.core.kv_cache says why that is cheaper). Without it (`use_cache=False`, the "before"
of lesson 04), every step runs the model over every sequence's whole text again and keeps each one's last
logits: step t costs a forward over t + 1 tokens, so n tokens cost O(n²) matmul work and O(n³) attention work.
Both are the one loop below; they give the same tokens.

Prompts of different lengths run packed, each at its own positions (minitx.core.batch), so a batch computes what
each sequence computes alone (up to float rounding in the batched matmuls). A sequence that emits a stop token
stops; the others go on, and the finished ones ride along in each step (their outputs dropped) so the batch keeps
its shape.

Non-goals: beam search, speculative decoding. References: picoGPT `generate` and llm.c `main` (the recompute
decoders); HF transformers `generate` (top-k then top-p filtering of the temperature-scaled logits, stop after the
end token, which is kept).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .. import checks
from ..accounting.counting import phase
from .batch import ragged

__all__ = ["generate", "stream", "generate_recompute"]


def generate(model, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, stop_tokens=None,
             on_token: Callable[[int, int], object] | None = None, use_cache: bool = True) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens; return the new ids of each, in prompt order.

    prompts          a list of 1-D int sequences (lengths may differ), or a (B, T) int array
    temperature      0: greedy (argmax). > 0: sample from softmax(logits / temperature)
    top_k, top_p     when sampling, keep only the k most likely tokens, then the smallest set whose probability
                     reaches p (nucleus), as HF transformers does; ignored when greedy
    seed             seeds np.random.default_rng: same seed, prompts and settings -> same output
    stop_tokens      an id or ids: a sequence stops right after emitting one, and that id is the last of its output
    on_token         called as on_token(seq_index, token) as each token is produced (streaming)
    use_cache        False: the recompute reference (the whole forward again for every token), same results
    """
    tokens = stream(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, stop_tokens, use_cache)
    out: list[list[int]] = [[] for _ in range(len(prompts))]
    for i, token in tokens:
        out[i].append(token)
        if on_token is not None:
            on_token(i, token)
    return out


def generate_recompute(model, prompts, max_new_tokens: int, **kw) -> list[list[int]]:
    """`generate(..., use_cache=False)`: the reference decoder that re-runs the whole sequence every step."""
    return generate(model, prompts, max_new_tokens, use_cache=False, **kw)


def stream(model, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
           top_p: float | None = None, seed: int | None = None, stop_tokens=None,
           use_cache: bool = True) -> Iterator[tuple[int, int]]:
    """Like `generate`, but yields (seq_index, token) as each token is produced. At each step the sequences
    still running yield in index order. Every argument is checked here, before the first token."""
    rows = _check_prompts(model, prompts)
    n_new = checks.integer("max_new_tokens", max_new_tokens, 0)
    longest = max(len(r) for r in rows)
    if n_new + longest > model.cfg.n_ctx:
        b = max(range(len(rows)), key=lambda i: len(rows[i]))
        raise ValueError(f"prompt {b} has {len(rows[b])} tokens; with max_new_tokens={n_new} that is "
                         f"{len(rows[b]) + n_new} > the model's context n_ctx={model.cfg.n_ctx}")
    sampler = Sampler(temperature, top_k, top_p, seed)
    stops = _check_stop_tokens(stop_tokens, model.cfg.vocab_size)
    return _loop(model, rows, n_new, sampler, stops, use_cache)


def _loop(model, rows: list[np.ndarray], n_new: int, sampler: "Sampler", stops: frozenset,
          use_cache: bool) -> Iterator[tuple[int, int]]:
    """logits -> next token -> feed it back, until every sequence has stopped or made n_new tokens."""
    if n_new == 0:
        return
    B = len(rows)
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    if use_cache:
        # The last new token is never fed back, so the cache needs prompt + n_new - 1 rows (≥ the prompt).
        cache = model.new_cache(B, max(int(lengths.max()) + n_new - 1, 1), chunk=int(lengths.max()))
        padded = np.zeros((B, int(lengths.max())), dtype=np.int64)          # pad id 0: never run
        for b, r in enumerate(rows):
            padded[b, :len(r)] = r
        logits = model.prefill(padded, cache, lengths)
    else:
        logits = _recompute(model, rows, "prefill")
    running = list(range(B))
    for step in range(n_new):
        next_ids = sampler(logits)                                           # (B,)
        for b in running:
            yield b, int(next_ids[b])
        if stops:
            running = [b for b in running if int(next_ids[b]) not in stops]
        if step == n_new - 1 or not running:
            return
        if use_cache:
            logits = model.decode(next_ids, cache)
        else:
            rows = [np.append(r, t) for r, t in zip(rows, next_ids)]
            logits = _recompute(model, rows, "decode")


def _recompute(model, rows: list[np.ndarray], name: str) -> np.ndarray:
    """The "before": a forward over every sequence's whole text, logits of every row, keep each one's last.
    Deliberately wasteful: it recomputes every earlier position (and its logits) to get one row."""
    batch = ragged(rows)
    with phase(name):
        logits, _ = model.run(batch)
    return logits[np.cumsum([len(r) for r in rows]) - 1]


# ---- choosing the next token ---------------------------------------------------------------------------------

class Sampler:
    """logits (B, V) -> ids (B,): argmax at temperature 0, else a draw after temperature, top-k and top-p."""

    def __init__(self, temperature, top_k, top_p, seed):
        self.temperature = checks.number("temperature", temperature, 0.0)
        self.top_k = None if top_k is None else checks.integer("top_k", top_k)
        self.top_p = None if top_p is None else checks.number("top_p", top_p, 0.0, 1.0, low_open=True)
        self.rng = np.random.default_rng(None if seed is None else checks.integer("seed", seed, 0))

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            z = logits.astype(np.float64) / self.temperature if self.temperature else None   # (B, V)
        if z is None or not np.isfinite(z).all():
            # greedy, or a temperature so small (subnormal) that logits / temperature overflows: the limit of
            # sampling as the temperature goes to 0 is the argmax, so that is what it gets
            return logits.argmax(axis=-1)
        order = np.argsort(-z, axis=-1, kind="stable")                # most likely first
        if self.top_k is not None:
            order = order[:, :self.top_k]
        z = np.take_along_axis(z, order, axis=-1)
        p = np.exp(z - z[:, :1])
        p /= p.sum(axis=-1, keepdims=True)
        if self.top_p is not None and self.top_p < 1:
            # the smallest prefix whose probability reaches top_p: keep a token if those before it fall short
            p *= (np.cumsum(p, axis=-1) - p) < self.top_p
        # inverse CDF: the first token whose cumulative probability exceeds a uniform draw
        cdf = np.cumsum(p, axis=-1)
        u = self.rng.random(len(p)) * cdf[:, -1]
        pick = np.minimum((cdf <= u[:, None]).sum(axis=-1), p.shape[1] - 1)
        return order[np.arange(len(p)), pick]


# ---- input checks --------------------------------------------------------------------------------------------

def _check_prompts(model, prompts) -> list[np.ndarray]:
    """A list of 1-D id sequences (or a (B, T) array) -> a list of checked 1-D int64 arrays."""
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        rows = list(prompts)
    elif isinstance(prompts, (list, tuple)):
        rows = [np.asarray(p) for p in prompts]
    else:
        raise TypeError(f"prompts must be a list of 1-D token sequences or a (B, T) array, "
                        f"got {type(prompts).__name__}")
    if not rows:
        raise ValueError("prompts is empty: give at least one prompt")
    for i, r in enumerate(rows):
        if r.ndim != 1:
            raise ValueError(f"prompt {i} must be a 1-D sequence of token ids, got shape {r.shape}")
        if r.size == 0:
            raise ValueError(f"prompt {i} is empty: generation needs at least one token to start from")
    return [model.check_tokens(r[None, :], f"prompt {i}")[0] for i, r in enumerate(rows)]


def _check_stop_tokens(stop_tokens, vocab_size: int) -> frozenset:
    if stop_tokens is None:
        return frozenset()
    ids = np.atleast_1d(np.asarray(stop_tokens))
    if ids.ndim != 1 or (ids.size and (ids.dtype == bool or ids.dtype.kind not in "iu")):
        raise TypeError(f"stop_tokens must be an id or a list of ids, got {stop_tokens!r}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"stop_tokens {ids.tolist()} must lie in [0, {vocab_size}) (vocab_size)")
    return frozenset(ids.tolist())
