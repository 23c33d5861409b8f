"""The counting conventions of minitx, written once. Ops cite these constants; so do `minitx.formulas`.

What one FLOP is
----------------
* A multiply-add is **2 FLOPs** (one multiply, one add), as in Kaplan, PaLM, Chinchilla, nanoGPT and llm.c.
  An (N, K) @ (K, M) matmul is 2·N·K·M FLOPs and N·K·M MACs; every record also reports its MACs, so a reader
  who prefers Rush's or fvcore's "1 FMA = 1 op" can divide by two. (The exact count is N·M·(2K − 1); minitx, like
  every source it is compared with, uses the 2·N·K·M convention: accumulating from zero, as its loops do.)
* Every other scalar operation is **1 FLOP**: add, subtract, multiply, divide, compare (max), negate, and each
  call of exp, log, sqrt, tanh. Constants folded at compile time are free; scalar arithmetic done once per op call
  (Adam's bias corrections, 1/N of a mean) is not counted; everything done per element or per row is.
* A reduction of n values (a sum, a max) costs n operations: the loops accumulate from 0 (or -inf).

What attention counts
---------------------
The scores QKᵀ and the mix A·V run as BLAS matmuls over the **full** Tq × Tk rectangle, masked entries included,
so they are counted in full: 2·NH·Tq·Tk·HS FLOPs each per sequence. The softmax loops visit only the entries a
query may see (key position ≤ query position: the causal half, T(T+1)/2 per head in training), so it counts
only those. That is exactly what the code executes; `minitx.formulas` shows Kaplan's and PaLM's variants beside it.

Per-element costs of the non-matmul ops (each is what the Numba loop does; tests tally the plain loops)
----------------------------------------------------------------------------------------------------
See the constants below: (per element, per row) pairs where rows matter.

What a byte is
--------------
Each op call is one kernel: it reads each operand once and writes each output once — the traffic of an
**unfused** implementation in which every op goes to memory and back. Bytes are array sizes × itemsize of what
the op was handed, with two exceptions that follow what the code touches:
* an embedding gather reads only the rows it selects (B·T rows of C), and its backward scatter-adds into them;
* attention reads, for each block of sequences (minitx.core.batch), the keys and values those sequences hold
  up to the block's last position, (b, KV, S, HS), not the cache's whole preallocation; the index that says
  where they live (the store's block table, the blocks' descriptors) is bookkeeping, not counted (positions
  are: an op that reads them counts 8 bytes each).
Not counted: argument checks that guard the kernels (token ids in range, AdamW's finite-gradient check),
Gemma's (C,) temporary 1 + w (its C adds are counted, its C-element write is not): validation and scalar-sized
set-up, not the model's computation; and a paged KV store's gather of a block's keys into one array for the
unfused matmuls (minitx.core.paged_cache): it stands in for the table lookups a paged-attention kernel makes as it
loads each key, so attention is charged the bytes of the blocks in use, as the fused kernel reading the pool
through the table is.
Bytes are told apart by category: `weights` (parameters, and the RoPE cos/sin tables, read-only model constants),
`activations` (everything computed per token, token ids and positions included), `kv_cache`, `gradients`,
`optimizer_state` (Adam's m and v).

Fused attention
---------------
`minitx.core.ops.fused_attention` runs a block's attention as one kernel (FlashAttention's online softmax,
forward only): no score matrix is built, each (query, head) walks its visible keys a tile of FUSED_TILE keys at
a time, keeping a running max m, a running sum l and an (HS,) accumulator o. Its FLOPs are what its loops do,
per visible (query, key, head) entry, per tile and per (query, head) row; with vis the keys a query sees (pos + 1,
or min(pos + 1, W) with a sliding window of W) and ceil(vis / FUSED_TILE) tiles cut from its own visible range:

    per (query, head):  4·HS·vis + FUSED_PER_KEY·vis + (a·HS + b)·ceil(vis / TILE) + (c·HS + d)
                        with (a, b) = FUSED_PER_TILE, (c, d) = FUSED_PER_ROW;  MACs: 2·HS·vis

Unlike the unfused matmuls (the full rectangle, masked entries included), only the visible entries are computed:
a fully masked key, or tile, is never visited and so never counted, and no tile is partly masked. The state is
rescaled on every tile, also when the max did not move, so the count depends on the shapes alone, never the data.
Bytes: **each operand counted once**, the traffic of an ideal fused kernel that reads every operand once from
memory (the score tiles live in registers and cache): reads q (N·NH·HS), the positions (8 bytes per token), both
under `activations`, and, per block of b sequences at positions p..p+n-1, each sequence's keys and values once:
positions max(0, p − W + 1)..p + n − 1 (0..p + n − 1 without a window), 2·b·KV·count·HS·itemsize under the
store's category; writes the output (N, NH·HS) once, heads side by side (no merge op). The block table and block
descriptors are bookkeeping, as above. The kernel's own scratch (one sequence's keys of one kv head, transposed,
reused by every query of the group: the GPU kernel's shared-memory tile) is not memory traffic.
Training keeps the unfused path: its backward needs the probabilities the fused forward never stores.
"""

