"""Closed-form cost of a transformer: parameters, FLOPs, MACs, bytes and memory from a `Config` and (B, T) alone.

This is the second source of every number minitx prints. The ops record their cost from the arrays they are
handed while the model runs (`minitx.count()`); this module derives the same quantities by algebra on the
config's sizes, without building a model, allocating an array or running a kernel. It imports the Config, the
conventions (the shared per-element constants) and the Ledger type both sources write, never the params, the
model, the ops or the counters, so the tests' exact equality `counted == formula` compares two independent
derivations.

Contents
    parameters   num_params, param_breakdown, non_embedding_params, matmul_params
    compute      forward_pass, training_step (what `loss_and_grads` + `AdamW.step` record), prefill,
                 decode_step, recompute_step (the KV-cached decoder's phases): each a Ledger of Records, one
                 per op call, in call order, so `.by("name")`, `.filter(...)`, `.table()` work as on a count
    memory       param_bytes, grad_bytes, adam_state_bytes, saved_activation_bytes, training_memory,
                 inference_memory, activation_sizes, kv_cache_bytes, kv_bytes_per_token, paged_kv_bytes
    literature   approx_params_12Ld2, approx_forward_flops_2P, approx_training_flops_6P, attention_flops_kaplan,
                 attention_flops_palm, palm_training_flops_per_token, mixed_precision_training_bytes

Notation (the dimension legend of `minitx/core/ops/__init__.py`; docs/notation.md maps it to the literature's):
    B batch, T tokens per sequence, N = B·T rows, C d_model, V vocabulary, L layers, NH query heads,
    KV key/value heads, HS head size, Q = NH·HS, QKV = (NH + 2·KV)·HS, F MLP hidden size,
    U = F (standard MLP) or 2F (gated: [gate | up] from one matmul), S keys attended to, s = itemsize.

Conventions (minitx.conventions): 2 FLOPs per multiply-add; scores and mix are counted over the full
T × S rectangle, the softmax over the visible (causal) entries only; each op reads every operand once and
writes every output once (an unfused implementation). Token ids and positions are int64 (8 bytes) whatever
the float dtype.

Non-goals: fused kernels, FlashAttention, tensor or pipeline parallelism, activation recomputation. The
literature's approximations at the bottom are there to be compared with the exact counts, not used for them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..core.config import Config
from ..dtypes import Precision, itemsize, precision
from . import conventions as cv
from .ledger import Ledger, Record, make

# Token ids, positions and the prefill's row indices are np.int64 in the model (minitx.core.batch).
ID_BYTES = 8


# ==============================================================================================================
# Parameters

def _dims(cfg: Config) -> tuple[int, ...]:
    """(C, V, L, NH, KV, HS, F, Q, QKV, U) of `cfg`."""
    _require_config(cfg)
    C, V, L = cfg.d_model, cfg.vocab_size, cfg.n_layers
    NH, KV, HS, F = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    Q = NH * HS                          # query width (= C unless head_dim is set freely, as in Gemma 7B)
    QKV = (NH + 2 * KV) * HS             # the fused q|k|v projection's width
    U = 2 * F if cfg.mlp == "gated" else F
    return C, V, L, NH, KV, HS, F, Q, QKV, U


def param_breakdown(cfg: Config) -> dict[str, int]:
    """Parameters per part: embedding (wte + wpe), attention, mlp, norm, lm_head (0 when tied), total.

    Per layer, with b = 1 if cfg.bias else 0 and n = 2 (LayerNorm: w, b) or 1 (RMSNorm: w):
        attention  C·QKV + Q·C + b·(QKV + C)        fused qkv projection, output projection, their biases
        mlp        C·U + F·C + b·(U + C)            up (gated: gate|up), down, their biases
        norm       2·n·C                            ln_1, ln_2
    plus wte V·C, wpe n_ctx·C (learned positions only), ln_f n·C, and an untied head V·C.
    """
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    b = int(cfg.bias)
    n = 2 if cfg.norm == "layernorm" else 1
    wpe = cfg.n_ctx * C if cfg.position == "learned" else 0
    parts = {
        "embedding": V * C + wpe,
        "attention": L * (C * QKV + Q * C + b * (QKV + C)),
        "mlp": L * (C * U + F * C + b * (U + C)),
        "norm": (2 * L + 1) * n * C,
        "lm_head": 0 if cfg.tie_embeddings else V * C,
    }
    parts["total"] = sum(parts.values())
    return parts


def num_params(cfg: Config) -> int:
    """Every stored parameter, each counted once (a tied head is wte itself, not a second copy).

    GPT-2 family:  V·C + n_ctx·C + L·(12·C² + 13·C) + 2·C     (4× MLP, biases, LayerNorm)
    Llama family:  V·C·(1 or 2) + L·(C·(NH+2·KV)·HS + NH·HS·C + 3·C·F + 2·C) + C
    (docs/formulas.md, "Parameters")
    """
    return param_breakdown(cfg)["total"]


def non_embedding_params(cfg: Config) -> int:
    """Total minus the vocabulary tables: the token table wte, the position table wpe, and an untied LM head.

    How this relates to the usual "N":
    * Kaplan et al.'s N also leaves out the embedding and the unembedding, but it is the idealised
      2·d·L·(2·d_attn + d_ff), with no biases and no norms; this count keeps biases and norms (ln_f included).
      For a GPT-2 it is Kaplan's N plus L·13·C + 2·C.
    * nanoGPT's `get_num_params(non_embedding=True)` subtracts only wpe and keeps the tied wte, because it
      serves as the LM head's weights. For tied models, nanoGPT's number = this + V·C.
    * Gemma's report calls 1,981,884,416 the 2B model's non-embedding count: this function's value.
    """
    parts = param_breakdown(cfg)
    return parts["total"] - parts["embedding"] - parts["lm_head"]


def matmul_params(cfg: Config) -> int:
    """The weights that take part in a matmul: every linear layer's w and the LM head (wte when tied, counted
    once). Not norms, biases, wpe, nor the embedding lookup, which is a gather. A forward pass spends exactly
    2 FLOPs per matmul parameter per token on them: 2·matmul_params·B·T (+ attention's scores and mix)."""
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    return L * (C * QKV + Q * C + C * U + F * C) + V * C


# ==============================================================================================================
# The cost of one op call

# All formulas return Records made by `ledger.make`, exactly as the ops' `record` calls make them.
_cost = make


# ---- per-op formulas, one pair per op in minitx/core/ops, each reading the same shapes the op is handed -----
# s is the itemsize. N is the number of rows an op sees.

def _embed_fwd(cfg: Config, N: int, s: int) -> Record:
    C = cfg.d_model
    learned = int(cfg.position == "learned")
    scale = int(cfg.embed_scale)
    return _cost("embed", "embedding",
                 flops=cv.ELEMENTWISE * (learned + scale) * N * C,   # + wpe row, · √C: 1 per element each
                 reads=(("activations", ID_BYTES * N * (1 + learned)),  # token ids (+ positions)
                        ("weights", N * C * s * (1 + learned))),        # only the N selected rows
                 writes=(("activations", N * C * s),))


def _embed_bwd(cfg: Config, B: int, T: int, s: int) -> Record:
    C, V = cfg.d_model, cfg.vocab_size
    learned = int(cfg.position == "learned")
    tables = 1 + learned
    # dwte is zeroed here only when untied (tied: the head's backward already wrote its share); dwpe always.
    zeroed = (0 if cfg.tie_embeddings else V * C * s) + learned * cfg.n_ctx * C * s
    return _cost("embed", "embedding",
                 flops=cv.ELEMENTWISE * B * T * C * (tables + int(cfg.embed_scale)),  # scatter-adds (+ · √C)
                 reads=(("activations", B * T * C * s + ID_BYTES * B * T * tables),  # dout, ids (+ positions)
                        ("gradients", B * T * C * s * tables)),                     # the rows added into
                 writes=(("gradients", B * T * C * s * tables + zeroed),))


def _norm_fwd(cfg: Config, name: str, N: int, s: int) -> Record:
    C = cfg.d_model
    ln = cfg.norm == "layernorm"
    per_elem, per_row = cv.LAYERNORM_FWD if ln else cv.RMSNORM_FWD
    stats = 2 if ln else 1                                           # mean and rstd, or rstd: (N,) each
    return _cost(name, "norm",
                 flops=N * (per_elem * C + per_row) + (cv.NORM_UNIT_OFFSET * C if cfg.norm_unit_offset else 0),
                 reads=(("activations", N * C * s), ("weights", (2 if ln else 1) * C * s)),   # x; w (and b)
                 writes=(("activations", N * C * s + stats * N * s),))                        # out + stats


def _norm_bwd(cfg: Config, name: str, N: int, s: int, residual: bool) -> Record:
    C = cfg.d_model
    ln = cfg.norm == "layernorm"
    per_elem, per_row = cv.LAYERNORM_BWD if ln else cv.RMSNORM_BWD
    stats = 2 if ln else 1
    flops = N * (per_elem * C + per_row)
    flops += cv.RESIDUAL_GRAD_ADD * N * C if residual else 0    # inside blocks the skip's gradient joins here
    # Gemma's (1 + w) was computed once in the forward; the backward reuses it (no FLOPs here).
    # reads dout, x, the saved stats, and (in blocks) the residual gradient; the scale actually applied (C,)
    acts = (2 + int(residual)) * N * C * s + stats * N * s
    return _cost(name, "norm", flops,
                 reads=(("activations", acts), ("weights", C * s)),
                 writes=(("activations", N * C * s), ("gradients", (2 if ln else 1) * C * s)))   # dw (and db)


def _linear_fwd(name: str, N: int, K: int, M: int, bias: bool, s: int, pr: Precision | None = None) -> Record:
    # (N, K) @ (K, M): N·K·M multiply-adds, + N·M bias adds. With `pr` quantized, the (K, M) matrix is stored as
    # Precision.matrix_bytes says and dequantized once per call: K·M more FLOPs.
    quantized = pr is not None and pr.quantized
    w_bytes = pr.matrix_bytes(K, M) if quantized else K * M * s
    return _cost(name, "matmul", flops=2 * N * K * M + (cv.ELEMENTWISE * N * M if bias else 0)
                 + (cv.DEQUANTIZE * K * M if quantized else 0), macs=N * K * M,
                 reads=(("activations", N * K * s), ("weights", w_bytes + (M * s if bias else 0))),
                 writes=(("activations", N * M * s),))


def _linear_bwd(name: str, N: int, K: int, M: int, bias: bool, s: int) -> Record:
    # dx = dout @ wᵀ and dw = xᵀ @ dout: two matmuls the size of the forward; db sums N rows of M (N·M adds)
    return _cost(name, "matmul", flops=4 * N * K * M + (cv.ELEMENTWISE * N * M if bias else 0),
                 macs=2 * N * K * M,
                 reads=(("activations", N * M * s + N * K * s), ("weights", K * M * s)),   # dout, x; w (not b)
                 writes=(("activations", N * K * s), ("gradients", (K * M + (M if bias else 0)) * s)))


def _residual_fwd(name: str, N: int, C: int, s: int) -> Record:
    return _cost(name, "elementwise", flops=cv.ELEMENTWISE * N * C,
                 reads=(("activations", 2 * N * C * s),), writes=(("activations", N * C * s),))
# (the residual's backward copies its gradient to both branches and records nothing)


def _split_fwd(cfg: Config, i: int, N: int, s: int, skv: int, kv_cat: str) -> Record:
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    rope = cfg.position == "rope"
    suffix, kind = cv.split_op(cfg.position)
    return _cost(f"layers.{i}.{suffix}", kind,
                 flops=cv.ROPE * N * (NH + KV) * HS if rope else 0,        # q and k rotated, v copied
                 reads=(("activations", N * QKV * s + ID_BYTES * N),       # qkv, positions
                        ("weights", N * HS * s if rope else 0)),           # a cos and a sin row of HS/2 per token
                 writes=(("activations", N * Q * s),                       # q, block by block (b, NH, n, HS)
                         (kv_cat, 2 * N * KV * HS * skv)))                 # k, v written at their positions


def _split_bwd(cfg: Config, i: int, B: int, T: int, s: int) -> Record:
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    N = B * T
    rope = cfg.position == "rope"
    suffix, kind = cv.split_op(cfg.position)
    return _cost(f"layers.{i}.{suffix}", kind, flops=cv.ROPE * N * (NH + KV) * HS if rope else 0,
                 reads=(("activations", N * Q * s + 2 * N * KV * HS * s + ID_BYTES * N),   # dq, dk, dv, pos
                        ("weights", N * HS * s if rope else 0)),
                 writes=(("activations", N * QKV * s),))                                   # dqkv


def _attention_fwd(cfg: Config, i: int, B: int, T: int, p: int, s: int, skv: int, kv_cat: str) -> list[Record]:
    """scores, softmax, mix, merge for one block: B sequences of T queries at positions p..p+T-1, over the
    S = p + T keys each holds (the full rectangle; the softmax visits only each query's visible keys)."""
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    n = f"layers.{i}.attn"
    S = p + T
    rect = B * NH * T * S                      # the full scores rectangle, masked entries included
    per_entry, per_row = cv.SOFTMAX_FWD
    visible = B * _window_sum(p + 1, p + T, cfg.sliding_window)     # Σ over queries of the keys each sees
    return [
        _cost(f"{n}.scores", "attention", 2 * rect * HS, rect * HS,
              reads=(("activations", B * T * Q * s), (kv_cat, B * KV * S * HS * skv)),     # q; keys 0..S-1
              writes=(("activations", rect * s),)),
        _cost(f"{n}.softmax", "softmax", per_entry * NH * visible + per_row * B * NH * T,
              reads=(("activations", rect * s + ID_BYTES * B * T),),                        # scores, pos
              writes=(("activations", rect * s),)),
        _cost(f"{n}.mix", "attention", 2 * rect * HS, rect * HS,
              reads=(("activations", rect * s), (kv_cat, B * KV * S * HS * skv)),           # probs; values 0..S-1
              writes=(("activations", B * T * Q * s),)),
        _cost(f"{n}.merge", "layout", 0, reads=(("activations", B * T * Q * s),),
              writes=(("activations", B * T * Q * s),)),
    ]


def _window_sum(a: int, b: int, W: int | None) -> int:
    """Σ over v = a..b of min(v, W): the keys seen by queries at positions a-1..b-1 (a query at position i sees
    i + 1 keys, or the last W of them)."""
    if W is None or b <= W:
        return (a + b) * (b - a + 1) // 2
    if a > W:
        return W * (b - a + 1)
    return (a + W) * (W - a + 1) // 2 + W * (b - W)


def _ceil_sum(m: int, tile: int) -> int:
    """Σ over v = 1..m of ceil(v / tile)."""
    q, r = divmod(m, tile)
    return tile * q * (q + 1) // 2 + r * (q + 1)


def _tiles(a: int, b: int, W: int | None, tile: int) -> int:
    """Σ over v = a..b of ceil(min(v, W) / tile): the fused kernel's key tiles for queries at a-1..b-1."""
    if W is not None and b > W:
        head = _tiles(a, W, None, tile) if a <= W else 0
        return head + (b - max(a, W + 1) + 1) * -(-W // tile)
    return _ceil_sum(b, tile) - _ceil_sum(a - 1, tile)


def _fused_fwd(cfg: Config, i: int, blocks: list[tuple[int, int, int]], s: int, skv: int,
               kv_cat: str) -> Record:
    """The fused attention kernel over every block of a call: for each query and head, its visible keys only,
    walked a tile at a time (minitx.conventions, "Fused attention"); each block's keys and values read once."""
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    W, tile = cfg.sliding_window, cv.FUSED_TILE
    (tile_hs, tile_1), (row_hs, row_1) = cv.FUSED_PER_TILE, cv.FUSED_PER_ROW
    flops = macs = kv = 0
    N = 0
    for b, n, p in blocks:
        vis, tiles = b * _window_sum(p + 1, p + n, W), b * _tiles(p + 1, p + n, W, tile)
        flops += NH * ((4 * HS + cv.FUSED_PER_KEY) * vis + (tile_hs * HS + tile_1) * tiles
                       + (row_hs * HS + row_1) * b * n)
        macs += NH * 2 * HS * vis
        kv += 2 * b * KV * HS * skv * (p + n - (max(0, p - W + 1) if W else 0))   # each key and value once
        N += b * n
    return _cost(f"layers.{i}.attn.fused", "attention", flops, macs,
                 reads=(("activations", N * Q * s + ID_BYTES * N), (kv_cat, kv)),        # q, positions; K, V
                 writes=(("activations", N * Q * s),))                                    # out, heads merged


def _attention_bwd(cfg: Config, i: int, B: int, T: int, s: int) -> list[Record]:
    """merge, mix, softmax, scores backward, in that order (training: S = T, causal visible entries)."""
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    n = f"layers.{i}.attn"
    rect = B * NH * T * T
    kvb = B * KV * T * HS * s                   # one of k, v (or dk, dv)
    per_entry, per_row = cv.SOFTMAX_BWD
    return [
        _cost(f"{n}.merge", "layout", 0, reads=(("activations", B * T * Q * s),),
              writes=(("activations", B * T * Q * s),)),
        _cost(f"{n}.mix", "attention", 4 * rect * HS, 2 * rect * HS,       # dprobs = do·vᵀ, dv = pᵀ·do
              reads=(("activations", B * T * Q * s + rect * s + kvb),),    # do, probs, v
              writes=(("activations", rect * s + kvb),)),                  # dprobs, dv
        _cost(f"{n}.softmax", "softmax", per_entry * NH * B * _window_sum(1, T, cfg.sliding_window)
              + per_row * B * NH * T,
              reads=(("activations", 2 * rect * s + ID_BYTES * B * T),),   # dprobs, probs, pos
              writes=(("activations", rect * s),)),
        _cost(f"{n}.scores", "attention", 4 * rect * HS, 2 * rect * HS,    # dq = ds·k, dk = dsᵀ·q
              reads=(("activations", rect * s + B * T * Q * s + kvb),),    # dscores, q, k
              writes=(("activations", B * T * Q * s + kvb),)),             # dq, dk
    ]


def _act_fwd(cfg: Config, name: str, N: int, s: int) -> Record:
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    per = cv.GELU_FWD if cfg.mlp == "standard" else (cv.GEGLU_FWD if cfg.activation == "gelu_tanh"
                                                     else cv.SWIGLU_FWD)
    return _cost(name, "activation", per * N * F,                 # per element of the (N, F) output
                 reads=(("activations", N * U * s),), writes=(("activations", N * F * s),))


def _act_bwd(cfg: Config, name: str, N: int, s: int) -> Record:
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    per = cv.GELU_BWD if cfg.mlp == "standard" else (cv.GEGLU_BWD if cfg.activation == "gelu_tanh"
                                                     else cv.SWIGLU_BWD)
    return _cost(name, "activation", per * N * F,
                 reads=(("activations", N * F * s + N * U * s),),  # dout, the saved input u
                 writes=(("activations", N * U * s),))             # du


def _loss_fwd(N: int, V: int, s: int) -> Record:
    per_logit, per_row = cv.CROSS_ENTROPY_FWD
    return _cost("loss", "loss", N * (per_logit * V + per_row),
                 reads=(("activations", N * V * s + ID_BYTES * N),),   # logits, targets
                 writes=(("activations", N * s + s),))                 # lse per row, and the scalar loss


def _loss_bwd(N: int, V: int, s: int) -> Record:
    per_logit, per_row = cv.CROSS_ENTROPY_BWD
    return _cost("loss", "loss", N * (per_logit * V + per_row),
                 reads=(("activations", N * V * s + ID_BYTES * N + N * s),),   # logits, targets, lse
                 writes=(("activations", N * V * s),))                         # dlogits


# ==============================================================================================================
# Whole passes: the ops in the order the model calls them

def _forward_costs(cfg: Config, blocks: list[tuple[int, int, int]], pr: Precision, *, kv_cat: str,
                   attention: str = "unfused", logits_rows: int | None = None) -> list[Record]:
    """Transformer.run over blocks of (b sequences, n tokens each, first position p): N = Σ b·n tokens through
    every layer, attention block by block (unfused) or in one fused call; with logits_rows, only that many rows
    (each prompt's last) go through ln_f and the head (`select_last`)."""
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    s = itemsize(pr.activations)
    skv = itemsize(pr.kv) if kv_cat == "kv_cache" else s        # a throwaway store holds activations
    N = sum(b * n for b, n, _ in blocks)
    bias = cfg.bias
    ops = [_embed_fwd(cfg, N, s)]
    for i in range(L):
        n = f"layers.{i}"
        ops += [_norm_fwd(cfg, f"{n}.ln_1", N, s),
                _linear_fwd(f"{n}.attn.qkv", N, C, QKV, bias, s, pr),
                _split_fwd(cfg, i, N, s, skv, kv_cat)]
        if attention == "fused":
            ops.append(_fused_fwd(cfg, i, blocks, s, skv, kv_cat))
        else:
            for b, t, p in blocks:
                ops += _attention_fwd(cfg, i, b, t, p, s, skv, kv_cat)
        ops += [_linear_fwd(f"{n}.attn.proj", N, Q, C, bias, s, pr),
                _residual_fwd(f"{n}.attn.residual", N, C, s),
                _norm_fwd(cfg, f"{n}.ln_2", N, s),
                _linear_fwd(f"{n}.mlp.up", N, C, U, bias, s, pr),
                _act_fwd(cfg, f"{n}.mlp.act", N, s),
                _linear_fwd(f"{n}.mlp.down", N, F, C, bias, s, pr),
                _residual_fwd(f"{n}.mlp.residual", N, C, s)]
    rows = N
    if logits_rows is not None:
        # x[rows]: reads the selected rows and their (M,) int64 indices, writes an (M, C) copy
        rows = logits_rows
        ops.append(_cost("select_last", "layout", 0, reads=(("activations", rows * C * s + ID_BYTES * rows),),
                         writes=(("activations", rows * C * s),)))
    ops += [_norm_fwd(cfg, "ln_f", rows, s),
            _linear_fwd("lm_head", rows, C, V, False, s)]     # x @ wᵀ with w = wte (tied) or lm_head.w: no bias
    return ops


def _check_bt(cfg: Config, B: int, T: int, what: str = "T") -> None:
    _require_config(cfg)
    checks.integer("B", B)
    checks.integer(what, T)
    if T > cfg.n_ctx:
        raise ValueError(f"{what}={T} exceeds the model's context n_ctx={cfg.n_ctx} (the model refuses it too; "
                         "use cfg.replace(n_ctx=...) to describe a longer context)")


def _attention(attention: str) -> str:
    return checks.one_of("attention", attention, ("unfused", "fused"))


def forward_pass(cfg: Config, B: int, T: int, dtype="float32", phase: str = "forward",
                 attention: str = "unfused") -> Ledger:
    """What `Transformer.forward(tokens)` records for tokens (B, T): the forward with positions 0..T-1, full
    logits (B, T, V), no loss; filed under `phase`. The records in call order. `dtype`: a format name or a
    minitx.dtypes.Precision (weights, activations, KV cache)."""
    _check_bt(cfg, B, T)
    return Ledger(_forward_costs(cfg, [(B, T, 0)], precision(dtype), kv_cat="activations",
                                 attention=_attention(attention))).with_phase(phase)


def training_step(cfg: Config, B: int, T: int, dtype="float32") -> Ledger:
    """What `loss, grads = model.loss_and_grads(tokens, targets); AdamW(model).step(grads)` records: the
    forward (and the loss), the backward and AdamW, each record filed under its phase, in call order."""
    _check_bt(cfg, B, T)
    pr = precision(dtype)
    if pr.quantized or pr.kv != pr.activations:
        raise ValueError(f"training runs in one float format, not {pr}")
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    s = itemsize(pr.activations)
    N = B * T
    bias = cfg.bias
    forward = _forward_costs(cfg, [(B, T, 0)], pr, kv_cat="activations")
    forward.append(_loss_fwd(N, V, s))

    back = [_loss_bwd(N, V, s),
            _linear_bwd("lm_head", N, C, V, False, s),      # writes the head's gradient (wte's when tied)
            _norm_bwd(cfg, "ln_f", N, s, residual=False)]   # ln_f has no skip connection around it
    for i in reversed(range(L)):
        n = f"layers.{i}"
        back += [_linear_bwd(f"{n}.mlp.down", N, F, C, bias, s),
                 _act_bwd(cfg, f"{n}.mlp.act", N, s),
                 _linear_bwd(f"{n}.mlp.up", N, C, U, bias, s),
                 _norm_bwd(cfg, f"{n}.ln_2", N, s, residual=True),
                 _linear_bwd(f"{n}.attn.proj", N, Q, C, bias, s)]
        back += _attention_bwd(cfg, i, B, T, s)
        back += [_split_bwd(cfg, i, B, T, s),
                 _linear_bwd(f"{n}.attn.qkv", N, C, QKV, bias, s),
                 _norm_bwd(cfg, f"{n}.ln_1", N, s, residual=True)]
    back.append(_embed_bwd(cfg, B, T, s))

    P = num_params(cfg)
    # AdamW over the flat buffer: reads p, g, m, v; writes p, m, v. ADAMW FLOPs per parameter.
    adamw = _cost("adamw", "optimizer", cv.ADAMW * P,
                  reads=(("weights", P * s), ("gradients", P * s), ("optimizer_state", 2 * P * s)),
                  writes=(("weights", P * s), ("optimizer_state", 2 * P * s)))
    return (Ledger(forward).with_phase("forward") + Ledger(back).with_phase("backward")
            + Ledger([adamw]).with_phase("optimizer"))


def prefill(cfg: Config, B: int, T: int, dtype="float32", attention: str = "unfused") -> Ledger:
    """The "prefill" phase of the KV-cached decoder: B prompts of T tokens (positions 0..T-1) run through the
    layers with k and v written into the cache (category kv_cache, read back by attention), then each
    sequence's last row is selected (`select_last`) and only those B rows go through ln_f and the LM head.
    This is `Transformer.prefill` of B prompts of T tokens into an empty cache."""
    _check_bt(cfg, B, T)
    return step(cfg, [(B, T, 0)], dtype, attention, logits_rows=B).with_phase("prefill")


def decode_step(cfg: Config, B: int, t: int, dtype="float32", attention: str = "unfused") -> Ledger:
    """The "decode" phase: one new token per sequence at position t, with t keys already cached (every
    sequence the same length). The layers run on B rows (T = 1); the new k, v go into the cache, and
    attention reads the t + 1 keys each sequence now holds (the last W with a sliding window; the unfused
    matmuls read the whole rectangle of keys 0..t). ln_f and the head run on the B rows; no select_last.
    This is `Transformer.decode` with every cache.lengths[b] == t."""
    _require_config(cfg)
    t = checks.integer("t (the cache length before this step)", t, 0)
    _check_bt(cfg, B, t + 1, what="t + 1")
    return step(cfg, [(B, 1, t)], dtype, attention).with_phase("decode")


def step(cfg: Config, blocks, dtype="float32", attention: str = "unfused", logits_rows: int | None = None) -> Ledger:
    """One `Transformer.run` over packed tokens with a KV cache: `blocks` a list of (b, n, p), b sequences of n
    new tokens each at positions p..p+n-1 (minitx.core.batch), in the order they are packed; logits for every
    token, or for `logits_rows` of them (each prompt's last). Prefill, decode and a serving step that mixes
    prefill chunks and decode tokens are all this; its records carry no phase (`.with_phase` files them)."""
    _require_config(cfg)
    blocks = [(checks.integer("b", b), checks.integer("n", n), checks.integer("p", p, 0)) for b, n, p in blocks]
    if not blocks:
        raise ValueError("blocks is empty: a step runs at least one token")
    for b, n, p in blocks:
        if p + n > cfg.n_ctx:
            raise ValueError(f"a block at positions {p}..{p + n - 1} passes the model's context n_ctx={cfg.n_ctx}")
    return Ledger(_forward_costs(cfg, blocks, precision(dtype), kv_cat="kv_cache", attention=_attention(attention),
                                 logits_rows=logits_rows))


def recompute_step(cfg: Config, B: int, t: int, dtype="float32") -> Ledger:
    """The cache-free decoder's step at the same point: a full forward over the t + 1 tokens so far."""
    return forward_pass(cfg, B, t + 1, dtype, phase="decode")


# ==============================================================================================================
# Memory (bytes)

def param_bytes(cfg: Config, dtype="float32") -> int:
    """The weights as stored: P·itemsize, or, with int8/int4 weights (a minitx.dtypes.Precision), the layers'
    matrices quantized (values and scales) and every other parameter in the activations' format."""
    pr = precision(dtype)
    s = itemsize(pr.activations)
    if not pr.quantized:
        return num_params(cfg) * s
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    shapes = ((C, QKV), (Q, C), (C, U), (F, C))
    matrices = L * sum(K * M for K, M in shapes)
    return (num_params(cfg) - matrices) * s + L * sum(pr.matrix_bytes(K, M) for K, M in shapes)


def grad_bytes(cfg: Config, dtype="float32") -> int:
    """The flat gradient buffer, laid out as the parameters: P·itemsize."""
    return num_params(cfg) * itemsize(dtype)


def adam_state_bytes(cfg: Config, dtype="float32") -> int:
    """Adam's m and v: two more copies of the parameters, 2·P·itemsize."""
    return 2 * num_params(cfg) * itemsize(dtype)


def saved_activation_breakdown(cfg: Config, B: int, T: int, dtype="float32",
                               include_loss: bool = True) -> dict[str, int]:
    """Bytes of the distinct arrays a training forward keeps for the backward, by where they are kept.

    Read off the caches (model.LayerCaches and each op's cache NamedTuple). An array kept by several caches
    counts once: the residual-stream array that leaves block l is block l+1's ln_1 input (ln_f's for the last
    block); the int64 positions are shared by the embedding (learned positions), every split and every softmax;
    the probabilities by the softmax and the mix. Parameter views (w, wte as the tied head) are not activations,
    nor are the RoPE cos/sin tables (model constants). Gemma's norms keep the scale they applied, (1 + w),
    a fresh (C,) array per norm: counted, under "norm_scales", since the forward did allocate and keep it.
    Not kept: the qkv output (split copies it into q, k, v), the raw scores (the backward needs only the
    probabilities), the attention projection's and the down projection's outputs (consumed by the residual
    adds)."""
    _check_bt(cfg, B, T)
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    s = itemsize(dtype)
    N = B * T
    stats = (2 if cfg.norm == "layernorm" else 1) * N * s         # mean and rstd, or rstd, per norm
    per_layer = (N * C * s              # block input x: ln_1's x (the embedding's or the previous block's output)
                 + stats                # ln_1 statistics
                 + N * C * s            # ln_1 output h: the qkv linear's x
                 + N * Q * s            # q (B, NH, T, HS): the scores' q
                 + 2 * B * KV * T * HS * s   # k and v (B, KV, T, HS): the scores' k, the mix's v
                 + B * NH * T * T * s   # probs (B, NH, T, T): softmax output, the mix's p
                 + N * Q * s            # merged heads (B, T, Q): the output projection's x
                 + N * C * s            # x after the attention residual: ln_2's x
                 + stats                # ln_2 statistics
                 + N * C * s            # ln_2 output: the up projection's x
                 + N * U * s            # up output u: the activation's input
                 + N * F * s)           # activation output: the down projection's x
    parts = {
        "ids": ID_BYTES * N + ID_BYTES * N,   # token ids (embedding) and the shared positions array
        "layers": L * per_layer,
        "ln_f": N * C * s + stats,            # the last block's output (ln_f's x) and ln_f's statistics
        "lm_head": N * C * s,                 # ln_f's output: the head's x
        "norm_scales": (2 * L + 1) * C * s if cfg.norm_unit_offset else 0,
    }
    if include_loss:
        # loss_and_grads keeps the loss cache too: logits (N, V), targets (N,) int64, lse (N,)
        parts["loss"] = N * V * s + ID_BYTES * N + N * s
    parts["total"] = sum(parts.values())
    return parts


def saved_activation_bytes(cfg: Config, B: int, T: int, dtype="float32", include_loss: bool = True) -> int:
    """Bytes a training step (`loss_and_grads`) keeps from its forward for its backward (see
    saved_activation_breakdown): what `Transformer._forward(tokens, pos, keep=True)` returns, and the loss's
    cache, the logits (N, V), the int64 targets and the per-row lse. include_loss=False leaves the loss's
    cache out. `minitx.memory.measure_saved_activations` measures the same number on a real forward.

    Per layer this is (4·C + 2·Q + 2·KV·HS + U + F)·N·s + NH·T²·B·s + the norms' statistics. For GPT-2
    shapes (Q = KV·HS = C, U = F = 4·C) at 2 bytes that is 32·sbh + 2·a·s²·b in Korthikanti et al.'s
    notation: their 34·sbh + 5·a·s²·b less what dropout adds (two sbh masks, an as²b mask and the 2·as²b
    dropout output). They leave out the norms' per-row statistics; minitx counts them."""
    return saved_activation_breakdown(cfg, B, T, dtype, include_loss)["total"]


def training_memory(cfg: Config, B: int, T: int, dtype="float32") -> dict[str, int]:
    """What one training step holds at the start of the backward: weights, gradients, Adam's m and v, and the
    saved activations, the loss's logits, targets and lse included (saved_activation_bytes).
    The real peak adds the backward's transient gradients."""
    parts = {"weights": param_bytes(cfg, dtype), "gradients": grad_bytes(cfg, dtype),
             "optimizer_state": adam_state_bytes(cfg, dtype),
             "activations": saved_activation_bytes(cfg, B, T, dtype)}
    parts["total"] = sum(parts.values())
    return parts


def activation_sizes(cfg: Config, B: int, T: int, dtype="float32", kv_len: int | None = None,
                     attention: str = "unfused") -> dict[str, int]:
    """Bytes of each single activation tensor a forward over (B, T) tokens produces, attending to S = kv_len
    keys (default T): the candidates for "the largest activation". Fused attention builds no score matrix."""
    _check_bt(cfg, B, T)
    C, V, L, NH, KV, HS, F, Q, QKV, U = _dims(cfg)
    S = T if kv_len is None else checks.integer("kv_len", kv_len)
    s = itemsize(precision(dtype).activations)
    N = B * T
    sizes = {"residual": N * C * s,          # (B, T, C): embedding, norms, residual adds, down projection
             "qkv": N * QKV * s,             # (B, T, (NH + 2·KV)·HS)
             "heads": N * Q * s,             # (B, NH, T, HS) q, mix output; (B, T, Q) merged
             "scores": B * NH * T * S * s,   # (B, NH, T, S) scores and probabilities
             "mlp_up": N * U * s,            # (B, T, F) or gated (B, T, 2F)
             "mlp_act": N * F * s,           # (B, T, F)
             "logits": N * V * s}            # (B, T, V)
    if _attention(attention) == "fused":
        del sizes["scores"]
    return sizes


def inference_memory(cfg: Config, B: int, T: int, dtype="float32", kv_len: int | None = None,
                     attention: str = "unfused") -> dict[str, int]:
    """Serving memory, Rush's way: the weights, the KV cache for kv_len positions (default T) per sequence, and
    the largest single activation of a forward over (B, T) tokens. An unfused forward frees each activation
    once the next op has consumed it, so only a few are alive at once: minitx's measured inference peak is
    2-3 times this largest one (minitx.memory), never the sum that training keeps. Full logits (B, T, V), as
    model.forward returns them; a prefill that keeps only the last row needs B·V instead. Fused attention keeps
    no (B, NH, T, S) score matrix, which unfused attention's largest activation often is."""
    S = T if kv_len is None else kv_len
    parts = {"weights": param_bytes(cfg, dtype), "kv_cache": kv_cache_bytes(cfg, B, S, dtype),
             "largest_activation": max(activation_sizes(cfg, B, T, dtype, kv_len, attention).values())}
    parts["total"] = sum(parts.values())
    return parts


def kv_bytes_per_token(cfg: Config, dtype="float32") -> int:
    """2 (k and v) · L · KV · HS · itemsize, in the KV cache's format: GQA-aware (Databricks, Scaling Book).
    MHA-only formulas (kipply, NVIDIA, Baseten: 2·2·L·d_model in 16-bit) assume KV·HS = d_model."""
    _require_config(cfg)
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * itemsize(precision(dtype).kv)


def kv_positions(cfg: Config, S: int, rolling: bool = False, chunk: int | None = None) -> int:
    """Positions a KVCache holds per sequence for S tokens: S, or in a rolling cache (a model with a sliding
    window of W) min(S, W + chunk − 1), chunk the most new tokens one call writes (default W: kv_cache.py)."""
    W = cfg.sliding_window
    if not rolling:
        return S
    if not W:
        raise ValueError(f"a rolling cache needs a sliding window; {cfg.name!r} has none")
    return min(S, W + (W if chunk is None else checks.integer("chunk", chunk)) - 1)


def kv_cache_bytes(cfg: Config, B: int, S: int, dtype="float32", rolling: bool = False,
                   chunk: int | None = None) -> int:
    """The cache for B sequences of S tokens: 2·L·KV·HS·(positions held)·B·itemsize (see kv_positions)."""
    S, B = checks.integer("S", S), checks.integer("B", B)
    return kv_bytes_per_token(cfg, dtype) * kv_positions(cfg, S, rolling, chunk) * B


def paged_kv_bytes(cfg: Config, lengths, block_size: int, dtype="float32", caps=None) -> dict[str, int]:
    """KV memory of sequences holding `lengths` positions each, in blocks of X = `block_size` positions (vLLM's
    paged layout; minitx.core.paged_cache), as {"used", "reserved", "waste"} bytes, with b = kv_bytes_per_token:

        used      = b · Σ length                    the positions that hold a token
        reserved  = b · Σ ceil(length / X) · X      paged: the blocks they hold (waste < X positions each)
                  = b · Σ ceil(cap / X) · X         with `caps` (contiguous: each sequence's prompt + cap,
                                                    reserved at admission)
        waste     = reserved − used

    `used` over a step's sequences, at their lengths once the step has run, is also the KV bytes the step's
    attention reads (without a sliding window): each sequence's keys and values 0..length-1, once."""
    X = checks.integer("block_size", block_size)
    lengths = [checks.integer("lengths[i]", n, 0) for n in lengths]
    per_token = kv_bytes_per_token(cfg, dtype)
    if caps is None:
        held = sum(-(-n // X) * X for n in lengths)
    else:
        caps = [checks.integer("caps[i]", c) for c in caps]
        if len(caps) != len(lengths) or any(n > c for n, c in zip(lengths, caps)):
            raise ValueError("caps must give one cap per length, each at least its length")
        held = sum(-(-c // X) * X for c in caps)
    used = per_token * sum(lengths)
    return {"used": used, "reserved": per_token * held, "waste": per_token * held - used}


# ==============================================================================================================
# The literature's approximations (docs/formulas.md, "Parameters", "FLOPs", "Training memory"), each with its
# assumptions. Compare, don't count, with them.

def approx_params_12Ld2(cfg: Config, embedding: bool = False) -> int:
    """kipply / Kaplan: 12·L·d² (+ V·d with embedding=True).

    Assumes MHA with head_dim·n_heads = d (4·d² for q, k, v, o) and an ungated 4·d MLP (8·d²), ignores biases
    and norms. Close for GPT-2 small (12·L·d² + V·d = 123,532,032 vs 124,439,808 exact); badly off for gated
    MLPs with other ratios, GQA/MQA and free head_dim: Gemma 2B gives 1.43B with the embedding, 2.51B exact.
    """
    _require_config(cfg)
    d = cfg.d_model
    return 12 * cfg.n_layers * d * d + (cfg.vocab_size * d if embedding else 0)


def approx_forward_flops_2P(cfg: Config, tokens: int, n_params: int | None = None) -> int:
    """kipply's forward ≈ 2·P FLOPs per token (Kaplan's C_fwd ≈ 2N without its attention term).

    P defaults to num_params(cfg). Kaplan uses the non-embedding N (non_embedding_params, roughly); the exact
    matmul count is 2·matmul_params per token, plus attention's 4·L·T·Q (see attention_flops_palm)."""
    P = num_params(cfg) if n_params is None else n_params
    return 2 * P * checks.integer("tokens", tokens)


def approx_training_flops_6P(cfg: Config, tokens: int, n_params: int | None = None) -> int:
    """C ≈ 6·N·D (Kaplan, Chinchilla, EleutherAI): forward 2N + backward 4N (dX and dW, each 2N) per token.

    Drops attention's context-dependent term, the non-matmul ops and the optimizer. Sources disagree on N:
    Kaplan non-embedding, nanoGPT params − wpe, llm.c all params (this default), Chinchilla all + embeddings."""
    P = num_params(cfg) if n_params is None else n_params
    return 6 * P * checks.integer("tokens", tokens)


def attention_flops_kaplan(cfg: Config, T: int) -> int:
    """Kaplan et al. 2020, Table 1: attention's forward FLOPs per token = 2·L·T·d_attn (d_attn = NH·HS).
    llm.c uses this (×3 for training: 6·L·C·T). Half of PaLM's: it matches counting only QKᵀ, or both QKᵀ and
    A·V over the causal half; the paper does not say which."""
    _require_config(cfg)
    return 2 * cfg.n_layers * checks.integer("T", T) * cfg.q_dim


def attention_flops_palm(cfg: Config, T: int) -> int:
    """PaLM / nanoGPT / Chinchilla / Scaling Book: 4·L·T·d_attn forward FLOPs per token (QKᵀ and A·V, each
    2·T·d per layer, over the full T×T). minitx's scores + mix count exactly this: 4·L·T·NH·HS per token."""
    _require_config(cfg)
    return 4 * cfg.n_layers * checks.integer("T", T) * cfg.q_dim


def palm_training_flops_per_token(cfg: Config, T: int, n_params: int | None = None) -> int:
    """PaLM App. B (and nanoGPT's estimate_mfu): 6·N + 12·L·H·Q·T training FLOPs per token, where
    12·L·H·Q·T = 3 × attention_flops_palm. N defaults to num_params; nanoGPT passes params − wpe
    (num_params − n_ctx·C for GPT-2: 855,166,464 FLOPs/token for GPT-2 small at T=1024; llm.c's
    6·N + 6·L·C·T with all params gives 803,261,952)."""
    P = num_params(cfg) if n_params is None else n_params
    return 6 * P + 3 * attention_flops_palm(cfg, T)


@dataclass(frozen=True)
class Recipe:
    """Bytes per parameter a training recipe holds: weights (all copies), gradients, Adam's m and v."""
    label: str
    weights: int
    gradients: int
    optimizer_state: int
    master_weights: int = 0

    @property
    def bytes_per_param(self) -> int:
        return self.weights + self.master_weights + self.gradients + self.optimizer_state


# The training recipes the sources give (docs/formulas.md, "Training memory"), and minitx's own.
TRAINING_RECIPES: dict[str, Recipe] = {
    "mixed": Recipe("mixed precision (EleutherAI, ZeRO): bf16 weights + bf16 grads + fp32 master copy, fp32 Adam "
                    "m and v", weights=2, gradients=2, master_weights=4, optimizer_state=8),           # 16
    "hf": Recipe("Hugging Face docs: fp16 + fp32 weights, fp32 grads, fp32 Adam m and v", weights=6, gradients=4,
                 optimizer_state=8),                                                                   # 18
    "checkpoint": Recipe("nanoGPT's checkpoint: fp32 weights + Adam m and v, no gradients (not saved)", weights=4,
                         gradients=0, optimizer_state=8),                                              # 12
    "fp32": Recipe("pure fp32 (what minitx trains in): fp32 weights, grads, Adam m and v", weights=4, gradients=4,
                   optimizer_state=8),                                                                 # 16
}


def mixed_precision_training_bytes(cfg: Config, recipe: str = "mixed") -> int:
    """Weights + gradients + optimizer state under a recipe: "mixed" 16 B/param (EleutherAI, ZeRO), "hf" 18
    (Hugging Face docs), "checkpoint" 12 (nanoGPT, fp32 + Adam, no gradients), "fp32" 16 (minitx's own: param_bytes
    + grad_bytes + adam_state_bytes in float32). Activations not included. Rush's "Param + 2·Param" (no gradient
    buffer) is 3 × param_bytes."""
    checks.one_of("recipe", recipe, TRAINING_RECIPES)
    return TRAINING_RECIPES[recipe].bytes_per_param * num_params(cfg)


def _require_config(cfg) -> None:
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a minitx.Config, got {type(cfg).__name__}")
