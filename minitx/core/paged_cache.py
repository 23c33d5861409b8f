"""A paged KV cache: every sequence's keys and values in fixed-size blocks of one shared pool, found through a
block table (vLLM's PagedAttention: Kwon et al., "Efficient Memory Management for Large Language Model Serving
with PagedAttention", SOSP 2023).

    cache = PagedKVCache(cfg, num_blocks=64, block_size=16, slots=8)
    cache.k[l], cache.v[l]     (num_blocks, KV, X, HS) each, X = block_size: block i holds X positions
    cache.table                (slots, ceil(max_len / X)) int64: sequence slot s keeps position p in block
                               table[s, p // X], column p % X; -1 where the slot holds no block
    cache.assign(s, blocks)    slot s's block ids, in position order (from minitx.serving.scheduler.BlockManager)
    cache.release(s)           slot s holds nothing
    cache.nbytes               2·L·num_blocks·KV·X·HS·itemsize: the whole pool, allocated once
    cache.block_bytes          one block, all layers, K and V: 2·L·KV·X·HS·itemsize

Why pages. A contiguous cache (minitx.core.kv_cache.KVCache) gives each sequence one row of max_len positions,
reserved before anyone knows how long the sequence will get; most of it holds nothing for most of its life. Here
a sequence holds ceil(tokens / X) blocks, anywhere in the pool, and takes another only when its last is full: it
never wastes more than X − 1 positions. Memory is the OS's virtual memory trick: the block table is the page
table, a block is a page, and the sequence sees positions 0, 1, 2, ... wherever they physically live.

It is a store for `Transformer.run` (the protocol in minitx.core.kv_cache): `layer(l)` hands the pools to the
split, which writes each new token's key and value at (table[s, p // X], p % X); fused attention
(minitx.core.ops.fused_attention) reads them back through the same table inside its kernel; unfused attention
asks `keys(k, v, block)` for a block's keys as one (b, KV, S, HS) array, which a Numba kernel gathers block by
block. Counting: attention is charged the keys and values it reads, positions 0..S-1 of each sequence, under
`kv_cache`, exactly as from a contiguous store (minitx.accounting.conventions): the bytes of the blocks in use,
never of the empty positions of a last block. The gather is not charged again: it stands in for the table
lookups a paged-attention kernel makes as it loads each key (vLLM's kernel reads the blocks in place), so the
two layouts count alike and `minitx.formulas.step` describes both.

Safety. The kernels index without bounds checks, so every table entry a call will use is checked first
(`check_batch`, which Transformer.run calls for a store that has it, and `keys`): a missing block (-1) or a block
id outside the pool is a ValueError naming the slot, never a write or a read outside the pool.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import checks, dtypes
from ..dtypes import numpy_dtype
from ..measure.machine import require_memory
from .batch import Block, TokenBatch
from .config import Config
from .shaped import is_shaped, shaped


@njit(cache=True, error_model="numpy")
def _gather_blocks(pool, table, slot, out):
    # pool (R, KV, X, HS) one layer's keys (or values), table (slots, width) int64, out (b, KV, S, HS).
    # out[bi, :, j] = pool[table[slot + bi, j // X], :, j % X] for j < S: sequence bi's positions 0..S-1 laid end
    # to end, one block (X positions, or what is left of S) at a time. Each block is a (KV, X, HS) slab of the
    # pool, so a block's positions are one contiguous copy per kv head: the gather costs one table lookup per X
    # positions, not per position.
    b, KV, S = out.shape[0], out.shape[1], out.shape[2]
    X = pool.shape[2]
    for bi in range(b):
        for c in range((S + X - 1) // X):
            row = table[slot + bi, c]              # checked by the caller: a block of the pool
            lo = c * X
            hi = min(S, lo + X)
            for h in range(KV):
                out[bi, h, lo:hi, :] = pool[row, h, :hi - lo, :]


@njit(cache=True, error_model="numpy")
def _blocks_in_pool(blocks, table, num_blocks, X):
    # blocks (n_blocks, 5) int64 rows of (start, slot, b, n, p), table (slots, width) int64: True when _check_block
    # below passes for every block (its slots are table rows, positions 0..p+n-1 fit the table, and each entry
    # they use is a block of the pool). One pass, no temporaries; anything unusual answers False and the
    # per-block checks decide. It reads nothing before checking that it is in range.
    slots, width = table.shape
    for k in range(blocks.shape[0]):
        slot, b, keys = blocks[k, 1], blocks[k, 2], blocks[k, 4] + blocks[k, 3]
        if slot < 0 or b < 1 or slot + b > slots or keys < 1 or keys > X * width:
            return False
        for s in range(slot, slot + b):
            for e in range((keys + X - 1) // X):
                if table[s, e] < 0 or table[s, e] >= num_blocks:
                    return False
    return True


class PagedKVCache:
    """Keys and values of every layer in a pool of `num_blocks` blocks of `block_size` positions, shared by up to
    `slots` sequences of up to `max_len` positions (default the model's context). See the module docstring.
    `shape_only=True` makes a data-less pool (minitx.core.shaped): counted, never allocated."""
    category = "kv_cache"

    def __init__(self, cfg: Config, num_blocks: int, block_size: int, slots: int, max_len: int | None = None,
                 dtype="float32", *, shape_only: bool = False):
        checks.instance("cfg", cfg, Config, "a minitx.Config")
        num_blocks = checks.integer("PagedKVCache num_blocks", num_blocks)
        X = checks.integer("PagedKVCache block_size", block_size)
        slots = checks.integer("PagedKVCache slots", slots)
        max_len = cfg.n_ctx if max_len is None else checks.integer("PagedKVCache max_len", max_len)
        if max_len > cfg.n_ctx:
            raise ValueError(f"PagedKVCache max_len={max_len} exceeds the model's context n_ctx={cfg.n_ctx}")
        self.cfg, self.max_len, self.shape_only = cfg, max_len, bool(checks.instance("shape_only", shape_only, bool))
        fmt = dtypes.name(dtype)
        if shape_only and fmt not in dtypes.ACTIVATION_FORMATS + ("int8",):
            raise ValueError(f"PagedKVCache dtype={dtype!r}: choose one of "
                             f"{', '.join(dtypes.ACTIVATION_FORMATS)}, int8")
        self.dtype = dtypes.storage(fmt) if shape_only else numpy_dtype(dtype, "PagedKVCache dtype")
        L, KV, HS = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
        shape = (2, L, num_blocks, KV, X, HS)
        # One buffer, (K or V, layer, block, KV, X, HS): nbytes is exactly 2·L·num_blocks·KV·X·HS·itemsize.
        if self.shape_only:
            self.buffer = shaped(shape, self.dtype)
        else:
            require_memory(int(np.prod(shape, dtype=object)) * self.dtype.itemsize, "PagedKVCache")
            self.buffer = np.zeros(shape, dtype=self.dtype)
        self.k = [self.buffer[0, l] for l in range(L)]
        self.v = [self.buffer[1, l] for l in range(L)]
        # One row per slot, one entry per block a sequence of max_len positions can need. -1: no block. Real even for
        # a shape-only cache, so checked like the pool.
        require_memory(slots * -(-max_len // X) * 8, "PagedKVCache block table")
        self.table = np.full((slots, -(-max_len // X)), -1, dtype=np.int64)

    # ---- sizes ---------------------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.buffer.shape[2]

    @property
    def block_size(self) -> int:
        return self.buffer.shape[4]

    @property
    def slots(self) -> int:
        return self.table.shape[0]

    @property
    def block_bytes(self) -> int:
        """One block of every layer, K and V: 2 · L · KV · X · HS · itemsize."""
        c = self.cfg
        return 2 * c.n_layers * c.n_kv_heads * self.block_size * c.head_dim * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """The whole pool: num_blocks · block_bytes."""
        return self.num_blocks * self.block_bytes

    # ---- the block table ---------------------------------------------------------------------------------------
    def assign(self, slot: int, blocks) -> None:
        """Slot `slot` holds `blocks` (block ids, in position order): block i keeps positions i·X .. (i+1)·X − 1."""
        slot = checks.integer("slot", slot, 0, self.slots - 1)
        ids = np.asarray(blocks)
        if ids.ndim != 1 or (ids.size and (ids.dtype == bool or ids.dtype.kind not in "iu")):
            raise TypeError(f"blocks must be a list of block ids, got {blocks!r:.60}")
        if ids.size > self.table.shape[1]:
            raise ValueError(f"slot {slot} is given {ids.size} blocks; a sequence of max_len={self.max_len} "
                             f"positions holds at most {self.table.shape[1]}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_blocks):
            raise ValueError(f"block ids {ids.tolist()} must lie in [0, {self.num_blocks}) (num_blocks)")
        self.table[slot] = -1
        self.table[slot, :ids.size] = ids

    def release(self, slot: int) -> None:
        """Slot `slot` holds no block."""
        self.table[checks.integer("slot", slot, 0, self.slots - 1)] = -1

    def reset(self) -> None:
        """Every slot empty, and the pool back to zeros (see KVCache.reset for why zeros)."""
        self.table[:] = -1
        if not self.shape_only:
            self.buffer[...] = 0.0

    # ---- the store protocol ------------------------------------------------------------------------------------
    def layer(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        return self.k[l], self.v[l]

    def check_batch(self, batch: TokenBatch) -> None:
        """Every table entry the split (writes) and attention (reads) will use for `batch` must be a block of the
        pool: positions 0..p+n-1 of each block's slots. A ValueError naming the slot otherwise."""
        blocks = batch.block_array
        if blocks.ndim == 2 and blocks.shape[1] == 5 and _blocks_in_pool(blocks, self.table, self.num_blocks,
                                                                         self.block_size):
            return                          # the usual case, in one compiled pass (once per model call)
        for blk in batch.blocks:            # else block by block, to name what is wrong
            self._check_block(blk)

    def _check_block(self, blk: Block) -> None:
        if blk.slot < 0 or blk.slot + blk.b > self.slots:
            raise ValueError(f"slots {blk.slot}..{blk.slot + blk.b - 1} fall outside the block table's "
                             f"{self.slots} slots")
        X, width = self.block_size, self.table.shape[1]
        if blk.keys > X * width:
            raise ValueError(f"positions up to {blk.keys - 1} pass max_len={self.max_len}")
        used = self.table[blk.slot:blk.slot + blk.b, :-(-blk.keys // X)]
        if used.min() < 0 or used.max() >= self.num_blocks:
            bad = int(np.argwhere((used < 0) | (used >= self.num_blocks))[0, 0]) + blk.slot
            raise ValueError(f"slot {bad} needs blocks for positions 0..{blk.keys - 1}, but its block table row "
                             f"{self.table[bad].tolist()} holds a missing (-1) or out-of-range block (the pool "
                             f"has {self.num_blocks})")

    def keys(self, k: np.ndarray, v: np.ndarray, blk: Block) -> tuple[np.ndarray, np.ndarray]:
        """A block's keys and values, positions 0..S-1 of its b sequences, gathered: (b, KV, S, HS) each."""
        self._check_block(blk)
        shape = (blk.b, k.shape[1], blk.keys, k.shape[3])
        if is_shaped(k, v):
            return shaped(shape, k.dtype), shaped(shape, v.dtype)
        k_out, v_out = np.empty(shape, dtype=k.dtype), np.empty(shape, dtype=v.dtype)
        # A gather moves bits, never arithmetic: the kernel sees each array as unsigned integers of its itemsize,
        # so one compiled kernel per width serves every format (bfloat16 and float16 included, which Numba has no
        # type for)
        for pool, out in ((k, k_out), (v, v_out)):
            bits = np.dtype(f"u{pool.itemsize}")
            _gather_blocks(pool.view(bits), self.table, blk.slot, out.view(bits))
        return k_out, v_out

    def __repr__(self) -> str:
        c = self.cfg
        return (f"PagedKVCache(L={c.n_layers}, blocks={self.num_blocks}, X={self.block_size}, KV={c.n_kv_heads}, "
                f"HS={c.head_dim}, slots={self.slots}, dtype={self.dtype.name}, nbytes={self.nbytes:,})")


__all__ = ["PagedKVCache"]
