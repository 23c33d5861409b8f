"""Where keys and values live: the KV cache of the decoder, and the store protocol the model reads it through.

    cache = KVCache(cfg, batch=B, max_len=S)        K and V of every layer: 2 · (B, KV, S, HS) per layer
    cache.nbytes                                    2·L·B·KV·S·HS·itemsize, allocated once, all of it
    cache.lengths                                   (B,) tokens each sequence holds so far

Why a cache. Attention is the only op that looks at other positions, and it only needs their keys and values.
Without a cache, every new token re-runs the whole model over the whole sequence: step t costs a forward over
t + 1 tokens. With the cache, step t runs the model over one token and reads t + 1 cached rows per layer: the
matmuls' work per token stays constant, and attention's grows by one key per step. Memory buys compute.

The store protocol. `Transformer.run` writes each layer's new keys and values into a store and reads them back
for attention through four members, so a contiguous cache, a paged block pool or a throwaway buffer plug in alike:

    store.layer(l)            -> (k_pool, v_pool), each (R, KV, X, HS): R rows of X positions
    store.table               (slots, rows per slot) int64: sequence slot s keeps position p in row table[s, p // X]
    store.keys(k, v, block)   -> (b, KV, S, HS) keys and values of a block's sequences, positions 0..S-1
    store.category            the byte category attention's K/V traffic is counted under
    store.check_batch(batch)  (optional) refuse a batch whose slots or positions are not in the store, before
                              any kernel writes there

A KVCache gives each slot one row of X = max_len positions (table[s] = [s]), so a block's keys are a plain view.
A PagedKVCache (minitx.core.paged_cache) gives each slot a row of block ids into a shared pool of blocks of X
positions each, and gathers a block's keys through it.
"""
from __future__ import annotations

import numpy as np

from .. import checks, dtypes
from ..dtypes import numpy_dtype
from ..measure.machine import require_memory
from .batch import Block, TokenBatch
from .config import Config
from .shaped import shaped


def contiguous_keys(k: np.ndarray, v: np.ndarray, blk: Block) -> tuple[np.ndarray, np.ndarray]:
    """A block's keys and values in a store with one row per slot: views (b, KV, S, HS), no copy."""
    rows = slice(blk.slot, blk.slot + blk.b)
    return k[rows, :, :blk.keys], v[rows, :, :blk.keys]


