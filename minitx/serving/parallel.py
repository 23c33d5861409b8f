"""Tensor parallelism: one model's layers split over `tp` chips, Megatron-LM's way, and what each chip holds.

Megatron-LM (Shoeybi et al. 2019, arXiv 1909.08053, §3) splits each transformer layer so that every chip does
1/tp of its matmuls and talks to the others only twice per layer:

    attention   q|k|v   column-parallel: chip r computes its own NH/tp query heads and KV/tp key/value heads,
                        so attention runs on them locally and each chip caches only its heads' keys and values
                proj    row-parallel: chip r multiplies its heads' (N, Q/tp) output by its (Q/tp, C) rows of the
                        projection, a partial (N, C) sum           -> all-reduce #1 sums the tp partials
    MLP         up      column-parallel (gate|up: F/tp columns each), so the activation runs locally
                down    row-parallel, (F/tp, C) rows              -> all-reduce #2

So one chip's work in a layer is exactly the layer of a narrower model: NH/tp query heads, KV/tp key/value heads
of the same head size HS, an MLP of width F/tp, the same d_model C. `shard(cfg, tp)` is that model, and a chip's
per-layer FLOPs and bytes are the formulas' costs of the shard: the matmuls' and attention's divided by tp,
the rest (norms, residual adds, RoPE's tables) the same on every chip.

What is not split, an assumption stated here once: the token embedding, the final norm and the LM head stay whole
on every chip (replicated). Megatron splits the embedding and the head along the vocabulary instead; replicating
them costs each chip V·C more parameters of memory (twice for an untied head) and the head's full matmul on the
logits rows, and saves the all-gather of the logits a vocabulary split needs before sampling.
Norms and biases of row-parallel layers are replicated too, as in Megatron (each chip adds the bias after the
all-reduce).

The all-reduces. Each sums an (N, C) activation in the activations' format, N the step's tokens. A ring
all-reduce (reduce-scatter, then all-gather) sends 2(tp − 1)/tp of those bytes from every chip and receives as
many, at the same time, so it takes

    t = 2(tp − 1)/tp · N·C·itemsize / link bandwidth per direction       (NCCL's "bus bandwidth" convention)

and a step pays 2·L of them, after the layer's compute (no overlap assumed), at the link's datasheet rate (mbu, the
fraction of DRAM bandwidth reached, does not apply to it). Left out: the links' latency (a few microseconds per
collective, which dominates the tiny all-reduces of a decode step at small batch) and the adds of the reduction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import checks, dtypes
from ..accounting import formulas
from ..core.config import Config
from .hardware import Hardware, get as get_hardware

ALL_REDUCES_PER_LAYER = 2        # after attention's output projection and after the MLP's down projection


def check_tp(cfg: Config, tp: Any) -> int:
    """tp as an int if it splits cfg evenly: query heads, key/value heads and the MLP's width divisible by it."""
    tp = checks.integer("tp", tp)
    uneven = [f"{what}={size}" for what, size in (("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads),
                                                  ("d_ff", cfg.d_ff)) if size % tp]
    if uneven:
        raise ValueError(f"tp={tp} does not split {cfg.name} evenly ({', '.join(uneven)} not divisible by {tp}): "
                         f"each chip takes whole heads and an equal share of the MLP; choose a tp that divides "
                         f"n_heads={cfg.n_heads}, n_kv_heads={cfg.n_kv_heads} and d_ff={cfg.d_ff}")
    return tp


def shard(cfg: Config, tp: int) -> Config:
    """One chip's share of every layer: NH/tp query heads, KV/tp key/value heads, MLP width F/tp; d_model,
    vocabulary, layers and head size unchanged. tp = 1 is cfg itself."""
    tp = check_tp(cfg, tp)
    if tp == 1:
        return cfg
    return cfg.replace(n_heads=cfg.n_heads // tp, n_kv_heads=cfg.n_kv_heads // tp, head_dim=cfg.head_dim,
                       d_ff=cfg.d_ff // tp, name=f"{cfg.name} (1/{tp} per chip)")


def link_bandwidth(hw: "str | Hardware", tp: int) -> float:
    """The chip-to-chip bandwidth per direction that tp > 1 needs (bytes/s); a clear error where a preset has
    none. tp = 1 needs no link: 0 is returned and never divided by."""
    hw = get_hardware(hw)
    if tp == 1:
        return 0.0
    if hw.interconnect is None:
        raise ValueError(f"tp={tp} needs a chip-to-chip bandwidth, and {hw.name} has none "
                         f"({hw.interconnect_source or 'no figure given'}); use a preset that has one (minitx hw "
                         "--json lists `interconnect`), or a hardware file with `interconnect` in bytes/s per "
                         "direction")
    return hw.interconnect


def allreduce_bytes(tokens: int, d_model: int, itemsize: int, tp: int) -> float:
    """Bytes one chip sends (and receives) in a ring all-reduce of a (tokens, d_model) activation: 2(tp−1)/tp of
    it. Not an integer in general (the ring moves tp chunks of 1/tp each); 0 for tp = 1."""
    return 2 * (tp - 1) / tp * tokens * d_model * itemsize


def allreduce_time_per_token(cfg: Config, precision: Any, tp: int, hw: Hardware) -> float:
    """Seconds of all-reduce per token of a step: 2·L all-reduces of one (1, C) row each, over the link. A step's
    all-reduce time is this times its token count N (the ring's time is linear in the bytes)."""
    if tp == 1:
        return 0.0
    s = dtypes.itemsize(dtypes.precision(precision).activations)
    per_layer = ALL_REDUCES_PER_LAYER * allreduce_bytes(1, cfg.d_model, s, tp)
    return cfg.n_layers * per_layer / link_bandwidth(hw, tp)


# ==============================================================================================================
# Memory per chip, and the KV blocks that fit

@dataclass(frozen=True)
class ChipMemory:
    """What one chip holds when `cfg` is served on `tp` chips, in bytes, and the KV blocks that fit beside it.

    usable            memory_fraction of the chip's memory: the rest is left for activations, the CUDA context
                      and fragmentation (vLLM's gpu_memory_utilization, 0.9 by default, plays the same role)
    weights           the shard's parameters as stored (embedding and head replicated, see the module docstring)
    kv_per_token      bytes one token's keys and values take on one chip: its KV/tp heads, all layers
    fit_blocks        ⌊(usable − weights) / (block_size · kv_per_token)⌋: the blocks of block_size positions
                      that fit; a block id names the same block on every chip, each holding its own heads
                      (vLLM §4.6)
    num_blocks        the pool: fit_blocks, or fewer when no run could hold more at once (`most_blocks`: a small
                      model on a large chip fits millions of blocks that max_batch sequences could never fill)
    """
    tp: int
    memory: float
    memory_fraction: float
    weights: int
    kv_per_token: int
    block_size: int
    num_blocks: int
    fit_blocks: int

    @property
    def usable(self) -> float:
        return self.memory * self.memory_fraction

    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV pool on one chip."""
        return self.num_blocks * self.block_size * self.kv_per_token

    @property
    def kv_tokens(self) -> int:
        """Token positions the pool holds (per chip and in all: every chip holds the same positions)."""
        return self.num_blocks * self.block_size

    def to_dict(self) -> dict:
        return {"tp": self.tp, "memory": self.memory, "memory_fraction": self.memory_fraction,
                "usable": self.usable, "weights": self.weights, "kv_per_token": self.kv_per_token,
                "block_size": self.block_size, "num_blocks": self.num_blocks, "fit_blocks": self.fit_blocks,
                "kv_bytes": self.kv_bytes,
                "kv_tokens": self.kv_tokens}


def chip_memory(cfg: Config, hw: "str | Hardware", precision: Any, tp: int = 1, block_size: int = 16,
                memory_fraction: float = 0.9, most_blocks: int | None = None) -> ChipMemory:
    """The memory plan of one chip (see ChipMemory). Refuses, naming the bytes, a model whose weights do not
    leave room for one block of KV cache next to them on each chip. `most_blocks` caps the pool (see
    ChipMemory.num_blocks)."""
    hw = get_hardware(hw)
    pr = dtypes.precision(precision)
    tp = check_tp(cfg, tp)
    block_size = checks.integer("block_size", block_size)
    memory_fraction = checks.number("memory_fraction", memory_fraction, 0.0, 1.0, low_open=True)
    part = shard(cfg, tp)
    try:
        weights = formulas.param_bytes(part, pr)
    except ValueError as e:      # a quantization group that does not divide a split matrix's inputs
        raise ValueError(f"tp={tp}: {e}") from None
    per_token = formulas.kv_bytes_per_token(part, pr)
    usable = hw.memory * memory_fraction
    blocks = int((usable - weights) // (block_size * per_token)) if usable > weights else 0
    if blocks < 1:
        need = weights + block_size * per_token
        fewest = next((t for t in range(tp + 1, cfg.n_heads + 1) if _fits(cfg, hw, pr, t, block_size,
                                                                          memory_fraction)), None)
        hint = (f"tensor parallelism over {fewest} or more chips (--tp {fewest}) leaves room" if fewest else
                "no tensor-parallel split of it fits either")
        raise ValueError(
            f"{cfg.name} in {pr} does not fit on {'one' if tp == 1 else f'each of {tp}'} {hw.name}: each chip "
            f"needs {weights / 1e9:,.2f} GB of weights (+ {block_size * per_token / 1e9:,.4f} GB for one KV block "
            f"of {block_size} tokens) = {need / 1e9:,.2f} GB, and {hw.name} has {hw.memory / 1e9:,.2f} GB, "
            f"{usable / 1e9:,.2f} GB of it usable at memory_fraction {memory_fraction:g}; {hint}")
    pool = blocks if most_blocks is None else min(blocks, checks.integer("most_blocks", most_blocks))
    return ChipMemory(tp, hw.memory, memory_fraction, weights, per_token, block_size, pool, blocks)


def _fits(cfg: Config, hw: Hardware, pr: dtypes.Precision, tp: int, block_size: int, fraction: float) -> bool:
    """Whether a tp-way split leaves each chip room for its weights and one KV block (tp must divide cfg)."""
    if cfg.n_heads % tp or cfg.n_kv_heads % tp or cfg.d_ff % tp:
        return False
    part = shard(cfg, tp)
    try:
        weights = formulas.param_bytes(part, pr)
    except ValueError:
        return False
    return hw.memory * fraction - weights >= block_size * formulas.kv_bytes_per_token(part, pr)
