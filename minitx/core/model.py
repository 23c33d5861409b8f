"""The Transformer: a straight list of op calls forward, and the same list reversed backward.

    x = embed(tokens)                                   (N, C)    N tokens, one row each (minitx.core.batch)
    for each layer:
        x = x + proj(attention(split(qkv(norm_1(x)))))  pre-norm attention block
        x = x + down(act(up(norm_2(x))))                pre-norm MLP block
    logits = lm_head(norm_f(x))                         (N, V)

One entry point runs the blocks: `run(batch, kv, keep=..., logits_rows=...)`, over packed tokens, writing their
keys and values into a store (a KV cache, or a throwaway one) and keeping each op's cache for the backward when
asked. Training (`loss_and_grads`), the plain `forward`, and the decoder's `prefill` and `decode` are thin calls
of it; `_backward` calls the `_backward` of every op in exactly the reverse order. No autograd. Parameters and
gradients live in flat buffers with named views (minitx.core.params).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import checks, dtypes
from ..accounting import conventions as cv
from ..accounting.counting import counting, nbytes, phase, record
from ..measure.machine import require_memory
from .batch import TokenBatch, pack, ragged, rectangle
from .config import Config
from .kv_cache import KVCache, Scratch
from .ops.activations import activation_backward, activation_forward
from .ops.attention import (block_queries, merge_backward, merge_forward, mix_backward, mix_forward, rope_tables,
                            scores_backward, scores_forward, softmax_backward, softmax_forward, split_backward,
                            split_forward)
from .ops.embedding import embedding_backward, embedding_forward
from .ops.fused_attention import fused_attention_forward, plan_fused_attention
from .ops.linear import linear_backward, linear_forward, residual_backward, residual_forward
from .ops.loss import cross_entropy_backward, cross_entropy_forward
from .ops.norms import norm_backward, norm_forward
from .params import init_params, param_table, views
from .quantize import QuantizedWeight, quantize_into
from .shaped import empty, is_shaped, shaped

ATTENTIONS = ("unfused", "fused")
# The parameters int8/int4 weights quantize: the matrices of the layers (minitx.dtypes.Precision).
QUANTIZED_SUFFIXES = (".attn.qkv.w", ".attn.proj.w", ".mlp.up.w", ".mlp.down.w")


class LayerCaches(NamedTuple):
    """Everything one block's forward keeps for its backward, in forward order."""
    ln_1: object
    qkv: object
    split: object
    scores: object
    softmax: object
    mix: object
    proj: object
    ln_2: object
    up: object
    act: object
    down: object