# Norms, per row of C elements. LayerNorm forward: mean (C adds, 1 div), variance ((sub, mul, add)·C, 1 div),
# rstd = 1/sqrt(var + eps) (3), out = (x - mean)·rstd·w + b (4·C).
LAYERNORM_FWD = (8, 5)
# LayerNorm backward: two passes over the row (see ops/norms.py): 6·C + 2, then 10·C.
LAYERNORM_BWD = (16, 2)
# RMSNorm forward: sum of squares (2·C), rstd = 1/sqrt(ss/C + eps) (4), out = x·rstd·w (2·C).
RMSNORM_FWD = (4, 4)
# RMSNorm backward: s = Σ dout·w·x (3·C), s/C (1), then per element 8.
RMSNORM_BWD = (11, 1)
# Norm backward inside a block also adds the gradient arriving along the residual stream: 1 per element.
RESIDUAL_GRAD_ADD = 1
# Gemma's (1 + w): C adds, computed once per forward call; the backward reuses it.
NORM_UNIT_OFFSET = 1

# Activations, per element of the MLP hidden size F (for the gated MLP, per element of the product).
# GELU (ops/activations.py): t = tanh(k·(x³·c + x)) (5 + 1), y = 0.5·x·(1 + t) (3). Backward: t (6),
# 0.5·(1 + t) (2), 1 − t² (2), the derivative (7), ·dout (1). A tanh is 1 FLOP however it is evaluated: a float32
# model uses a rational approximation the compiler can vectorise, a float64 model libm's tanh.
GELU_FWD = 9
GELU_BWD = 18
GEGLU_FWD = 10      # gelu(gate) · up
GEGLU_BWD = 21
SWIGLU_FWD = 5      # gate / (1 + exp(-gate)) · up: negate, exp, add, divide, multiply
SWIGLU_BWD = 12

# Causal softmax over the scores, per visible entry, plus one division (1/sum) per row.
SOFTMAX_FWD = (7, 1)  # scale and max (2), scale, subtract, exp, add (4), normalise (1)
SOFTMAX_BWD = (5, 0)  # Σ p·dp (2), scale·p·(dp − Σ) (3)

# Cross-entropy over V logits per row: max (V), Σ exp(x − max) (3·V), lse = max + log Σ (2), loss = lse − x[t]
# (1), accumulate into the mean (1). Backward: p = exp(x − lse) (2·V), ·(1/N) (V), − 1/N at the target (1).
CROSS_ENTROPY_FWD = (4, 4)
CROSS_ENTROPY_BWD = (3, 1)

# RoPE rotates pairs: x_j·cos − x_{j+HS/2}·sin: 3 per rotated element of q and k, forward and backward.
ROPE = 3
# Residual add, bias add (or bias-gradient sum), learned-position add, embedding scale, scatter-add: 1 each.
ELEMENTWISE = 1

# A quantized (int8/int4) weight is dequantized inside the matmul: one multiply by its group's scale, once per
# weight per call (the kernel reuses each dequantized tile for every row). Unpacking int4 nibbles is integer work:
# shifts and masks, not FLOPs.
DEQUANTIZE = 1

# AdamW, per parameter: decay p·(1 − lr·wd) (1), m = b1·m + (1 − b1)·g (3), v = b2·v + (1 − b2)·g² (4),
# m̂ = m/bc1 (1), v̂ = v/bc2 (1), p −= lr·m̂/(sqrt(v̂) + eps) (5).
ADAMW = 15

# Record names. Both sources name their records the same way: "embed", "layers.{i}.attn.qkv", ..., "ln_f",
# "lm_head", "loss", "adamw". One rule depends on the model: splitting q|k|v into heads is a pure copy ("split", a
# layout op) unless RoPE rotates q and k on the way ("rope").
def split_op(position: str) -> tuple[str, str]:
    """(name suffix, op kind) of the head split for positions "learned" or "rope"."""
    return ("attn.rope", "rope") if position == "rope" else ("attn.split", "layout")


# Fused attention (ops/fused_attention.py), per the loop of `_fused_fwd`:
# keys per tile: the online softmax's state is rescaled once per tile of this many visible keys.
FUSED_TILE = 64
# Per visible (query, key, head) entry, beyond the 4·HS of the two multiply-adds q·k and e·v (2·HS each):
# scale the score (1), the running max's compare (1), exp(s − m_new) (sub, exp: 2), add e into l (1).
FUSED_PER_KEY = 5
# Per tile, (per element of HS, fixed): alpha = exp(m − m_new) (sub, exp: 2), l·alpha (1), o·alpha (HS).
FUSED_PER_TILE = (1, 3)
# Per (query, head) row, (per element of HS, fixed): 1/l (1), o·(1/l) (HS). Zeroing o and m = −inf are stores.
FUSED_PER_ROW = (1, 1)
