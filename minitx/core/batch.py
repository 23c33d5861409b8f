"""What one model call runs over: tokens packed into one row each, with a sequence slot and a position per token.

    TokenBatch.ids (N,)  token ids           the N tokens of every sequence in this call, back to back
    TokenBatch.pos (N,)  their positions     position p of a sequence: its (p + 1)-th token
    TokenBatch.blocks    the attention work  see Block

A training batch is a rectangle: B sequences of T tokens at positions 0..T-1 (`rectangle`). A serving step is a
mix: a 300-token chunk of one prompt, then one new token of each of 20 other sequences, each at its own position
(`pack`). Packing them, instead of padding every sequence to the longest, means the linear layers, norms and MLP
(which treat every token alike) run over exactly the N real tokens, and attention over exactly the keys each
sequence has.

Attention is the one op that must know which tokens belong together. It runs block by block: a Block is b
sequences of n consecutive tokens each, all starting at the same position p, in consecutive KV slots. Their
queries form one (b, NH, n, HS) array and their keys one (b, KV, p + n, HS) array, so a block is one batched
matmul; a training batch is one block, a decode step with every sequence at the same length is one block, and a
mixed serving step is a few.

Slots. The sequence id of a token is the slot of a KV store (minitx.core.kv_cache) where its keys and values
live: row b of a contiguous cache, a block table's row in a paged one. Blocks keep the slots; the per-token
sequence ids are only needed to find the blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Block:
    """b sequences × n consecutive tokens each, at positions p..p+n-1, in KV slots slot..slot+b-1; their
    tokens are rows start..start+b·n-1 of the batch, sequence by sequence."""
    start: int
    slot: int
    b: int
    n: int
    p: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.start + self.b * self.n)

    @property
    def keys(self) -> int:
        """S: keys the block's queries attend to (causally, the last query sees positions 0..p+n-1)."""
        return self.p + self.n


@dataclass(frozen=True, eq=False)
class TokenBatch:
    ids: np.ndarray                # (N,) int64
    pos: np.ndarray                # (N,) int64
    blocks: tuple[Block, ...]

    @property
    def n_tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_slots(self) -> int:
        """One past the highest slot any block uses."""
        return max(blk.slot + blk.b for blk in self.blocks)

    @cached_property
    def block_array(self) -> np.ndarray:
        """(blocks, 5) int64 rows of (start, slot, b, n, p): the blocks as the kernels read them."""
        return np.array([[b.start, b.slot, b.b, b.n, b.p] for b in self.blocks], dtype=np.int64).reshape(-1, 5)

    def block_pos(self, blk: Block) -> np.ndarray:
        """(b, n) view of the positions of a block's tokens."""
        return self.pos[blk.rows].reshape(blk.b, blk.n)


def rectangle(tokens: np.ndarray) -> TokenBatch:
    """B sequences of T tokens at positions 0..T-1 in slots 0..B-1: a training batch or a plain forward.
    `tokens` (B, T) int64, already checked (Transformer.check_tokens)."""
    B, T = tokens.shape
    pos = np.tile(np.arange(T, dtype=np.int64), B)
    return TokenBatch(tokens.reshape(-1), pos, (Block(0, 0, B, T, 0),))


def pack(ids: np.ndarray, seq: np.ndarray, pos: np.ndarray) -> TokenBatch:
    """Tokens given one row each, (N,) int64 ids, slots and positions, every sequence's tokens back to back at
    consecutive positions. Equal-shaped runs in consecutive slots share a block."""
    N = ids.shape[0]
    if not (seq.shape == pos.shape == (N,)) or N == 0:
        raise ValueError(f"ids, seq and pos must be non-empty and of one length, got {ids.shape}, {seq.shape}, "
                         f"{pos.shape}")
    new = np.ones(N, dtype=bool)                                 # where a run of one sequence starts
    new[1:] = (seq[1:] != seq[:-1]) | (pos[1:] != pos[:-1] + 1)
    starts = np.flatnonzero(new).tolist()
    blocks: list[Block] = []
    for start, end in zip(starts, starts[1:] + [N]):
        n, slot, p = end - start, int(seq[start]), int(pos[start])
        last = blocks[-1] if blocks else None
        if last and (last.n, last.p, last.slot + last.b, last.start + last.b * last.n) == (n, p, slot, start):
            blocks[-1] = Block(last.start, last.slot, last.b + 1, n, p)
        else:
            blocks.append(Block(start, slot, 1, n, p))
    return TokenBatch(ids, pos, tuple(blocks))


def ragged(rows: list[np.ndarray]) -> TokenBatch:
    """Sequence b's tokens rows[b] (1-D, at positions 0..len-1) in slot b: prompts of different lengths."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    if (lengths == lengths[0]).all():
        return rectangle(np.stack(rows))
    seq = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    pos = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
    return pack(np.concatenate(rows).astype(np.int64), seq, pos)