class KVCache:
    """Keys and values of every layer for `batch` sequences of up to `max_len` tokens (≤ cfg.n_ctx).

    cache.k[l], cache.v[l]  (B, KV, X, HS) zeros at first: views into one buffer of exactly `nbytes` bytes
    cache.lengths           (B,) int64, each sequence's current length (tokens whose K/V are in the cache)

    X = max_len positions, or, with `rolling=True` for a model with a sliding window of W (cfg.sliding_window),
    X = min(max_len, W + chunk − 1): position p lives in column p mod X, so a sequence keeps its last X keys. The
    chunk − 1 beyond the window are room for one call's new keys (a prefill of up to `chunk` tokens, default W):
    all of a call's keys are written before its queries read theirs, and none may overwrite a key still in a
    query's window. A rolling cache is read by fused attention (Transformer(..., attention="fused")); the
    unfused matmuls read every key 0..S of a full one. `model.new_cache(batch, max_len)` picks for a model.
    `shape_only=True` makes a data-less cache (minitx.core.shaped) in any format minitx can count.
    """
    category = "kv_cache"

    def __init__(self, cfg: Config, batch: int, max_len: int, dtype="float32", *, rolling: bool = False,
                 chunk: int | None = None, shape_only: bool = False):
        checks.instance("cfg", cfg, Config, "a minitx.Config")
        batch = checks.integer("KVCache batch", batch)
        max_len = checks.integer("KVCache max_len", max_len)
        if max_len > cfg.n_ctx:
            raise ValueError(f"KVCache max_len={max_len} exceeds the model's context n_ctx={cfg.n_ctx}")
        self.cfg, self.max_len, self.shape_only = cfg, max_len, bool(shape_only)
        fmt = dtypes.name(dtype)
        if shape_only and fmt not in dtypes.ACTIVATION_FORMATS + ("int8",):
            raise ValueError(f"KVCache dtype={dtype!r}: choose one of {', '.join(dtypes.ACTIVATION_FORMATS)}, int8")
        self.dtype = dtypes.storage(fmt) if shape_only else numpy_dtype(dtype, "KVCache dtype")
        W = cfg.sliding_window
        if rolling and not W:
            raise ValueError(f"KVCache rolling=True needs a sliding window; {cfg.name!r} has none")
        self.chunk = checks.integer("KVCache chunk", W if chunk is None else chunk) if rolling else None
        X = min(max_len, W + self.chunk - 1) if rolling else max_len
        L, KV, HS = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
        shape = (2, L, batch, KV, X, HS)
        # One buffer, (K or V, layer, B, KV, X, HS): nbytes is exactly 2·L·B·KV·X·HS·itemsize, nothing hidden.
        if shape_only:
            self.buffer = shaped(shape, self.dtype)
        else:
            require_memory(int(np.prod(shape, dtype=object)) * self.dtype.itemsize, "KVCache")
            self.buffer = np.zeros(shape, dtype=self.dtype)
        self.k = [self.buffer[0, l] for l in range(L)]
        self.v = [self.buffer[1, l] for l in range(L)]
        # The bookkeeping is real even for a shape-only cache: lengths and table, 16 bytes per sequence.
        require_memory(16 * batch, "KVCache lengths and table")
        self.lengths = np.zeros(batch, dtype=np.int64)
        self.table = np.arange(batch, dtype=np.int64)[:, None]     # slot b: row b, all X columns

    @property
    def batch(self) -> int:
        return self.buffer.shape[2]

    @property
    def capacity(self) -> int:
        """X: positions held per sequence (max_len, or a rolling window's W + chunk − 1)."""
        return self.buffer.shape[4]

    @property
    def nbytes(self) -> int:
        """2 (K and V) · L · KV · HS · X · B · itemsize."""
        return 2 * self.cfg.n_layers * self.batch * self.cfg.n_kv_heads * self.capacity * self.cfg.head_dim * \
            self.dtype.itemsize

    def layer(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        return self.k[l], self.v[l]

    def check_batch(self, batch: TokenBatch) -> None:
        """The batch's slots must be rows of this cache and, unless it is rolling (positions reuse its columns),
        its positions columns of them: Transformer.run checks before the split writes anything."""
        for blk in batch.blocks:
            if blk.slot < 0 or blk.slot + blk.b > self.batch:
                raise ValueError(f"slots {blk.slot}..{blk.slot + blk.b - 1} fall outside the cache's {self.batch} rows")
            if self.chunk is None and blk.keys > self.capacity:
                raise ValueError(f"positions up to {blk.keys - 1} pass the cache's max_len={self.capacity}")

    def keys(self, k: np.ndarray, v: np.ndarray, blk: Block) -> tuple[np.ndarray, np.ndarray]:
        if blk.keys > self.capacity:
            raise ValueError(f"this rolling cache holds the last {self.capacity} positions; unfused attention reads "
                             f"keys 0..{blk.keys - 1}: run the model with attention='fused'")
        return contiguous_keys(k, v, blk)

    def reset(self) -> None:
        """Forget every sequence: lengths back to 0, and K/V back to zeros. Rows past a sequence's length do pass
        through the attention matmuls of a ragged block, with weight exactly 0; zeros keep a NaN left by an
        earlier run from turning 0·NaN into NaN."""
        if not self.shape_only:
            self.buffer[...] = 0.0
        self.lengths[:] = 0

    def __repr__(self) -> str:
        c = self.cfg
        return (f"KVCache(L={c.n_layers}, B={self.batch}, KV={c.n_kv_heads}, X={self.capacity}, HS={c.head_dim}, "
                f"dtype={self.dtype.name}, nbytes={self.nbytes:,}, lengths={self.lengths.tolist()})")


class Scratch:
    """A store for one call that keeps nothing: the keys and values of the tokens being run (training, a plain
    forward), each layer's pair allocated when the layer runs and freed when the next one replaces it."""
    category = "activations"
    keys = staticmethod(contiguous_keys)

    def __init__(self, batch: TokenBatch, n_kv_heads: int, head_dim: int, dtype: np.dtype, shape_only: bool = False):
        self.shape = (batch.n_slots, n_kv_heads, int(batch.pos.max()) + 1, head_dim)
        self.dtype, self.shape_only = dtype, shape_only
        self.table = np.arange(batch.n_slots, dtype=np.int64)[:, None]

    def layer(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        if self.shape_only:
            return shaped(self.shape, self.dtype), shaped(self.shape, self.dtype)
        return np.empty(self.shape, dtype=self.dtype), np.empty(self.shape, dtype=self.dtype)
