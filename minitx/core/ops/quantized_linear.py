"""Matmul kernels for int8 / int4 weights with float16 group scales (the layout: minitx.core.quantize).

    int8_matmul(x (N, K) float32, values (K, M) int8,        scales (K/g, M) float16, out (N, M) float32)
    int4_matmul(x (N, K) float32, values (K, ⌈M/2⌉) uint8,   scales (K/g, M) float16, out (N, M) float32)

    out[n, m] = Σ_k x[n, k] · (q[k, m] · scale[k // g, m])        dequantized inside the kernel

Every weight is dequantized once per call (one multiply by its group's scale: minitx.accounting.conventions,
DEQUANTIZE) in a register, and the dequantized value feeds every row of x: no float copy of the matrix is ever
made. The decode kernels stream the packed weights as minitx.core.ops.half_linear streams 16-bit ones: the
matrix cut into blocks, one per thread (strips of output columns, and for a narrow matrix ranges of rows too,
split-K: `decode_split`, whose partial sums are added at the end), each block's rows k from the top, two groups
of four rows per pass into a float32 accumulator that stays in L1. Row ranges hold whole groups of g rows, so a
thread never shares a group's scales. int8 moves 1 byte per weight and int4 half a byte, against float32's 4: at
decode, bound by memory, that is the speed-up, as long as the dequantizing keeps up with the memory bus.
Splitting the rows of the narrow matrices (2 threads, B = 1, benchmarks/decode_precision.py's (1024, 1024) and
(2816, 1024)) measured int8 17 -> 20 and 17 -> 21 GB/s, int4 6.2 -> 7.3 and 7.2 -> 8.4 GB/s; int4 is bound by
its unpacking (about 4.7 GB/s a thread at any width), not by memory.

Per group of g rows, the thread first widens its strip of the group's scales (float16 -> float32) into a small
row s: g rows share it, so each scale is converted once per call, not per weight.

int4 unpacking, in registers. Byte [k, j] holds q[k, 2j] in its low nibble and q[k, 2j + 1] in its high one,
each a 4-bit two's-complement number in [-7, 7]. Sign-extending a nibble (values 8..15 are −8..−1) is
((b & 15) ^ 8) − 8 for the low one and ((b >> 4) ^ 8) − 8 for the high one, computed as shifts of an int8
(`_nibble`): integer work, no FLOPs. The even and odd output columns then go to two accumulators (and two rows
of scales), so every loop runs over consecutive bytes and vectorises; they are interleaved back into `out` once,
at the end.

Prefill (more than GEMV_MAX_ROWS rows of x) is compute-bound: each column tile of the matrix is dequantized into
a float32 scratch that fits the cache (`dequantize_columns`) and multiplied in BLAS, tile by tile.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .half import bits, fp16_to_f32
from .half_linear import GEMV_MAX_ROWS, MIN_STRIP, TILE_VALUES, _accumulate, add_partials, decode_split, span


@njit(cache=True, error_model="numpy", inline="always")
def _nibble(b, shift):
    # the signed 4-bit value at bit `shift` (0: low nibble, 4: high) of byte b, as a float32. The nibble is moved
    # to the top of an int8 and shifted back down arithmetically, which copies its sign bit into the four bits
    # above it: the same two's-complement sign extension as (((b >> shift) & 15) ^ 8) − 8, on an 8-bit value.
    # That matters for speed, not for the result: Numba widens integer arithmetic to int64, and the int64 form
    # made the compiler convert 4 values per instruction (64-bit lanes); from an int8 it converts 8, as for int8
    # weights.
    return np.float32(np.int8(b << (4 - shift)) >> 4)


@njit(parallel=True, cache=True, error_model="numpy")
def _int8_gemv(x, q, scales, g, PK, PM, out):
    # x (N, K) float32, q (K, M) int8, scales (K/g, M) float16 patterns (uint16), g the group size, out (N, M)
    # float32, every entry written. PK row ranges (whole groups) × PM column strips, one block per thread, as in
    # minitx.core.ops.half_linear._gemv_km: row range 0 writes out, the others `partial`, added in at the end.
    N, K = x.shape
    M = q.shape[1]
    partial = np.empty((PK - 1, N, M), dtype=np.float32)
    for c in prange(PK * PM):
        ck, cm = c // PM, c % PM
        k_start, k_stop = span(K, g, PK, ck)
        m0, m1 = span(M, 1, PM, cm)
        W = m1 - m0
        acc = np.zeros((N, W), dtype=np.float32)
        s = np.empty(W, dtype=np.float32)            # this group's scales, widened once
        tile = np.empty((4, W), dtype=np.float32)    # four dequantized rows, shared by the N rows of x
        for k0 in range(k_start, k_stop, g):
            srow = scales[k0 // g, m0:m1]
            for j in range(W):
                s[j] = fp16_to_f32(srow[j])
            k = k0
            while k < k0 + g:
                r = min(4, k0 + g - k)
                if N == 1 and k0 + g - k >= 8:
                    # decode, eight rows per pass: the four-row pass below twice, added in turn (the same sums
                    # to the bit; see minitx.core.ops.half_linear), a[j] loaded and stored once per eight rows
                    x0, x1, x2, x3 = x[0, k], x[0, k + 1], x[0, k + 2], x[0, k + 3]
                    x4, x5, x6, x7 = x[0, k + 4], x[0, k + 5], x[0, k + 6], x[0, k + 7]
                    q0, q1, q2, q3 = q[k, m0:m1], q[k + 1, m0:m1], q[k + 2, m0:m1], q[k + 3, m0:m1]
                    q4, q5, q6, q7 = q[k + 4, m0:m1], q[k + 5, m0:m1], q[k + 6, m0:m1], q[k + 7, m0:m1]
                    a = acc[0]
                    for j in range(W):
                        sj = s[j]
                        aj = a[j] + ((x0 * (np.float32(q0[j]) * sj) + x1 * (np.float32(q1[j]) * sj)) +
                                     (x2 * (np.float32(q2[j]) * sj) + x3 * (np.float32(q3[j]) * sj)))
                        a[j] = aj + ((x4 * (np.float32(q4[j]) * sj) + x5 * (np.float32(q5[j]) * sj)) +
                                     (x6 * (np.float32(q6[j]) * sj) + x7 * (np.float32(q7[j]) * sj)))
                    r = 8
                elif N == 1 and r == 4:
                    # decode: dequantize in registers (q · s, one multiply per weight) and multiply-add
                    x0, x1, x2, x3 = x[0, k], x[0, k + 1], x[0, k + 2], x[0, k + 3]
                    q0, q1, q2, q3 = q[k, m0:m1], q[k + 1, m0:m1], q[k + 2, m0:m1], q[k + 3, m0:m1]
                    a = acc[0]
                    for j in range(W):
                        sj = s[j]
                        a[j] += (x0 * (np.float32(q0[j]) * sj) + x1 * (np.float32(q1[j]) * sj)) + \
                                (x2 * (np.float32(q2[j]) * sj) + x3 * (np.float32(q3[j]) * sj))
                else:
                    for i in range(r):
                        src, dst = q[k + i, m0:m1], tile[i]
                        for j in range(W):
                            dst[j] = np.float32(src[j]) * s[j]
                    _accumulate(x, k, r, tile, acc)
                k += r
        if ck == 0:
            out[:, m0:m1] = acc
        else:
            partial[ck - 1, :, m0:m1] = acc
    add_partials(partial, out)


@njit(parallel=True, cache=True, error_model="numpy")
def _int4_gemv(x, q, scales, g, PK, PM, out):
    # x (N, K) float32, q (K, ⌈M/2⌉) uint8 (two values a byte), scales (K/g, M) float16 patterns, g, out (N, M)
    # float32, every entry written. PK row ranges (whole groups) × PM strips of bytes, one block per thread, as in
    # _int8_gemv; strip cm owns bytes j0..j1-1: columns 2·j0..2·j1-1. Row range ck > 0 leaves its two halves in
    # partial[ck − 1], interleaved as in out, added in at the end.
    N, K = x.shape
    M = out.shape[1]
    Mb = q.shape[1]
    partial = np.empty((PK - 1, N, M), dtype=np.float32)
    for c in prange(PK * PM):
        ck, cm = c // PM, c % PM
        k_start, k_stop = span(K, g, PK, ck)
        j0, j1 = span(Mb, 1, PM, cm)
        W = j1 - j0
        lo_acc = np.zeros((N, W), dtype=np.float32)  # even columns 2j
        hi_acc = np.zeros((N, W), dtype=np.float32)  # odd columns 2j + 1
        s_lo = np.empty(W, dtype=np.float32)
        s_hi = np.empty(W, dtype=np.float32)
        lo_tile = np.empty((4, W), dtype=np.float32)
        hi_tile = np.empty((4, W), dtype=np.float32)
        for k0 in range(k_start, k_stop, g):
            srow = scales[k0 // g]
            for j in range(W):
                m = 2 * (j0 + j)
                s_lo[j] = fp16_to_f32(srow[m])
                # an odd M leaves the last byte's high nibble empty (0): give it a zero scale, never read back
                s_hi[j] = fp16_to_f32(srow[m + 1]) if m + 1 < M else np.float32(0.0)
            k = k0
            while k < k0 + g:
                r = min(4, k0 + g - k)
                if N == 1 and k0 + g - k >= 8:
                    # eight rows per pass, as in _int8_gemv: two groups of four, added in turn
                    x0, x1, x2, x3 = x[0, k], x[0, k + 1], x[0, k + 2], x[0, k + 3]
                    x4, x5, x6, x7 = x[0, k + 4], x[0, k + 5], x[0, k + 6], x[0, k + 7]
                    b0, b1, b2, b3 = q[k, j0:j1], q[k + 1, j0:j1], q[k + 2, j0:j1], q[k + 3, j0:j1]
                    b4, b5, b6, b7 = q[k + 4, j0:j1], q[k + 5, j0:j1], q[k + 6, j0:j1], q[k + 7, j0:j1]
                    lo, hi = lo_acc[0], hi_acc[0]
                    for j in range(W):
                        sl, sh = s_lo[j], s_hi[j]
                        lj = lo[j] + ((x0 * (_nibble(b0[j], 0) * sl) + x1 * (_nibble(b1[j], 0) * sl)) +
                                      (x2 * (_nibble(b2[j], 0) * sl) + x3 * (_nibble(b3[j], 0) * sl)))
                        lo[j] = lj + ((x4 * (_nibble(b4[j], 0) * sl) + x5 * (_nibble(b5[j], 0) * sl)) +
                                      (x6 * (_nibble(b6[j], 0) * sl) + x7 * (_nibble(b7[j], 0) * sl)))
                        hj = hi[j] + ((x0 * (_nibble(b0[j], 4) * sh) + x1 * (_nibble(b1[j], 4) * sh)) +
                                      (x2 * (_nibble(b2[j], 4) * sh) + x3 * (_nibble(b3[j], 4) * sh)))
                        hi[j] = hj + ((x4 * (_nibble(b4[j], 4) * sh) + x5 * (_nibble(b5[j], 4) * sh)) +
                                      (x6 * (_nibble(b6[j], 4) * sh) + x7 * (_nibble(b7[j], 4) * sh)))
                    r = 8
                elif N == 1 and r == 4:
                    x0, x1, x2, x3 = x[0, k], x[0, k + 1], x[0, k + 2], x[0, k + 3]
                    b0, b1, b2, b3 = q[k, j0:j1], q[k + 1, j0:j1], q[k + 2, j0:j1], q[k + 3, j0:j1]
                    lo, hi = lo_acc[0], hi_acc[0]
                    for j in range(W):
                        sl, sh = s_lo[j], s_hi[j]
                        lo[j] += (x0 * (_nibble(b0[j], 0) * sl) + x1 * (_nibble(b1[j], 0) * sl)) + \
                                 (x2 * (_nibble(b2[j], 0) * sl) + x3 * (_nibble(b3[j], 0) * sl))
                        hi[j] += (x0 * (_nibble(b0[j], 4) * sh) + x1 * (_nibble(b1[j], 4) * sh)) + \
                                 (x2 * (_nibble(b2[j], 4) * sh) + x3 * (_nibble(b3[j], 4) * sh))
                else:
                    for i in range(r):
                        src = q[k + i, j0:j1]
                        for j in range(W):
                            lo_tile[i, j] = _nibble(src[j], 0) * s_lo[j]
                            hi_tile[i, j] = _nibble(src[j], 4) * s_hi[j]
                    _accumulate(x, k, r, lo_tile, lo_acc)
                    _accumulate(x, k, r, hi_tile, hi_acc)
                k += r
        # interleave the two halves back: column 2j from the low nibbles, 2j + 1 from the high ones
        dst = out if ck == 0 else partial[ck - 1]
        for n in range(N):
            for j in range(W):
                m = 2 * (j0 + j)
                dst[n, m] = lo_acc[n, j]
                if m + 1 < M:
                    dst[n, m + 1] = hi_acc[n, j]
    add_partials(partial, out)


@njit(cache=True, error_model="numpy")
def _dequantize_columns(q, scales, g, int4, m0, m1, tile):
    # q and scales as above, columns m0..m1-1 (m0 even for int4), tile (K, m1 − m0) float32 out: q · scale.
    K = q.shape[0]
    for k in range(K):
        srow = scales[k // g]
        for j in range(m1 - m0):
            m = m0 + j
            v = _nibble(q[k, m // 2], 4 * (m % 2)) if int4 else np.float32(q[k, m])
            tile[k, j] = v * fp16_to_f32(srow[m])


def dequantize_columns(values: np.ndarray, scales: np.ndarray, fmt: str, m0: int, m1: int) -> np.ndarray:
    """(K, m1 − m0) float32: columns m0..m1-1 of the matrix values · scales stand for (m0 even for int4)."""
    K = values.shape[0]
    tile = np.empty((K, m1 - m0), dtype=np.float32)
    _dequantize_columns(values, bits(scales), K // scales.shape[0], fmt == "int4", m0, m1, tile)
    return tile


def quantized_gemm(x: np.ndarray, values: np.ndarray, scales: np.ndarray, fmt: str, out: np.ndarray) -> None:
    """out (N, M) float32 = x (N, K) float32 @ the matrix (values, scales) in `fmt` ("int8" or "int4")."""
    N, K = x.shape
    M = out.shape[1]
    g = K // scales.shape[0]
    if N <= GEMV_MAX_ROWS:
        if fmt == "int8":
            _int8_gemv(x, values, bits(scales), g, *decode_split(K, M, g), out)
        else:
            _int4_gemv(x, values, bits(scales), g, *decode_split(K, values.shape[1], g, 2), out)
        return
    step = max(MIN_STRIP, TILE_VALUES // max(K, 1))
    step += step % 2                                  # int4 tiles start on a byte boundary: even columns
    for m0 in range(0, M, step):
        m1 = min(M, m0 + step)
        out[:, m0:m1] = x @ dequantize_columns(values, scales, fmt, m0, m1)
