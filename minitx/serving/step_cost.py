"""The cost and time of one serving step, exact and fast: the formulas' Ledger of the step, without building it.

A serving step is one `Transformer.run` over packed tokens: sequence i brings n_i new tokens at positions
p_i .. p_i + n_i − 1 (a prefill chunk, or n_i = 1 for a decode token), and R rows (each finished prompt's last
token, each decode token) go through the LM head. `formulas.step(cfg, blocks, precision, attention, logits_rows)`
is that step's Ledger, op by op, equal to what the model records when it runs; its roofline time
(minitx.serving.roofline) is Σ over the op calls of max(FLOPs / peak, bytes / bandwidth). A simulator runs tens of
thousands of steps, and building L × 13 Records for each is too slow. But every op's FLOPs and bytes are an
affine function of a handful of sums over the step's sequences:

    op                                              affine in
    embed                                           N = Σ n_i                           (tokens in the step)
    select_last, ln_f, lm_head                      R                                   (rows with logits)
    per layer: ln_1, qkv, rope, proj, residual,     N                                   (a weight read once per
               ln_2, up, act, down, residual                                             call, then per token)
    per layer, fused attention (one call)           N, VIS = Σ vis_i, TILES = Σ tiles_i, KEYS = Σ keys_i
    per layer, unfused attention: scores,           n_i, S_i = p_i + n_i, n_i·S_i, vis_i,  one call per block
               softmax, mix, merge                  for each sequence i                  (see below)

    vis_i    (query, key) pairs sequence i's queries see: Σ over its positions v = p_i+1 .. p_i+n_i of min(v, W)
             (v: a query at position v − 1 sees v keys, or the last W with a sliding window of W)
    tiles_i  the fused kernel's key tiles: Σ over the same v of ceil(min(v, W) / FUSED_TILE)
    keys_i   keys and values the fused kernel reads once: S_i, or S_i − max(0, p_i − W + 1) with a window
    n_i·S_i  the unfused scores' full rectangle (masked entries included): n_i queries × S_i keys

(minitx.accounting.conventions says why each op costs what it does.) The unfused attention ops run block by block,
a block being b sequences of equal (n, p), and a block's cost is b times one sequence's, so its time, b · max(...),
is the sum of its sequences' times: the unfused time is a sum over the step's sequences, computed as arrays.

The coefficients are not fitted and not retyped from the formulas: they are read off `formulas.step` itself. A few
probe steps with known sums (single sequences at chosen n, p, R) give each op's FLOPs and bytes; since each is
c · (1, N, R, VIS, TILES, KEYS) (or c · (n, S, n·S, vis) per sequence), the probes' linear system is solved
exactly, in rational numbers (a sum that is a combination of the others for this model, as TILES = N when a
window is no longer than a tile, gets coefficient 0), and the construction checks that every probe is reproduced
to the FLOP and the byte (tests/test_step_cost.py proves the same on hypothesis-drawn mixes, against
formulas.step, for every op kind, window and precision). Layers are identical, so one layer's coefficients times L.

Tensor parallelism (minitx.serving.parallel): the costs are one chip's, those of `parallel.shard(cfg, tp)`; the
step's time adds its 2·L ring all-reduces over the chips' link.

Efficiencies: `mfu` and `mbu` are the fractions of the peak FLOP/s and of the memory bandwidth the kernels reach
(1.0: the roofline's ideal). Each op's compute time is FLOPs / (peak · mfu), its memory time bytes / (bandwidth ·
mbu), its time the max of the two.

    cost = StepCost(Config.preset("llama-3-8b"), "h100", "bf16")
    cost.time(n=[512, 1, 1], p=[0, 700, 93], logits_rows=3)      # one prompt of 512 tokens beside two decodes
    cost.costs([512, 1, 1], [0, 700, 93], 3)                      # its FLOPs and bytes, exact integers
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from .. import checks, dtypes
from ..accounting import conventions as cv
from ..accounting import formulas
from ..core.config import Config
from . import parallel
from .hardware import Hardware, get as get_hardware
from .latency import peak_dtype

ATTENTIONS = ("fused", "unfused")
# The step's sums, in this order, that every op outside the unfused attention is affine in.
STEP_FEATURES = ("1", "N", "R", "VIS", "TILES", "KEYS")
# One sequence's quantities that each unfused attention op is linear in (a block of b sequences costs b times).
SEQUENCE_FEATURES = ("n", "S", "n*S", "vis")
UNFUSED_OPS = ("attn.scores", "attn.softmax", "attn.mix", "attn.merge")


@dataclass(frozen=True)
class Costs:
    """FLOPs and bytes (read + written) of one step on one chip: the totals of formulas.step's Ledger."""
    flops: int
    bytes: int


