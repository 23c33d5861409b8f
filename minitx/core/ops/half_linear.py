"""Matmul kernels for weights stored in 16 bits (bfloat16, float16): out = x @ w, accumulated in float32.

    half_matmul(x (N, K), w (K, M) 16-bit, b (M,) or None, out (N, M))       a linear layer
    half_matmul(x (N, K), w (M, K) 16-bit, None, out (N, M), transposed=True) the LM head, x @ wᵀ

Why a kernel of our own. NumPy's BLAS multiplies float32 and float64 only; handing it a bfloat16 matrix would
mean widening the whole matrix to float32 first, and then every step reads 2 bytes per weight, writes 4, and
reads those 4 again: more traffic than the float32 model it was meant to beat. Decode (a few rows of x) is a
matrix-vector product: two FLOPs per weight, and every weight read once. It is bound by how fast the weights
arrive from memory, so the kernel's one job is to stream the 16-bit weights past the cores at full bandwidth
and widen each in a register, never in memory.

How the decode kernel streams (`_gemv_km`, weights stored (K, M): row k holds the M outputs' weights of input
k). The M output columns are cut into strips, one per thread (`prange`; narrow matrices: see below): thread c
owns columns m0..m1 and walks every row k from top to bottom, reading w[k, m0:m1], a contiguous run of
(m1 − m0)·2 bytes, and adding x[k] · w[k, j] into its own accumulator row acc[j] (float32, small enough to stay
in L1). Strips share nothing, so there is no reduction across them, and each output is one sum over k in order.
Four rows at a time: acc is loaded and stored once per four rows instead of once per row, and the four products
are independent, so the inner loop is a straight line of conversions and multiply-adds over consecutive j that
the compiler vectorises (16 float32 lanes with AVX-512). Conversion is integer work (a shift for bfloat16): no
FLOPs. Each pass takes two such groups of four rows, added in turn: the same sums, but eight rows of weights
stream at once and acc moves half as often (measured 12-18% faster on this model's matrices, the narrow ones
most).

Why split the rows (K) too. A narrow matrix cut into column strips gives each thread short rows: M = 1024
outputs over 2 threads is 512 columns, 1 KB of bfloat16 per row, and eight such rows in flight at once: eight
short streams, which a core's prefetchers follow poorly (one thread of this kernel measured 8-10 GB/s on rows
of 1024 bfloat16 values, 21-22 GB/s on rows of 2048 or 4096). So the decode kernels cut the work both ways
(`decode_split`): column strips of at least WIDE_STRIP columns, and the threads left over take a range of rows
each (split-K): the thread of block (ck, cm) sums rows k0..k1-1 of its strip's columns, long rows read top to
bottom. Each range leaves a partial sum of every output: range 0 writes its partials into `out`, the others
into a small (PK − 1, N, M) scratch, added into `out` once, in order, at the end (N·M adds per extra range,
nothing next to the K·M weights streamed). The price: an output is no longer one sum over k in order but PK
sums added together, the same float32 products in another order, so it moves within float32's rounding of the
unsplit sum (tests/test_step_overhead.py bounds it) and depends on the thread count. Ranges start on multiples
of eight rows (of the group size for quantized weights), so a decode row still adds exactly what a batched row
adds. Measured (benchmarks/decode_precision.py's matrices, 2 threads, B = 1): bfloat16 22 -> 30 GB/s on the
(1024, 1024) projection, 26 -> 30 on the (2816, 1024) down projection, 30 -> 35 on q|k|v (1024, 3072), level
on the (1024, 5632) up projection; every matrix split by rows (strips of 4096 columns or more) was as fast as
or faster than strips of 2048 on each of them, for bfloat16, int8 and int4 alike.

More than one row of x (a batch of sequences decoding together): each group of four weight rows is widened
once into a small float32 tile, then every row of x multiplies the same tile: each weight still crosses the
memory bus once per call. Past GEMV_MAX_ROWS rows (a prefill), the work is matrix-matrix and compute-bound:
column tiles of the weights are widened into a float32 scratch that fits the cache and multiplied in BLAS,
tile by tile, so no float32 copy of the whole matrix ever exists.

The LM head (`_gemv_mk`, a tied embedding stored (V, C), out = x wᵀ) reads each output's weights as one
contiguous row: a dot product per output, parallel over the outputs.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from .half import BF16, bf16_to_f32, bits, fp16_to_f32, half_kind, widen

GEMV_MAX_ROWS = 8           # up to this many rows of x: the streaming kernels; more: widened tiles through BLAS
TILE_VALUES = 1 << 18       # float32 values per widened tile on the BLAS path (1 MiB: stays in L2)
MIN_STRIP = 64              # columns per widened tile on the BLAS path at least
WIDE_STRIP = 4096           # decode: columns per thread's strip at least; threads left over split the rows
MIN_SPLIT_ROWS = 64         # decode: rows per range at least when the rows are split (fewer: not worth a range)


@njit(cache=True, inline="always")
def _widen(u, kind):
    # one 16-bit pattern -> float32; `kind` is the same for a whole call, so the compiler hoists the test
    return bf16_to_f32(u) if kind == BF16 else fp16_to_f32(u)


def decode_split(K: int, M: int, k_unit: int, m_unit: int = 1) -> tuple[int, int]:
    """(PK, PM): how the decode kernels cut a (K, M) matrix among the threads (numba.get_num_threads()): PK
    ranges of rows (in units of k_unit rows) × PM strips of columns (in units of m_unit columns), one block per
    thread. Columns first, in strips of WIDE_STRIP columns or more; threads left over split the rows, each range
    MIN_SPLIT_ROWS rows or more."""
    T = get_num_threads()
    PM = max(1, min(T, M // max(WIDE_STRIP // m_unit, 1)))
    PK = max(1, min(T // PM, K // max(MIN_SPLIT_ROWS, k_unit)))
    return PK, PM


@njit(cache=True, inline="always")
def span(n, unit, P, c):
    # part c of P of range(n), cut on multiples of `unit` (the last part takes the remainder): (start, stop)
    units = n // unit
    start = c * units // P * unit
    stop = n if c == P - 1 else (c + 1) * units // P * unit
    return start, stop


@njit(cache=True, error_model="numpy")
def add_partials(partial, out):
    # out (N, M) += partial[0] + partial[1] + ... (PK − 1, N, M): the split-K partial sums, added in order
    for p in range(partial.shape[0]):
        for n in range(out.shape[0]):
            o, s = out[n], partial[p, n]
            for m in range(out.shape[1]):
                o[m] += s[m]


@njit(parallel=True, cache=True, error_model="numpy")
def _gemv_km(x, w, kind, PK, PM, out):
    # x (N, K) float32, w (K, M) uint16 patterns of `kind`, out (N, M) float32, every entry written. The work is
    # cut into PK row ranges × PM column strips, one block per thread; block (ck, cm) sums rows k0..k1-1 of
    # columns m0..m1-1. Row range 0 writes its sums into out, the others into `partial`, added in at the end.
    N, K = x.shape
    M = w.shape[1]
    partial = np.empty((PK - 1, N, M), dtype=np.float32)
    for c in prange(PK * PM):
        ck, cm = c // PM, c % PM
        k0, k1 = span(K, 8, PK, ck)                  # on multiples of 8: every range starts an eight-row pass
        m0, m1 = span(M, 1, PM, cm)
        W = m1 - m0
        acc = np.zeros((N, W), dtype=np.float32)     # this block's sums: Σ_k x[n, k]·w[k, j], from zero
        tile = np.empty((4, W), dtype=np.float32)    # four widened weight rows, shared by the N rows of x
        k = k0
        while k < k1:
            r = min(4, k1 - k)
            if N == 1 and k1 - k >= 8:
                # decode, eight rows per pass: the four-row pass below twice, each group of four added into the
                # accumulator in turn (the same operations in the same order, so the same sums to the bit), with
                # a[j] loaded and stored once per eight rows and eight rows of weights streaming at once
                x0, x1, x2, x3 = x[0, k], x[0, k + 1], x[0, k + 2], x[0, k + 3]
                x4, x5, x6, x7 = x[0, k + 4], x[0, k + 5], x[0, k + 6], x[0, k + 7]
                w0, w1, w2, w3 = w[k, m0:m1], w[k + 1, m0:m1], w[k + 2, m0:m1], w[k + 3, m0:m1]
                w4, w5, w6, w7 = w[k + 4, m0:m1], w[k + 5, m0:m1], w[k + 6, m0:m1], w[k + 7, m0:m1]
                a = acc[0]
                if kind == BF16:
                    for j in range(W):
                        aj = a[j] + ((x0 * bf16_to_f32(w0[j]) + x1 * bf16_to_f32(w1[j])) +
                                     (x2 * bf16_to_f32(w2[j]) + x3 * bf16_to_f32(w3[j])))
                        a[j] = aj + ((x4 * bf16_to_f32(w4[j]) + x5 * bf16_to_f32(w5[j])) +
                                     (x6 * bf16_to_f32(w6[j]) + x7 * bf16_to_f32(w7[j])))
                else:
                    for j in range(W):
                        aj = a[j] + ((x0 * fp16_to_f32(w0[j]) + x1 * fp16_to_f32(w1[j])) +
                                     (x2 * fp16_to_f32(w2[j]) + x3 * fp16_to_f32(w3[j])))
                        a[j] = aj + ((x4 * fp16_to_f32(w4[j]) + x5 * fp16_to_f32(w5[j])) +
                                     (x6 * fp16_to_f32(w6[j]) + x7 * fp16_to_f32(w7[j])))
                r = 8
            elif N == 1 and r == 4:
                # decode: widen in registers, four rows per pass, each weight read once
                x0, x1, x2, x3 = x[0, k], x[0, k + 1], x[0, k + 2], x[0, k + 3]
                w0, w1, w2, w3 = w[k, m0:m1], w[k + 1, m0:m1], w[k + 2, m0:m1], w[k + 3, m0:m1]
                a = acc[0]
                if kind == BF16:        # the format tested once per pass, outside the loop it would slow down
                    for j in range(W):
                        a[j] += (x0 * bf16_to_f32(w0[j]) + x1 * bf16_to_f32(w1[j])) + \
                                (x2 * bf16_to_f32(w2[j]) + x3 * bf16_to_f32(w3[j]))
                else:
                    for j in range(W):
                        a[j] += (x0 * fp16_to_f32(w0[j]) + x1 * fp16_to_f32(w1[j])) + \
                                (x2 * fp16_to_f32(w2[j]) + x3 * fp16_to_f32(w3[j]))
            else:
                # several rows of x (or the last few rows of w): widen once, then every row of x uses the tile
                for i in range(r):
                    src, dst = w[k + i, m0:m1], tile[i]
                    for j in range(W):
                        dst[j] = _widen(src[j], kind)
                _accumulate(x, k, r, tile, acc)
            k += r
        if ck == 0:
            out[:, m0:m1] = acc
        else:
            partial[ck - 1, :, m0:m1] = acc
    add_partials(partial, out)


@njit(cache=True, error_model="numpy", inline="always")
def _accumulate(x, k, r, tile, acc):
    # acc (N, W) += x[:, k:k+r] (N, r) @ tile[:r] (r, W): the r rows' products for every row of x, in four-row
    # passes as in the decode loop (or one row at a time for a short remainder)
    N, W = acc.shape
    for n in range(N):
        a = acc[n]
        if r == 4:
            x0, x1, x2, x3 = x[n, k], x[n, k + 1], x[n, k + 2], x[n, k + 3]
            t0, t1, t2, t3 = tile[0], tile[1], tile[2], tile[3]
            for j in range(W):
                a[j] += (x0 * t0[j] + x1 * t1[j]) + (x2 * t2[j] + x3 * t3[j])
        else:
            for i in range(r):
                xi, t = x[n, k + i], tile[i]
                for j in range(W):
                    a[j] += xi * t[j]


@njit(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _gemv_mk(x, w, kind, out):
    # x (N, K) float32, w (M, K) uint16 patterns, out (N, M) float32: out[n, m] = Σ_k x[n, k]·w[m, k].
    # Row m of w is output m's K weights, contiguous: one dot product per output, the outputs split over the
    # threads. "reassoc" lets the compiler keep several partial sums of the dot product in vector lanes and add
    # them at the end (the same FLOPs, the additions in another order).
    N, K = x.shape
    M = w.shape[0]
    for m in prange(M):
        row = w[m]
        for n in range(N):
            xn = x[n]
            s = np.float32(0.0)
            for k in range(K):
                s += xn[k] * _widen(row[k], kind)
            out[n, m] = s


def half_matmul(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray,
                transposed: bool = False) -> None:
    """out (N, M) = x (N, K) @ w (+ b), w stored in bfloat16 or float16: (K, M), or (M, K) when transposed.
    Accumulates in float32 and rounds once into `out` (any float dtype)."""
    kind = half_kind(w.dtype)
    if kind is None:
        raise TypeError(f"half_matmul multiplies bfloat16/float16 weights, got {w.dtype}")
    N, K = x.shape
    M, K_w = w.shape if transposed else w.shape[::-1]
    if K_w != K or out.shape != (N, M) or (b is not None and b.shape != (M,)):
        raise ValueError(f"half_matmul: x {x.shape}, w {w.shape} (transposed={transposed}), out {out.shape}"
                         f"{'' if b is None else f', b {b.shape}'} do not fit (N, K) @ (K, M) -> (N, M)")
    x32 = np.ascontiguousarray(widen(x), dtype=np.float32)
    out32 = out if out.dtype == np.float32 and out.flags.c_contiguous else np.empty(out.shape, np.float32)
    if N <= GEMV_MAX_ROWS:
        if transposed:
            _gemv_mk(x32, bits(np.ascontiguousarray(w)), kind, out32)
        else:
            _gemv_km(x32, bits(np.ascontiguousarray(w)), kind, *decode_split(K, M, 8), out32)
    else:
        step = max(MIN_STRIP, TILE_VALUES // max(K, 1))
        for m0 in range(0, M, step):
            m1 = min(M, m0 + step)
            tile = (w[m0:m1].T if transposed else w[:, m0:m1]).astype(np.float32)     # (K, m1 − m0) widened
            out32[:, m0:m1] = x32 @ tile
    if b is not None:
        out32 += widen(b)
    if out32 is not out:
        out[...] = out32                       # one rounding per output, to nearest even
