"""Inference: a KV cache, the two phases that fill it (prefill, decode), and `generate` on top.

    cache = KVCache(cfg, batch=B, max_len=S)        K and V of every layer: 2 · (B, KV, S, HS) per layer
    logits = model.prefill(tokens, cache, lengths)  (B, T) right-padded prompts -> (B, V), the next-token logits
    logits = model.decode(next_ids, cache)          (B,) one new token per sequence -> (B, V)
    new = generate(model, prompts, 20)              list of the new token ids of each prompt

Why a cache. Attention is the only op that looks at other positions, and it only needs their keys and values.
Without a cache, every new token re-runs the whole model over the whole sequence (the `use_cache=False` path
below, the "before" of the lesson): step t costs a forward over t + 1 tokens, so n tokens cost O(n²) matmul work
and O(n³) attention work. With the cache, step t runs the model over one token and reads t + 1 cached rows per
layer: O(1) matmul work per token (the weights, once per step whatever B is) plus O(t) attention.

Ragged batches. Prompts of different lengths are right-padded to one (B, T) array. Each sequence keeps its own
length in `cache.lengths`; its new token goes to row lengths[b] and gets position lengths[b] (learned or RoPE), and
the causal softmax lets it see keys 0..lengths[b] only. The rows that padding wrote past a sequence's length are
never seen (masked with weight exactly 0), and the next decode step overwrites them. So a padded batch computes
what each sequence computes alone (up to float rounding in the batched matmuls).

Non-goals: sliding windows, paged or shared-prefix caches, beam search, speculative decoding.
References: picoGPT `generate` and llm.c `main` (the recompute decoders); HF transformers `generate`
(top-k then top-p filtering of the temperature-scaled logits, stop after the end token, which is kept).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .config import Config
from .counting import phase
from .model import resolve_dtype

__all__ = ["KVCache", "prefill", "decode", "generate", "stream", "generate_recompute"]

# ---- the cache -----------------------------------------------------------------------------------------------

class KVCache:
    """Keys and values of every layer for `batch` sequences of up to `max_len` tokens (≤ cfg.n_ctx).

    cache.k[l], cache.v[l]  (B, KV, S, HS) zeros at first: views into one buffer of exactly `nbytes` bytes
    cache.lengths           (B,) int64, each sequence's current length (tokens whose K/V are in the cache)
    """

    def __init__(self, cfg: Config, batch: int, max_len: int, dtype="float32"):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a minitx.Config, got {type(cfg).__name__}")
        for arg, value in (("batch", batch), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"KVCache {arg}={value!r} must be a positive integer")
        if max_len > cfg.n_ctx:
            raise ValueError(f"KVCache max_len={max_len} exceeds the model's context n_ctx={cfg.n_ctx}")
        self.cfg = cfg
        self.dtype = resolve_dtype(dtype, "KVCache dtype")
        L, KV, HS = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
        # One buffer, (K or V, layer, B, KV, S, HS): nbytes is exactly 2·L·B·KV·S·HS·itemsize, nothing hidden.
        self.buffer = np.zeros((2, L, int(batch), KV, int(max_len), HS), dtype=self.dtype)
        self.k = [self.buffer[0, l] for l in range(L)]
        self.v = [self.buffer[1, l] for l in range(L)]
        self.lengths = np.zeros(int(batch), dtype=np.int64)

    @property
    def batch(self) -> int:
        return self.buffer.shape[2]

    @property
    def max_len(self) -> int:
        return self.buffer.shape[4]

    @property
    def nbytes(self) -> int:
        """2 (K and V) · L · KV · HS · S · B · itemsize."""
        return int(self.buffer.nbytes)

    def reset(self) -> None:
        """Forget every sequence: lengths back to 0, and K/V back to zeros. Rows past a sequence's length do pass
        through the attention matmuls (they read a rectangle), with weight exactly 0; zeros keep a NaN left by an
        earlier run from turning 0·NaN into NaN."""
        self.buffer[...] = 0.0
        self.lengths[:] = 0

    def __repr__(self) -> str:
        c = self.cfg
        return (f"KVCache(L={c.n_layers}, B={self.batch}, KV={c.n_kv_heads}, S={self.max_len}, HS={c.head_dim}, "
                f"dtype={self.dtype.name}, nbytes={self.nbytes:,}, lengths={self.lengths.tolist()})")


def _check_cache(model, cache, batch: int) -> None:
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a minitx.KVCache, got {type(cache).__name__}")
    c, m = cache.cfg, model.cfg
    if (c.n_layers, c.n_kv_heads, c.head_dim) != (m.n_layers, m.n_kv_heads, m.head_dim):
        raise ValueError(f"cache was built for L={c.n_layers}, KV={c.n_kv_heads}, HS={c.head_dim}; the model has "
                         f"L={m.n_layers}, KV={m.n_kv_heads}, HS={m.head_dim}")
    if cache.dtype != model.dtype:
        raise TypeError(f"cache dtype {cache.dtype.name} does not match the model's dtype {model.dtype.name}")
    if cache.batch != batch:
        raise ValueError(f"tokens hold {batch} sequences but the cache was built for batch={cache.batch}")
    if cache.max_len > m.n_ctx:
        # positions index the model's position / RoPE tables, which have n_ctx rows: never go past them
        raise ValueError(f"cache max_len={cache.max_len} exceeds the model's context n_ctx={m.n_ctx}")
    lengths = cache.lengths
    if (not isinstance(lengths, np.ndarray) or lengths.dtype != np.int64 or lengths.shape != (cache.batch,)
            or lengths.min() < 0 or lengths.max() > cache.max_len):
        raise ValueError(f"cache.lengths must be int64 of shape ({cache.batch},) within [0, {cache.max_len}], "
                         f"got {lengths!r}")


# ---- the two phases ------------------------------------------------------------------------------------------

def prefill(model, tokens, cache: KVCache, lengths=None) -> np.ndarray:
    """Run the prompts through the model, filling an empty cache; return each prompt's next-token logits.

    tokens (B, T) right-padded prompts (pad with any valid id); lengths (B,) in [1, T], default all T.
    Returns logits (B, V) at row lengths[b] - 1 of each sequence, and sets cache.lengths = lengths.
    The cache must be empty (all lengths 0; see KVCache.reset): prefill does not append to a cache.
    """
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a minitx.KVCache, got {type(cache).__name__}")
    tokens = model.check_tokens(tokens, "tokens")
    B, T = tokens.shape
    _check_cache(model, cache, B)
    if T > cache.max_len:
        raise ValueError(f"tokens has T={T} positions; the cache holds max_len={cache.max_len}")
    if cache.lengths.any():
        raise ValueError("prefill needs an empty cache (cache.lengths all 0); call cache.reset() first")
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    else:
        arr = np.asarray(lengths)
        if arr.dtype == bool or arr.dtype.kind not in "iu":
            raise TypeError(f"lengths must hold integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), one per sequence, got {arr.shape}")
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got {arr.tolist()}")
        lengths = arr.astype(np.int64)
    return _prefill(model, tokens, cache, lengths)


def _prefill(model, tokens: np.ndarray, cache: KVCache, lengths: np.ndarray) -> np.ndarray:
    B, T = tokens.shape
    pos = np.ascontiguousarray(np.broadcast_to(np.arange(T, dtype=np.int64), (B, T)))
    with phase("prefill"):
        logits, _ = model._forward(tokens, pos, keep=False, kv=cache, last=lengths - 1)
    cache.lengths[:] = lengths
    return logits


def decode(model, tokens, cache: KVCache) -> np.ndarray:
    """One new token per sequence, (B,) or (B, 1), at position cache.lengths[b]; returns logits (B, V) and
    advances every length by one. Refuses to write past the cache's max_len, which is at most the model's n_ctx.

    Each layer first writes the new K/V row, then attention reads the cache's rows 0..max(lengths), the new row
    included: at length t (all sequences equal) a step reads 2·L·KV·HS·(t + 1)·B·itemsize bytes of cache. In a
    ragged batch every sequence reads up to the longest one's row (masked beyond its own)."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a minitx.KVCache, got {type(cache).__name__}")
    arr = np.asarray(tokens)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != 1:
        raise ValueError(f"tokens must have shape (B,) or (B, 1): one new token per sequence, got {np.shape(tokens)}")
    arr = model.check_tokens(arr, "tokens")
    _check_cache(model, cache, arr.shape[0])
    full = int(cache.lengths.max())
    if full >= cache.max_len:
        b = int(cache.lengths.argmax())
        raise ValueError(f"cache is full: sequence {b} already holds max_len={cache.max_len} tokens "
                         f"(the model's context is n_ctx={model.cfg.n_ctx})")
    return _decode(model, arr, cache)