class Transformer:
    """A GPT-2- or Llama-family decoder. `Transformer(cfg, seed=0, dtype="float32")`.

    model.params            name -> array view into one flat float buffer (model.flat)
    model.forward(tokens)   (B, T) int ids -> logits (B, T, V)
    model.loss_and_grads(tokens, targets) -> (mean cross-entropy, grads keyed like params)
    model.prefill(tokens, cache, lengths) / model.decode(tokens, cache): the two phases of KV-cached inference
    model.run(batch, kv)    the blocks over packed tokens: what all of the above call

    dtype "float32" or "float64" trains and runs; "bfloat16" and "float16" run inference only (weights,
    activations and KV cache stored in 16 bits, float32 arithmetic: minitx.core.ops.half); weight_dtype "int8" or
    "int4" stores the layers' matrices quantized (inference only; minitx.quantize makes one from a float model).
    Any other combination, or any model at all with shape_only=True, is counted by shape, not executed.
    """

    def __init__(self, cfg: Config, seed: int = 0, dtype: str = "float32", *, weight_dtype: str | None = None,
                 kv_dtype: str | None = None, group_size: int = 128, attention: str = "unfused",
                 shape_only: bool = False, init: bool = True):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a minitx.Config, got {type(cfg).__name__}")
        self.cfg = cfg
        self.precision = dtypes.Precision(dtype, weight_dtype, kv_dtype, group_size)
        self.attention = checks.one_of("attention", attention, ATTENTIONS)
        self.shape_only = bool(checks.instance("shape_only", shape_only, bool))
        p = self.precision
        # Executed: float64, float32, bfloat16 and float16 (weights, activations and KV cache in one format), and
        # int8/int4 weights beside any of them. A KV cache in another format is counted, not executed.
        if not shape_only and (p.activations not in dtypes.RUNNABLE or p.kv != p.activations):
            raise ValueError(f"a {p} model runs shape-only here (shape_only=True): it is counted, not executed "
                             f"(a KV cache in a format of its own has no kernels); executed: activations, weights "
                             f"and KV in one of {', '.join(dtypes.RUNNABLE)}, or int8/int4 weights beside them")
        self.dtype = dtypes.storage(p.activations)
        self.table = param_table(cfg)
        # Quantized weights (int8, int4) live beside the flat buffer, which holds every other parameter.
        matrices = {s.name for s in self.table if p.quantized and s.name.endswith(QUANTIZED_SUFFIXES)}
        flat_table = [s for s in self.table if s.name not in matrices]
        n = sum(s.size for s in flat_table)
        if shape_only:
            self.flat = shaped((n,), self.dtype)
        else:
            stored = n * self.dtype.itemsize + sum(p.matrix_bytes(*s.shape) for s in self.table if s.name in matrices)
            require_memory(stored, f"Transformer({cfg.name!r}, dtype={self.dtype.name!r})'s parameters")
            self.flat = np.zeros(n, dtype=self.dtype)
        self.params = views(self.flat, flat_table)
        storage = QuantizedWeight.shaped if shape_only else QuantizedWeight.zeros
        self.quantized = {s.name: storage(s.shape, p.weights, _group(p, s)) for s in self.table if s.name in matrices}
        if not shape_only and init:         # init=False leaves every parameter 0: a model about to be loaded
            self._init_params(seed)
        self._grad_flat: np.ndarray | None = None     # allocated on the first loss_and_grads
        self.grads: dict[str, np.ndarray] | None = None
        if cfg.position != "rope":
            self.rope = (None, None)
        elif shape_only:
            self.rope = (shaped((cfg.n_ctx, cfg.head_dim // 2), self.dtype),) * 2
        else:
            self.rope = rope_tables(cfg.n_ctx, cfg.head_dim, cfg.rope_theta, self.dtype)
        # Gemma multiplies embeddings by √C, rounded to the model's dtype as Hugging Face does.
        self.embed_scale = float(self.dtype.type(math.sqrt(cfg.d_model))) if cfg.embed_scale else None
        self.attn_scale = 1.0 / math.sqrt(cfg.head_dim)
        self.split_name, _ = cv.split_op(cfg.position)

    def _init_params(self, seed: int) -> None:
        """GPT-2's initialisation (minitx.core.params). A quantized model draws each matrix in its float format,
        as the float model would with this seed, and quantizes it: the same weights as quantize(model)."""
        drawn = {s.name: (np.zeros(s.shape, self.dtype) if s.name in self.quantized else self.params[s.name])
                 for s in self.table}                 # table order: the same random stream as a float model
        init_params(self.cfg, drawn, seed)
        for name, qw in self.quantized.items():
            quantize_into(drawn[name], qw)

    def new_cache(self, batch: int, max_len: int, chunk: int | None = None) -> KVCache:
        """A KVCache for this model: its KV format, shape-only if it is; rolling (the window plus one chunk of
        new tokens) for a sliding-window model with fused attention, full otherwise."""
        rolling = bool(self.cfg.sliding_window) and self.attention == "fused"
        return KVCache(self.cfg, batch, max_len, self.precision.kv, rolling=rolling, chunk=chunk if rolling else None,
                       shape_only=self.shape_only)

    def weight(self, name: str):
        """A linear layer's weight: a view of the flat buffer, or its quantized storage."""
        return self.quantized.get(name) if name in self.quantized else self.params[name]

    def num_params(self) -> int:
        """Every parameter, each once (a quantized matrix counts its values, not its bytes)."""
        return sum(spec.size for spec in self.table)

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the weights as stored: the flat buffer of float parameters, plus each quantized matrix's values
        and scales (a shape-only model reports the same without holding them)."""
        return int(self.flat.nbytes) + sum(q.nbytes for q in self.quantized.values())

    @property
    def grad_flat(self) -> np.ndarray | None:
        return self._grad_flat

    # ---- the entry points -----------------------------------------------------------------------------------
    def forward(self, tokens) -> np.ndarray:
        """tokens (B, T) ints in [0, V), T ≤ n_ctx -> logits (B, T, V). Keeps nothing for backward."""
        tokens = self.check_tokens(tokens, "tokens")
        logits, _ = self.run(rectangle(tokens))
        return logits.reshape(*tokens.shape, -1)

    def loss_and_grads(self, tokens, targets) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy over all B·T positions and its gradient for every parameter.

        The returned gradient views live in one flat buffer (model.grad_flat) that the next call overwrites.
        """
        tokens = self.check_tokens(tokens, "tokens")
        targets = self.check_tokens(targets, "targets")
        if targets.shape != tokens.shape:
            raise ValueError(f"targets shape {targets.shape} must equal tokens shape {tokens.shape}")
        if self.quantized:
            raise ValueError("quantized (int8/int4) models are inference-only: train in float32/float64")
        if not self.shape_only and self.precision.activations not in dtypes.TRAINABLE:
            raise ValueError(f"{self.precision.activations} models are inference-only here: train in "
                             f"{' or '.join(dtypes.TRAINABLE)} (a 16-bit training step is counted by shape: "
                             "Transformer(..., shape_only=True))")
        if self._grad_flat is None:
            self._grad_flat = shaped(self.flat.shape, self.dtype) if self.shape_only else np.zeros_like(self.flat)
            self.grads = views(self._grad_flat, self.table)
        with phase("forward"):
            logits, caches = self.run(rectangle(tokens), keep=True)
            loss, loss_cache = cross_entropy_forward(logits, targets.reshape(-1), "loss")
        with phase("backward"):
            dlogits = cross_entropy_backward(1.0, loss_cache, "loss")
            self._backward(dlogits, caches, self.grads)
        return loss, self.grads

    def prefill(self, tokens, cache: KVCache, lengths=None) -> np.ndarray:
        """Run the prompts through the model, filling an empty cache; return each prompt's next-token logits.

        tokens (B, T) right-padded prompts (the padding is never run); lengths (B,) in [1, T], default all T.
        Returns logits (B, V) of each prompt's last token, and sets cache.lengths = lengths. The cache must be
        empty (all lengths 0; see KVCache.reset): prefill does not append to a cache."""
        tokens = self.check_tokens(tokens, "tokens")
        B, T = tokens.shape
        self._check_cache(cache, B)
        if T > cache.max_len:
            raise ValueError(f"tokens has T={T} positions; the cache holds max_len={cache.max_len}")
        if cache.chunk is not None and T > cache.chunk:
            raise ValueError(f"this rolling cache takes at most chunk={cache.chunk} new tokens per call (T={T}): build "
                             f"it with KVCache(..., chunk={T})")
        if cache.lengths.any():
            raise ValueError("prefill needs an empty cache (cache.lengths all 0); call cache.reset() first")
        lengths = np.full(B, T, dtype=np.int64) if lengths is None else _check_lengths(lengths, B, T)
        batch = ragged([row[:n] for row, n in zip(tokens, lengths)])
        with phase("prefill"):
            logits, _ = self.run(batch, cache, logits_rows=np.cumsum(lengths) - 1)
        cache.lengths[:] = lengths
        return logits

    def decode(self, tokens, cache: KVCache) -> np.ndarray:
        """One new token per sequence, (B,) or (B, 1), at position cache.lengths[b]; returns logits (B, V) and
        advances every length by one. Refuses to write past the cache's max_len (at most the model's n_ctx).

        Each layer first writes the new K/V row, then attention reads the sequence's rows 0..lengths[b], the new
        row included: at length t a sequence's step reads 2·L·KV·HS·(t + 1)·itemsize bytes of cache."""
        arr = np.asarray(tokens)
        if arr.ndim != 1 and not (arr.ndim == 2 and arr.shape[1] == 1):
            raise ValueError(f"tokens must have shape (B,) or (B, 1): one new token per sequence, got {arr.shape}")
        ids = self.check_tokens(arr.reshape(-1, 1), "tokens").reshape(-1)
        self._check_cache(cache, ids.shape[0])
        if int(cache.lengths.max()) >= cache.max_len:
            b = int(cache.lengths.argmax())
            raise ValueError(f"cache is full: sequence {b} already holds max_len={cache.max_len} tokens "
                             f"(the model's context is n_ctx={self.cfg.n_ctx})")
        batch = pack(ids, np.arange(ids.shape[0], dtype=np.int64), cache.lengths.copy())
        with phase("decode"):
            logits, _ = self.run(batch, cache)
        cache.lengths += 1
        return logits

    # ---- the blocks -----------------------------------------------------------------------------------------
    def run(self, batch: TokenBatch, kv=None, *, keep: bool = False, logits_rows: np.ndarray | None = None):
        """Every layer over the packed tokens of `batch`; returns (logits, caches).

        batch        ids, positions and attention blocks (minitx.core.batch), already checked against the model
        kv           the store where each layer writes the tokens' keys and values and attention reads every
                     key the sequences have (minitx.core.kv_cache): a KVCache when decoding; None for a
                     throwaway store (training, a plain forward: the tokens are the whole sequences)
        keep         keep each op's cache for `_backward` (training; a batch of one block), else keep nothing
                     and free every intermediate as soon as the next op has read it
        logits_rows  (M,) rows whose logits are wanted (each prompt's last token), default all N
        Returns logits (N or M, V) and, with keep, (embedding, [LayerCaches] per layer, ln_f, lm_head caches).
        """
        if keep and len(batch.blocks) != 1:
            raise ValueError("keep=True (training) needs a batch of one block: sequences of equal length")
        cfg, P = self.cfg, self.params
        if kv is None:
            store = Scratch(batch, cfg.n_kv_heads, cfg.head_dim, self.dtype, self.shape_only)
        else:
            store = kv
            # A store that can say whether the batch's slots and positions are in it checks before any kernel
            # writes there (a paged cache's block table: minitx.core.paged_cache)
            check_batch = getattr(kv, "check_batch", None)
            if check_batch is not None:
                check_batch(batch)
        if keep and self.attention == "fused":
            raise ValueError("training (keep=True) runs unfused attention: the fused kernel has no backward")
        # Fused attention's checks (every table entry and position its kernel will read) are made once per call,
        # here, before any kernel writes: each layer runs the same batch through the same table into pools of
        # one shape, so one plan serves them all (minitx.core.ops.fused_attention.FusedPlan).
        plan = None
        if self.attention == "fused":
            k_pool, v_pool = store.layer(0)      # for the pools' shape and dtype only
            plan = plan_fused_attention(k_pool, v_pool, store.table, batch, cfg.n_heads, cfg.sliding_window)
            del k_pool, v_pool
        learned = cfg.position == "learned"
        x, emb = embedding_forward(batch.ids, batch.pos if learned else None, P["wte"], P.get("wpe"),
                                   self.embed_scale, "embed")
        layer_caches = []
        for l in range(cfg.n_layers):
            x, lc = self._block_forward(l, x, batch, store, keep, plan)
            layer_caches.append(lc)
        if logits_rows is not None:
            x = select_rows(x, logits_rows)
        x, lnf = norm_forward(x, P["ln_f.w"], P.get("ln_f.b"), cfg.norm, cfg.norm_eps, cfg.norm_unit_offset, "ln_f")
        head_w = P["wte"] if cfg.tie_embeddings else self.weight("lm_head.w")
        logits, head = linear_forward(x, head_w, None, "lm_head", transposed=True)
        return logits, ((emb, layer_caches, lnf, head) if keep else None)

    def _block_forward(self, l: int, x: np.ndarray, batch: TokenBatch, store, keep: bool, plan=None):
        """x (N, C) -> (N, C), and the layer's caches when `keep`. `plan`: fused attention's, made by `run`.

        Each op returns (out, cache); `kept` holds on to the cache only when training. For inference nothing is
        held, and each name is reused as soon as its array has been read, so an intermediate is freed the
        moment the next op is done with it: inference keeps a few arrays alive at a time, training all of them.
        """
        cfg, P, W, n = self.cfg, self.params, self.weight, f"layers.{l}"
        NH, window = cfg.n_heads, cfg.sliding_window
        caches: list = []

        def kept(result):
            out, cache = result
            if keep:
                caches.append(cache)
            return out

        k_pool, v_pool = store.layer(l)
        cos, sin = self.rope
        # attention block: h is the current intermediate, its shape in the comment
        h = kept(norm_forward(x, P[f"{n}.ln_1.w"], P.get(f"{n}.ln_1.b"), cfg.norm, cfg.norm_eps,
                              cfg.norm_unit_offset, f"{n}.ln_1"))                            # (N, C)
        h = kept(linear_forward(h, W(f"{n}.attn.qkv.w"), P.get(f"{n}.attn.qkv.b"), f"{n}.attn.qkv"))  # (N, QKV)
        q = kept(split_forward(h, batch, NH, cos, sin, k_pool, v_pool, store.table, f"{n}.{self.split_name}",
                               store.category))                                             # (N·NH·HS,)
        if self.attention == "fused":   # one kernel over every block: no score matrix, output already merged
            h = fused_attention_forward(q, k_pool, v_pool, store.table, batch, NH, self.attn_scale, window,
                                        f"{n}.attn.fused", store.category, plan)            # (N, NH·HS)
            del q
        else:                           # block by block: (b, NH, n, HS) queries over S keys each
            HS = cfg.head_dim
            heads = empty((batch.n_tokens, NH * HS), x.dtype, like=x) if len(batch.blocks) > 1 else None
            for i, blk in enumerate(batch.blocks):
                k, v = store.keys(k_pool, v_pool, blk)                                      # (b, KV, S, HS)
                qb = block_queries(q, blk, NH, HS)
                if i == len(batch.blocks) - 1:
                    del q                       # the last block's scores are the queries' last reader
                s = kept(scores_forward(qb, k, f"{n}.attn.scores", store.category))        # (b, NH, n, S)
                del qb
                s = kept(softmax_forward(s, batch.block_pos(blk), self.attn_scale, f"{n}.attn.softmax",
                                         window or 0))
                o = kept(mix_forward(s, v, f"{n}.attn.mix", store.category))                 # (b, NH, n, HS)
                del s, k, v
                h = merge_forward(o, f"{n}.attn.merge", None if heads is None else heads[blk.rows])  # (b·n, ·)
                del o
            h = h if heads is None else heads                                               # (N, NH·HS)
            del heads
        del k_pool, v_pool
        h = kept(linear_forward(h, W(f"{n}.attn.proj.w"), P.get(f"{n}.attn.proj.b"), f"{n}.attn.proj"))  # (N, C)
        x = residual_forward(x, h, f"{n}.attn.residual")
        # MLP block
        h = kept(norm_forward(x, P[f"{n}.ln_2.w"], P.get(f"{n}.ln_2.b"), cfg.norm, cfg.norm_eps,
                              cfg.norm_unit_offset, f"{n}.ln_2"))                            # (N, C)
        h = kept(linear_forward(h, W(f"{n}.mlp.up.w"), P.get(f"{n}.mlp.up.b"), f"{n}.mlp.up"))    # (N, F or 2F)
        h = kept(activation_forward(h, self.activation_kind, f"{n}.mlp.act"))                # (N, F)
        h = kept(linear_forward(h, W(f"{n}.mlp.down.w"), P.get(f"{n}.mlp.down.b"), f"{n}.mlp.down"))  # (N, C)
        x = residual_forward(x, h, f"{n}.mlp.residual")
        return x, (LayerCaches(*caches) if keep else None)

    @property
    def activation_kind(self) -> str:
        if self.cfg.mlp == "standard":
            return "gelu_tanh"
        return "geglu" if self.cfg.activation == "gelu_tanh" else "swiglu"

    # ---- backward: the forward, reversed --------------------------------------------------------------------
    def _backward(self, dlogits: np.ndarray, caches, grads: dict[str, np.ndarray]) -> None:
        cfg = self.cfg
        emb, layer_caches, lnf, head = caches
        head_grad = grads["wte"] if cfg.tie_embeddings else grads["lm_head.w"]
        dx = linear_backward(dlogits, head, head_grad, None, "lm_head")
        dx = norm_backward(dx, lnf, grads["ln_f.w"], grads.get("ln_f.b"), None, "ln_f")
        for l in reversed(range(cfg.n_layers)):
            dx = self._block_backward(l, dx, layer_caches[l], grads)
        embedding_backward(dx, emb, grads["wte"], grads.get("wpe"), "embed", accumulate_wte=cfg.tie_embeddings)

    def _block_backward(self, l: int, dx: np.ndarray, c: LayerCaches, grads) -> np.ndarray:
        cfg, n, g = self.cfg, f"layers.{l}", grads
        # MLP block, reversed
        d_skip, d_branch = residual_backward(dx)
        dm = linear_backward(d_branch, c.down, g[f"{n}.mlp.down.w"], g.get(f"{n}.mlp.down.b"), f"{n}.mlp.down")
        du = activation_backward(dm, c.act, f"{n}.mlp.act")
        dh = linear_backward(du, c.up, g[f"{n}.mlp.up.w"], g.get(f"{n}.mlp.up.b"), f"{n}.mlp.up")
        dx = norm_backward(dh, c.ln_2, g[f"{n}.ln_2.w"], g.get(f"{n}.ln_2.b"), d_skip, f"{n}.ln_2")
        # attention block, reversed (training runs one block: see run)
        d_skip, d_branch = residual_backward(dx)
        da = linear_backward(d_branch, c.proj, g[f"{n}.attn.proj.w"], g.get(f"{n}.attn.proj.b"), f"{n}.attn.proj")
        do = merge_backward(da, c.split.batch.blocks[0], cfg.n_heads, f"{n}.attn.merge")
        dp, dv = mix_backward(do, c.mix, f"{n}.attn.mix")
        ds = softmax_backward(dp, c.softmax, f"{n}.attn.softmax")
        dq, dk = scores_backward(ds, c.scores, f"{n}.attn.scores")
        dqkv = split_backward(dq, dk, dv, c.split, f"{n}.{self.split_name}")
        dh = linear_backward(dqkv, c.qkv, g[f"{n}.attn.qkv.w"], g.get(f"{n}.attn.qkv.b"), f"{n}.attn.qkv")
        return norm_backward(dh, c.ln_1, g[f"{n}.ln_1.w"], g.get(f"{n}.ln_1.b"), d_skip, f"{n}.ln_1")

    # ---- input checks (before any kernel runs: the kernels index without bounds checks) ---------------------
    def check_tokens(self, tokens, arg: str, max_len: int | None = None) -> np.ndarray:
        """Validate ids: an integer array of shape (B, T), 1 ≤ T ≤ n_ctx, every id in [0, V)."""
        try:
            arr = np.asarray(tokens)
        except (ValueError, TypeError) as e:   # e.g. ragged nested lists
            raise ValueError(f"{arg} must be a (B, T) array of integer token ids: {e}") from None
        if arr.dtype == bool or arr.dtype.kind not in "iu":
            raise TypeError(f"{arg} must hold integer token ids, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{arg} must have shape (B, T), got shape {arr.shape}")
        B, T = arr.shape
        limit = self.cfg.n_ctx if max_len is None else max_len
        if B < 1 or T < 1:
            raise ValueError(f"{arg} must be non-empty, got shape {arr.shape}")
        if T > limit:
            what = f"the model's context is n_ctx={limit}" if max_len is None else f"the limit here is {limit}"
            raise ValueError(f"{arg} has T={T} positions; {what}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{arg} holds id {bad}, outside [0, {self.cfg.vocab_size}) (vocab_size)")
        return np.ascontiguousarray(arr, dtype=np.int64)

    def _check_cache(self, cache, batch: int) -> None:
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a minitx.KVCache, got {type(cache).__name__}")
        c, m = cache.cfg, self.cfg
        if (c.n_layers, c.n_kv_heads, c.head_dim) != (m.n_layers, m.n_kv_heads, m.head_dim):
            raise ValueError(f"cache was built for L={c.n_layers}, KV={c.n_kv_heads}, HS={c.head_dim}; the model "
                             f"has L={m.n_layers}, KV={m.n_kv_heads}, HS={m.head_dim}")
        if cache.dtype != dtypes.storage(self.precision.kv) or cache.shape_only != self.shape_only:
            raise TypeError(f"cache dtype {cache.dtype.name}{' (shape only)' * cache.shape_only} does not match the "
                            f"model's KV format {self.precision.kv}{' (shape only)' * self.shape_only}")
        if cache.chunk is not None and self.attention != "fused":
            raise ValueError("a rolling KV cache (a sliding window's last positions) is read by fused attention: "
                             "build the model with attention='fused', or the cache with rolling=False")
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


def _group(precision: dtypes.Precision, spec) -> int:
    """The quantization group size for a (K, M) matrix, checked: it must divide the input width K."""
    precision.matrix_bytes(*spec.shape)          # raises, naming the sizes, when g does not divide K
    return precision.group_size


def select_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x (N, C), rows (M,) -> (M, C): the rows whose logits are wanted (a prefill needs each prompt's last)."""
    out = empty((len(rows), x.shape[1]), x.dtype, like=x) if is_shaped(x) else x[rows]
    if counting():
        record("select_last", "layout", 0, reads=(("activations", nbytes(out, rows)),),
               writes=(("activations", nbytes(out)),))
    return out


def _check_lengths(lengths, B: int, T: int) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must hold integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), one per sequence, got {arr.shape}")
    if arr.min() < 1 or arr.max() > T:
        raise ValueError(f"lengths must lie in [1, T={T}], got {arr.tolist()}")
    return arr.astype(np.int64)