# ==============================================================================================================
# The per-sequence sums, as arrays (n, p: (m,) int64 for the step's m sequences)

def visible_pairs(n: np.ndarray, p: np.ndarray, W: int | None) -> np.ndarray:
    """(m,) Σ over v = p+1 .. p+n of min(v, W): the keys each query of the chunk sees, summed."""
    last = p + n
    if W is None:
        return (p + 1 + last) * n // 2
    inside = np.clip(np.minimum(last, W) - p, 0, None)            # positions v ≤ W: v itself
    return (2 * p + 1 + inside) * inside // 2 + (n - inside) * W   # positions beyond: W each


def _ceil_prefix(m: np.ndarray, tile: int) -> np.ndarray:
    """Σ over v = 1..m of ceil(v / tile): q full tiles contribute tile·(1 + ... + q), the r left over q + 1 each."""
    q, r = np.divmod(m, tile)
    return tile * q * (q + 1) // 2 + r * (q + 1)


def key_tiles(n: np.ndarray, p: np.ndarray, W: int | None, tile: int = cv.FUSED_TILE) -> np.ndarray:
    """(m,) Σ over v = p+1 .. p+n of ceil(min(v, W) / tile): the fused kernel's tiles of keys, summed."""
    last = p + n
    if W is None:
        return _ceil_prefix(last, tile) - _ceil_prefix(p, tile)
    below = _ceil_prefix(np.minimum(last, W), tile) - _ceil_prefix(np.minimum(p, W), tile)
    return below + np.clip(last - np.maximum(p, W), 0, None) * (-(-W // tile))


def keys_read(n: np.ndarray, p: np.ndarray, W: int | None) -> np.ndarray:
    """(m,) keys (and as many values) the fused kernel reads per sequence: positions 0 .. p+n−1, or from
    p − W + 1 on with a window of W (the first query's window start)."""
    last = p + n
    return last if W is None else last - np.maximum(p - W + 1, 0)


def step_features(cfg: Config, n: np.ndarray, p: np.ndarray, logits_rows: int | None) -> np.ndarray:
    """(6,) int64: 1, N, R, VIS, TILES, KEYS of a step (R = N when every row gets logits)."""
    W = cfg.sliding_window
    N = int(n.sum())
    return np.array([1, N, N if logits_rows is None else logits_rows, visible_pairs(n, p, W).sum(),
                     key_tiles(n, p, W).sum(), keys_read(n, p, W).sum()], dtype=np.int64)


def sequence_features(cfg: Config, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(4, m) int64: n, S, n·S, vis of each sequence."""
    S = p + n
    return np.stack([n, S, n * S, visible_pairs(n, p, cfg.sliding_window)])


# ==============================================================================================================
# The coefficients, read off formulas.step

@dataclass(frozen=True)
class _Op:
    """One op of the step: its FLOPs and bytes = coefficients · features, and how many calls it makes."""
    name: str                     # the record's name, layer prefix dropped ("attn.qkv", "lm_head")
    flops: tuple[int, ...]
    bytes: tuple[int, ...]
    per_layer: bool               # L calls (one per layer) or one
    only_with_select: bool        # select_last: only when logits_rows is given


def _layer_name(name: str) -> tuple[int | None, str]:
    """("layers.3.attn.qkv") -> (3, "attn.qkv"); ("lm_head") -> (None, "lm_head")."""
    if name.startswith("layers."):
        _, index, rest = name.split(".", 2)
        return int(index), rest
    return None, name


def _probe(cfg: Config, pr: dtypes.Precision, attention: str, n: int, p: int, R: int) -> dict[str, tuple[int, int]]:
    """formulas.step for one sequence of n tokens at p with R logits rows: {op name: (flops, bytes)} of layer 0
    and the ops outside the layers, after checking that every layer costs what layer 0 does."""
    ledger = formulas.step(cfg, [(1, n, p)], pr, attention, logits_rows=R)
    layers: dict[int, list[tuple[str, int, int]]] = {}
    outside: dict[str, tuple[int, int]] = {}
    for r in ledger:
        index, name = _layer_name(r.name)
        if index is None:
            outside[name] = (r.flops, r.bytes)
        else:
            layers.setdefault(index, []).append((name, r.flops, r.bytes))
    first = layers[0]
    if any(ops != first for ops in layers.values()):
        raise AssertionError("formulas.step gives layers different costs: one layer times L does not hold")
    return outside | {name: (f, b) for name, f, b in first}


def _solve(rows: list[list[int]], values: list[int]) -> list[Fraction]:
    """x with rows · x = values, exactly (Gauss-Jordan in rationals); rows square and independent."""
    k = len(rows)
    a = [[Fraction(v) for v in row] + [Fraction(values[i])] for i, row in enumerate(rows)]
    for col in range(k):
        pivot = next(r for r in range(col, k) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for r in range(k):
            if r != col and a[r][col] != 0:
                factor = a[r][col]
                a[r] = [v - factor * w for v, w in zip(a[r], a[col])]
    return [a[r][k] for r in range(k)]


def _independent(vectors: list[list[int]], size: int | None) -> list[int]:
    """Indices of the first `size` linearly independent vectors (exact rank test, in rationals); size None: of a
    maximal independent set, as many as there are."""
    chosen: list[int] = []
    basis: list[list[Fraction]] = []          # reduced rows, each with a leading 1 at its pivot column
    pivots: list[int] = []
    for i, v in enumerate(vectors):
        row = [Fraction(x) for x in v]
        for b, col in zip(basis, pivots):
            if row[col]:
                row = [x - row[col] * y for x, y in zip(row, b)]
        lead = next((c for c, x in enumerate(row) if x), None)
        if lead is None:
            continue
        row = [x / row[lead] for x in row]
        basis.append(row)
        pivots.append(lead)
        chosen.append(i)
        if len(chosen) == size:
            return chosen
    if size is None:
        return chosen
    raise AssertionError(f"the probe steps span only {len(chosen)} of {size} dimensions")


def _probe_points(cfg: Config) -> list[tuple[int, int, int]]:
    """(n, p, R) of the probe steps: short and long chunks, inside and past a tile of keys and a window."""
    T, W = cv.FUSED_TILE, cfg.sliding_window
    points = [(1, 0, 1), (2, 0, 1), (2, 0, 2), (1, 1, 1), (3, 5, 1), (1, T, 1), (5, T - 2, 2), (1, 2 * T + 3, 1),
              (7, 3 * T + 1, 3)]
    if W is not None:
        points += [(1, W + 3, 1), (4, W + T, 1), (2, W - 1, 1), (W + 5, 2, 2)]
    return points


def _coefficients(cfg: Config, pr: dtypes.Precision, attention: str) -> tuple[list[_Op], list[_Op]]:
    """(ops affine in the step's features, unfused attention ops linear in a sequence's), solved from probes."""
    W = cfg.sliding_window
    # The costs do not depend on n_ctx (only the learned position table's size does, and a step gathers its rows):
    # probe a copy with room for positions past a few tiles and past the window.
    room = 4 * cv.FUSED_TILE + 2 * (W or 0) + 16
    probe_cfg = cfg if cfg.n_ctx >= room else cfg.replace(n_ctx=room)
    points = _probe_points(cfg)
    measured = [_probe(probe_cfg, pr, attention, n, p, R) for n, p, R in points]
    arrays = [(np.array([n]), np.array([p])) for n, p, _ in points]
    x = [step_features(cfg, n, p, R).tolist() for (n, p), (_, _, R) in zip(arrays, points)]
    y = [sequence_features(cfg, n, p)[:, 0].tolist() for n, p in arrays]

    def solve(features: list[list[int]], names: list[str]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        # A sum that is a combination of the others on every step this model can run carries no information of
        # its own (a window no longer than a tile makes every query one tile: TILES = N): it gets coefficient 0.
        width = len(features[0])
        columns = [[row[j] for row in features] for j in range(width)]
        keep = _independent(columns, None)
        reduced = [[row[j] for j in keep] for row in features]
        use = _independent(reduced, len(keep))
        rows = [reduced[i] for i in use]
        out = {}
        for name in names:
            coefs = []
            for k in (0, 1):                                  # flops, bytes
                solved = _solve(rows, [measured[i][name][k] for i in use])
                if any(v.denominator != 1 for v in solved):
                    raise AssertionError(f"{name}: a cost coefficient is not an integer: {solved}")
                full = dict(zip(keep, solved))
                c = tuple(int(full.get(j, 0)) for j in range(width))
                for f, m in zip(features, measured):          # every probe, not only those solved from
                    if sum(a * b for a, b in zip(c, f)) != m[name][k]:
                        raise AssertionError(f"{name}: the cost is not affine in {STEP_FEATURES}")
                coefs.append(c)
            out[name] = (coefs[0], coefs[1])
        return out

    names = list(measured[0])
    seq_names = [nm for nm in names if nm in UNFUSED_OPS]
    step_names = [nm for nm in names if nm not in UNFUSED_OPS]
    step_ops = [_Op(nm, f, b, nm not in ("embed", "select_last", "ln_f", "lm_head"), nm == "select_last")
                for nm, (f, b) in solve(x, step_names).items()]
    seq_ops = [_Op(nm, f, b, True, False) for nm, (f, b) in solve(y, seq_names).items()] if seq_names else []
    return step_ops, seq_ops


# ==============================================================================================================
# The step cost

def _integers(arg: str, values: Any) -> np.ndarray:
    """A sequence of integers as a flat int64 array; anything else (floats, bools, strings, ints past int64) is a
    ValueError naming the argument, never a silent conversion."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise ValueError(f"{arg} must be a sequence of integers, got {str(values)[:40]!r}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{arg} holds an integer past int64")
    return arr.astype(np.int64).reshape(-1)


class StepCost:
    """A step's FLOPs, bytes and time on one chip of `hardware` (see the module docstring).

    cfg, hardware, dtype, attention   what is served, where: dtype a format name or a minitx.dtypes.Precision
                                      (its activations' peak is used); attention "fused" (default) or "unfused"
    tp                                chips the model is split over (Megatron; minitx.serving.parallel)
    mfu, mbu                          fractions of peak FLOP/s and of bandwidth reached, in (0, 1]
    """

    def __init__(self, cfg: Config, hardware: "str | Hardware", dtype: Any = "bf16", attention: str = "fused", *,
                 tp: int = 1, mfu: float = 1.0, mbu: float = 1.0):
        checks.instance("cfg", cfg, Config, "a minitx.Config")
        self.cfg = cfg
        self.hardware = get_hardware(hardware)
        self.precision = dtypes.precision(dtype)
        self.attention = checks.one_of("attention", attention, ATTENTIONS)
        self.tp = parallel.check_tp(cfg, tp)
        self.mfu = checks.number("mfu", mfu, 0.0, 1.0, low_open=True)
        self.mbu = checks.number("mbu", mbu, 0.0, 1.0, low_open=True)
        self.chip_cfg = parallel.shard(cfg, self.tp)           # one chip's share of every layer
        self.peak = self.hardware.peak(peak_dtype(self.precision)) * self.mfu
        self.bandwidth = self.hardware.bandwidth * self.mbu
        self.link = parallel.link_bandwidth(self.hardware, self.tp)
        self.allreduce_per_token = parallel.allreduce_time_per_token(cfg, self.precision, self.tp, self.hardware)
        step_ops, seq_ops = _coefficients(self.chip_cfg, self.precision, self.attention)
        self.ops = tuple(step_ops + seq_ops)
        L = cfg.n_layers
        # As arrays: ops affine in the step's features (k, 6), and the unfused attention's per sequence (u, 4).
        self._F = np.array([op.flops for op in step_ops], dtype=np.int64)
        self._M = np.array([op.bytes for op in step_ops], dtype=np.int64)
        self._calls = np.array([L if op.per_layer else 1 for op in step_ops], dtype=np.int64)
        self._with_select = np.array([op.only_with_select for op in step_ops])
        self._Fs = np.array([op.flops for op in seq_ops], dtype=np.int64).reshape(-1, len(SEQUENCE_FEATURES))
        self._Ms = np.array([op.bytes for op in seq_ops], dtype=np.int64).reshape(-1, len(SEQUENCE_FEATURES))
        self._Ff, self._Mf = self._F.astype(float), self._M.astype(float)
        self._Fsf, self._Msf = self._Fs.astype(float), self._Ms.astype(float)
        self._L = L

    # ---- the inputs ----------------------------------------------------------------------------------------------
    def _mix(self, n: Any, p: Any, logits_rows: int | None) -> tuple[np.ndarray, np.ndarray, int | None]:
        """n and p as (m,) int64 arrays, checked: n ≥ 1, p ≥ 0, p + n ≤ n_ctx, 0 ≤ logits_rows ≤ N (0: a step
        of prompt chunks none of which ends its prompt; the LM head still runs, on no rows, and reads its
        weights)."""
        n, p = _integers("n", n), _integers("p", p)
        if n.shape != p.shape or n.size == 0:
            raise ValueError(f"n and p must be non-empty and of one length, got {n.size} and {p.size}")
        if n.min() < 1 or p.min() < 0 or (p + n).max() > self.cfg.n_ctx:
            raise ValueError(f"each sequence needs n ≥ 1 new tokens at a position p ≥ 0 with p + n ≤ n_ctx="
                             f"{self.cfg.n_ctx}")
        if logits_rows is not None:
            logits_rows = checks.integer("logits_rows", logits_rows, 0, int(n.sum()))
        return n, p, logits_rows

    def blocks(self, n: Any, p: Any) -> list[tuple[int, int, int]]:
        """The step as formulas.step's blocks: one block (1, n_i, p_i) per sequence."""
        n, p, _ = self._mix(n, p, None)
        return [(1, int(a), int(b)) for a, b in zip(n, p)]

    # ---- FLOPs and bytes ----------------------------------------------------------------------------------------
    def costs(self, n: Any, p: Any, logits_rows: int | None = None) -> Costs:
        """The step's FLOPs and bytes on one chip, exact: formulas.step(chip_cfg, blocks, ...)'s totals."""
        n, p, R = self._mix(n, p, logits_rows)
        x = [int(v) for v in step_features(self.cfg, n, p, R)]
        keep = [not (sel and R is None) for sel in self._with_select]
        flops = bytes_ = 0
        for F, M, calls, k in zip(self._F.tolist(), self._M.tolist(), self._calls.tolist(), keep):
            if k:
                flops += calls * sum(a * b for a, b in zip(F, x))
                bytes_ += calls * sum(a * b for a, b in zip(M, x))
        if len(self._Fs):
            y = [int(v) for v in sequence_features(self.cfg, n, p).sum(axis=1)]
            flops += self._L * sum(sum(a * b for a, b in zip(F, y)) for F in self._Fs.tolist())
            bytes_ += self._L * sum(sum(a * b for a, b in zip(M, y)) for M in self._Ms.tolist())
        return Costs(flops, bytes_)

    # ---- time -----------------------------------------------------------------------------------------------------
    def compute_time(self, n: Any, p: Any, logits_rows: int | None = None) -> float:
        """Σ over the step's op calls of max(FLOPs / (peak·mfu), bytes / (bandwidth·mbu)), seconds: the roofline
        time of formulas.step's Ledger (minitx.serving.roofline.analyze(...).time at mfu = mbu = 1)."""
        n, p, R = self._mix(n, p, logits_rows)
        return self._compute_time(n, p, R)

    def _compute_time(self, n: np.ndarray, p: np.ndarray, R: int | None) -> float:
        x = step_features(self.cfg, n, p, R).astype(float)
        t = np.maximum(self._Ff @ x / self.peak, self._Mf @ x / self.bandwidth) * self._calls
        if R is None:
            t = t[~self._with_select]
        total = float(t.sum())
        if len(self._Fs):                 # unfused attention: each sequence's ops on their own roofline
            y = sequence_features(self.cfg, n, p).astype(float)
            total += self._L * float(np.maximum(self._Fsf @ y / self.peak, self._Msf @ y / self.bandwidth).sum())
        return total

    def allreduce_time(self, tokens: int) -> float:
        """Seconds of the step's 2·L ring all-reduces of (tokens, C) activations (0 at tp = 1)."""
        return self.allreduce_per_token * tokens

    def time(self, n: Any, p: Any, logits_rows: int | None = None) -> float:
        """The step's modelled seconds: its roofline time on one chip plus its all-reduces."""
        n, p, R = self._mix(n, p, logits_rows)
        return self._compute_time(n, p, R) + self.allreduce_per_token * int(n.sum())

    def time_unchecked(self, n: np.ndarray, p: np.ndarray, logits_rows: int | None) -> float:
        """`time` for callers that built n and p themselves from a scheduler's valid step (int64 arrays)."""
        return self._compute_time(n, p, logits_rows) + self.allreduce_per_token * int(n.sum())