def _decode(model, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
    """The unchecked step that generate's loop calls: tokens (B, 1) int64, room in the cache for each."""
    pos = cache.lengths[:, None].copy()                    # (B, 1): each sequence's own next position
    with phase("decode"):
        logits, _ = model._forward(tokens, pos, keep=False, kv=cache)
    cache.lengths += 1
    return logits.reshape(tokens.shape[0], -1)


# ---- generation ----------------------------------------------------------------------------------------------

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
    batch, tokens = _start(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, stop_tokens, use_cache)
    out: list[list[int]] = [[] for _ in range(batch)]
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
    still running yield in index order. Arguments are checked here, before the first token."""
    return _start(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, stop_tokens, use_cache)[1]


def _start(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, stop_tokens, use_cache):
    """Check every argument, then return (B, the token generator)."""
    padded, lengths = _pack_prompts(model, prompts)
    n_new = _check_int("max_new_tokens", max_new_tokens, 0)
    if n_new + int(lengths.max()) > model.cfg.n_ctx:
        b = int(lengths.argmax())
        raise ValueError(f"prompt {b} has {lengths[b]} tokens; with max_new_tokens={n_new} that is "
                         f"{lengths[b] + n_new} > the model's context n_ctx={model.cfg.n_ctx}")
    sampler = _Sampler(temperature, top_k, top_p, seed)
    stops = _check_stop_tokens(stop_tokens, model.cfg.vocab_size)
    steps = _CachedSteps if use_cache else _RecomputeSteps
    return len(lengths), _run(steps(model, padded, lengths, n_new), sampler, stops, n_new)


def _run(steps, sampler: "_Sampler", stops: frozenset, n_new: int) -> Iterator[tuple[int, int]]:
    """The loop both decoders share: logits -> next token -> feed it back, until done."""
    if n_new == 0:
        return
    running = list(range(steps.batch))
    logits = steps.first()
    for step in range(n_new):
        next_ids = sampler(logits).tolist()                 # (B,) ints
        for b in running:
            yield b, next_ids[b]
        if stops:
            running = [b for b in running if next_ids[b] not in stops]
        if step == n_new - 1 or not running:
            return
        # Finished sequences keep running with their last token (their outputs are ignored): the batch stays
        # rectangular, and the cache was sized for every sequence going the full distance.
        logits = steps.next(np.array(next_ids, dtype=np.int64))


class _CachedSteps:
    """Prefill once, then one cached decode step per token."""

    def __init__(self, model, padded: np.ndarray, lengths: np.ndarray, n_new: int):
        B, T = padded.shape
        self.model, self.padded, self.lengths, self.batch = model, padded, lengths, B
        # The last new token is never fed back, so the cache needs T + n_new - 1 rows (≥ T for the prompt).
        self.cache = KVCache(model.cfg, B, max(T, int(lengths.max()) + n_new - 1), model.dtype)

    def first(self) -> np.ndarray:
        return _prefill(self.model, self.padded, self.cache, self.lengths)

    def next(self, ids: np.ndarray) -> np.ndarray:
        return _decode(self.model, ids[:, None], self.cache)


class _RecomputeSteps:
    """The "before": no cache. Every step runs model.forward over the whole padded batch and takes each
    sequence's last valid row. Right padding is harmless because attention is causal: row t never sees t' > t.
    Deliberately wasteful: the forward recomputes every earlier position (and its logits) to get one row."""

    def __init__(self, model, padded: np.ndarray, lengths: np.ndarray, n_new: int):
        B, T = padded.shape
        self.model, self.batch = model, B
        self.ids = np.zeros((B, int(lengths.max()) + n_new), dtype=np.int64)
        self.ids[:, :T] = padded
        self.lengths = lengths.copy()
        self.rows = np.arange(B)

    def _logits(self, name: str) -> np.ndarray:
        with phase(name):
            logits = self.model.forward(self.ids[:, :int(self.lengths.max())])
        return logits[self.rows, self.lengths - 1]

    def first(self) -> np.ndarray:
        return self._logits("prefill")     # the prompt pass (logits for every row; a cached prefill keeps the last)

    def next(self, ids: np.ndarray) -> np.ndarray:
        self.ids[self.rows, self.lengths] = ids
        self.lengths += 1
        return self._logits("decode")


# ---- choosing the next token ---------------------------------------------------------------------------------

class _Sampler:
    """logits (B, V) -> ids (B,): argmax at temperature 0, else a draw after temperature, top-k and top-p."""

    def __init__(self, temperature, top_k, top_p, seed):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
                or not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature={temperature!r} must be a finite number ≥ 0 (0 = greedy)")
        if top_k is not None:
            _check_int("top_k", top_k, 1)
        if top_p is not None:
            if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.floating)) or not 0 < top_p <= 1:
                raise ValueError(f"top_p={top_p!r} must lie in (0, 1]")
        if seed is not None:
            _check_int("seed", seed, 0)
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        if self.temperature == 0.0:
            return logits.argmax(axis=-1)
        z = logits.astype(np.float64) / self.temperature             # (B, V)
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

def _check_int(arg: str, value, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        raise ValueError(f"{arg}={value!r} must be an integer ≥ {lowest}")
    return int(value)


def _pack_prompts(model, prompts) -> tuple[np.ndarray, np.ndarray]:
    """A list of 1-D id sequences (or a (B, T) array) -> right-padded (B, T) int64 and lengths (B,)."""
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
        if r.dtype == bool or r.dtype.kind not in "iu":
            raise TypeError(f"prompt {i} must hold integer token ids, got dtype {r.dtype}")
    lengths = np.array([r.size for r in rows], dtype=np.int64)
    padded = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)   # pad id 0: any valid id would do
    for i, r in enumerate(rows):
        padded[i, :r.size] = r
    if int(lengths.max()) > model.cfg.n_ctx:
        b = int(lengths.argmax())
        raise ValueError(f"prompt {b} has {lengths[b]} tokens; the model's context is n_ctx={model.cfg.n_ctx}")
    for i, r in enumerate(rows):
        model.check_tokens(r[None, :], f"prompt {i}")
    return padded, lengths


def _check_stop_tokens(stop_tokens, vocab_size: int) -> frozenset:
    if stop_tokens is None:
        return frozenset()
    ids = np.atleast_1d(np.asarray(stop_tokens))
    if ids.ndim != 1 or (ids.size and (ids.dtype == bool or ids.dtype.kind not in "iu")):
        raise TypeError(f"stop_tokens must be an id or a list of ids, got {stop_tokens!r}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"stop_tokens {ids.tolist()} must lie in [0, {vocab_size}) (vocab_size)")
    return frozenset(ids.tolist())
