"""The Transformer: a straight list of op calls forward, and the same list reversed backward.

    x = embed(tokens)                                   (B, T, C)
    for each layer:
        x = x + proj(attention(split(qkv(norm_1(x)))))  pre-norm attention block
        x = x + down(act(up(norm_2(x))))                pre-norm MLP block
    logits = lm_head(norm_f(x))                         (B, T, V)

No autograd: `_forward` keeps each op's cache when asked, `_backward` calls the `_backward` of every op in
exactly the reverse order. Parameters and gradients live in flat buffers with named views (see params.py).
The same `_forward` serves training (fresh K/V per call) and inference with a KV cache (decode.py).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .config import Config
from .counting import counting, nbytes, phase, record
from .ops.activations import activation_backward, activation_forward
from .ops.attention import (merge_backward, merge_forward, mix_backward, mix_forward, rope_tables,
                            scores_backward, scores_forward, softmax_backward, softmax_forward, split_backward,
                            split_forward)
from .ops.embedding import embedding_backward, embedding_forward
from .ops.linear import linear_backward, linear_forward, residual_backward, residual_forward
from .ops.loss import cross_entropy_backward, cross_entropy_forward
from .ops.norms import norm_backward, norm_forward
from .params import init_params, param_table, views

DTYPES = ("float32", "float64")


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
    model.prefill(tokens, cache) / model.decode(tokens, cache): KV-cached inference (see minitx.decode)
    """

    def __init__(self, cfg: Config, seed: int = 0, dtype: str = "float32"):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a minitx.Config, got {type(cfg).__name__}")
        self.cfg = cfg
        self.dtype = resolve_dtype(dtype, "dtype")
        self.table = param_table(cfg)
        self.flat = np.zeros(sum(s.size for s in self.table), dtype=self.dtype)
        self.params = views(self.flat, self.table)
        init_params(cfg, self.params, seed)
        self._grad_flat: np.ndarray | None = None     # allocated on the first loss_and_grads
        self.grads: dict[str, np.ndarray] | None = None
        self.rope = (rope_tables(cfg.n_ctx, cfg.head_dim, cfg.rope_theta, self.dtype)
                     if cfg.position == "rope" else (None, None))
        # Gemma multiplies embeddings by √C, rounded to the model's dtype as Hugging Face does.
        self.embed_scale = float(self.dtype.type(math.sqrt(cfg.d_model))) if cfg.embed_scale else None
        self.attn_scale = 1.0 / math.sqrt(cfg.head_dim)

    def num_params(self) -> int:
        return int(self.flat.size)

    # ---- public entry points --------------------------------------------------------------------------------
    def forward(self, tokens) -> np.ndarray:
        """tokens (B, T) ints in [0, V), T ≤ n_ctx -> logits (B, T, V). Keeps nothing for backward."""
        tokens = self.check_tokens(tokens, "tokens")
        pos = _positions(*tokens.shape)
        logits, _ = self._forward(tokens, pos, keep=False)
        return logits

    def loss_and_grads(self, tokens, targets) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy over all B·T positions and its gradient for every parameter.

        The returned gradient views live in one flat buffer (model.grad_flat) that the next call overwrites.
        """
        tokens = self.check_tokens(tokens, "tokens")
        targets = self.check_tokens(targets, "targets")
        if targets.shape != tokens.shape:
            raise ValueError(f"targets shape {targets.shape} must equal tokens shape {tokens.shape}")
        if self._grad_flat is None:
            self._grad_flat = np.zeros_like(self.flat)
            self.grads = views(self._grad_flat, self.table)
        B, T = tokens.shape
        pos = _positions(B, T)
        with phase("forward"):
            logits, caches = self._forward(tokens, pos, keep=True)
            loss, loss_cache = cross_entropy_forward(logits.reshape(B * T, -1), targets.reshape(-1), "loss")
        with phase("backward"):
            dlogits = cross_entropy_backward(1.0, loss_cache, "loss")
            self._backward(dlogits, caches, self.grads)
        return loss, self.grads

    @property
    def grad_flat(self) -> np.ndarray | None:
        return self._grad_flat

    # ---- forward --------------------------------------------------------------------------------------------
    def _forward(self, tokens: np.ndarray, pos: np.ndarray, keep: bool, kv=None, last: np.ndarray | None = None):
        """tokens, pos (B, T) -> logits (B, T, V), or (B, V) at rows `last` (B,) when given.
        With `kv` (a KVCache) keys and values go into the cache at rows `pos`; otherwise into fresh arrays."""
        cfg, P = self.cfg, self.params
        learned = cfg.position == "learned"
        x, emb = embedding_forward(tokens, pos if learned else None, P["wte"], P.get("wpe"), self.embed_scale,
                                   "embed")
        S = tokens.shape[1] if kv is None else int(pos.max()) + 1   # keys attended to: the longest sequence so far
        layer_caches = []
        for l in range(cfg.n_layers):
            x, lc = self._block_forward(l, x, pos, S, kv, keep)
            if keep:
                layer_caches.append(lc)
        B, T, C = x.shape
        x = x.reshape(B * T, C)
        if last is not None:
            x = _select_rows(x.reshape(B, T, C), last)
        x, lnf = norm_forward(x, P["ln_f.w"], P.get("ln_f.b"), cfg.norm, cfg.norm_eps, cfg.norm_unit_offset, "ln_f")
        head_w = P["wte"] if cfg.tie_embeddings else P["lm_head.w"]
        logits, head = linear_forward(x, head_w, None, "lm_head", transposed=True)
        logits = logits.reshape(B, cfg.vocab_size) if last is not None else logits.reshape(B, T, cfg.vocab_size)
        return logits, ((emb, layer_caches, lnf, head) if keep else None)

    def _block_forward(self, l: int, x: np.ndarray, pos: np.ndarray, S: int, kv, keep: bool):
        """x (B, T, C) -> (B, T, C), and the layer's caches when `keep`.

        Each op returns (out, cache); `kept` holds on to the cache only when training. For inference nothing is
        held, and each name is reused as soon as its array has been read, so an intermediate is freed the
        moment the next op is done with it: inference keeps a few arrays alive at a time, training all of them.
        """
        cfg, P, n = self.cfg, self.params, f"layers.{l}"
        B, T, C = x.shape
        caches: list = []

        def kept(result):
            out, cache = result
            if keep:
                caches.append(cache)
            return out

        x = x.reshape(B * T, C)
        kv_cat = "kv_cache" if kv is not None else "activations"
        if kv is None:
            k_dst = np.empty((B, cfg.n_kv_heads, T, cfg.head_dim), dtype=self.dtype)
            v_dst = np.empty_like(k_dst)
        else:
            k_dst, v_dst = kv.k[l], kv.v[l]
        cos, sin = self.rope
        # attention block: h is the current intermediate, its shape in the comment
        h = kept(norm_forward(x, P[f"{n}.ln_1.w"], P.get(f"{n}.ln_1.b"), cfg.norm, cfg.norm_eps,
                              cfg.norm_unit_offset, f"{n}.ln_1"))                            # (N, C)
        h = kept(linear_forward(h, P[f"{n}.attn.qkv.w"], P.get(f"{n}.attn.qkv.b"), f"{n}.attn.qkv"))  # (N, QKV)
        q = kept(split_forward(h.reshape(B, T, -1), pos, cfg.n_heads, cfg.n_kv_heads, cos, sin, k_dst, v_dst,
                               f"{n}.attn.rope" if cos is not None else f"{n}.attn.split", kv_cat))  # (B, NH, T, HS)
        k, v = k_dst[:, :, :S], v_dst[:, :, :S]                                              # (B, KV, S, HS)
        h = kept(scores_forward(q, k, f"{n}.attn.scores", kv_cat))                          # (B, NH, T, S)
        del q, k
        h = kept(softmax_forward(h, pos, self.attn_scale, f"{n}.attn.softmax"))             # (B, NH, T, S)
        h = kept(mix_forward(h, v, f"{n}.attn.mix", kv_cat))                                # (B, NH, T, HS)
        del v, k_dst, v_dst
        h = merge_forward(h, f"{n}.attn.merge")                                             # (B, T, NH·HS)
        h = kept(linear_forward(h.reshape(B * T, -1), P[f"{n}.attn.proj.w"], P.get(f"{n}.attn.proj.b"),
                                f"{n}.attn.proj"))                                          # (N, C)
        x = residual_forward(x, h, f"{n}.attn.residual")
        # MLP block
        h = kept(norm_forward(x, P[f"{n}.ln_2.w"], P.get(f"{n}.ln_2.b"), cfg.norm, cfg.norm_eps,
                              cfg.norm_unit_offset, f"{n}.ln_2"))                            # (N, C)
        h = kept(linear_forward(h, P[f"{n}.mlp.up.w"], P.get(f"{n}.mlp.up.b"), f"{n}.mlp.up"))    # (N, F or 2F)
        h = kept(activation_forward(h, self.activation_kind, f"{n}.mlp.act"))                # (N, F)
        h = kept(linear_forward(h, P[f"{n}.mlp.down.w"], P.get(f"{n}.mlp.down.b"), f"{n}.mlp.down"))  # (N, C)
        x = residual_forward(x, h, f"{n}.mlp.residual")
        return x.reshape(B, T, C), (LayerCaches(*caches) if keep else None)

    @property
    def activation_kind(self) -> str:
        if self.cfg.mlp == "standard":
            return "gelu_tanh"
        return "geglu" if self.cfg.activation == "gelu_tanh" else "swiglu"

    # ---- backward: the forward, reversed --------------------------------------------------------------------
    def _backward(self, dlogits: np.ndarray, caches, G: dict[str, np.ndarray]) -> None:
        cfg = self.cfg
        emb, layer_caches, lnf, head = caches
        B, T = emb.tokens.shape
        head_grad = G["wte"] if cfg.tie_embeddings else G["lm_head.w"]
        dx = linear_backward(dlogits, head, head_grad, None, "lm_head")
        dx = norm_backward(dx, lnf, G["ln_f.w"], G.get("ln_f.b"), None, "ln_f")
        for l in reversed(range(cfg.n_layers)):
            dx = self._block_backward(l, dx, layer_caches[l], G, B, T)
        embedding_backward(dx.reshape(B, T, -1), emb, G["wte"], G.get("wpe"), "embed",
                           accumulate_wte=cfg.tie_embeddings)

    def _block_backward(self, l: int, dx: np.ndarray, c: LayerCaches, G, B: int, T: int) -> np.ndarray:
        cfg, n = self.cfg, f"layers.{l}"
        # MLP block, reversed
        d_skip, d_branch = residual_backward(dx)
        dm = linear_backward(d_branch, c.down, G[f"{n}.mlp.down.w"], G.get(f"{n}.mlp.down.b"), f"{n}.mlp.down")
        du = activation_backward(dm, c.act, f"{n}.mlp.act")
        dh = linear_backward(du, c.up, G[f"{n}.mlp.up.w"], G.get(f"{n}.mlp.up.b"), f"{n}.mlp.up")
        dx = norm_backward(dh, c.ln_2, G[f"{n}.ln_2.w"], G.get(f"{n}.ln_2.b"), d_skip, f"{n}.ln_2")
        # attention block, reversed
        d_skip, d_branch = residual_backward(dx)
        da = linear_backward(d_branch, c.proj, G[f"{n}.attn.proj.w"], G.get(f"{n}.attn.proj.b"), f"{n}.attn.proj")
        do = merge_backward(da.reshape(B, T, -1), cfg.n_heads, f"{n}.attn.merge")
        dp, dv = mix_backward(do, c.mix, f"{n}.attn.mix")
        ds = softmax_backward(dp, c.softmax, f"{n}.attn.softmax")
        dq, dk = scores_backward(ds, c.scores, f"{n}.attn.scores")
        dqkv = split_backward(dq, dk, dv, c.split, f"{n}.attn.rope" if cfg.position == "rope" else f"{n}.attn.split")
        dh = linear_backward(dqkv.reshape(B * T, -1), c.qkv, G[f"{n}.attn.qkv.w"], G.get(f"{n}.attn.qkv.b"),
                             f"{n}.attn.qkv")
        return norm_backward(dh, c.ln_1, G[f"{n}.ln_1.w"], G.get(f"{n}.ln_1.b"), d_skip, f"{n}.ln_1")

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

    # ---- KV-cached inference (the work is in minitx/decode.py) ----------------------------------------------
    def prefill(self, tokens, cache, lengths=None) -> np.ndarray:
        """(B, T) right-padded prompts, lengths (B,) -> logits (B, V) of each last prompt token; fills `cache`."""
        from .decode import prefill
        return prefill(self, tokens, cache, lengths)

    def decode(self, tokens, cache) -> np.ndarray:
        """One new token per sequence, (B,) or (B, 1) -> logits (B, V); each sequence's cache grows by one."""
        from .decode import decode
        return decode(self, tokens, cache)


def resolve_dtype(dtype, arg: str) -> np.dtype:
    """The numpy dtype for a model or cache: float32 or float64, else a ValueError naming `arg`."""
    try:
        ok = dtype is not None and np.dtype(dtype).name in DTYPES   # np.dtype(None) would be float64
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{arg}={dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


def _positions(B: int, T: int) -> np.ndarray:
    """(B, T) int64: 0..T-1 for every sequence (training and plain forward)."""
    return np.ascontiguousarray(np.broadcast_to(np.arange(T, dtype=np.int64), (B, T)))


def _select_rows(x: np.ndarray, last: np.ndarray) -> np.ndarray:
    """x (B, T, C), last (B,) -> (B, C): each sequence's row `last[b]` (prefill only needs the newest logits)."""
    out = x[np.arange(x.shape[0]), last]
    if counting():
        record("select_last", "layout", 0, reads=(("activations", nbytes(out, last)),),
               writes=(("activations", nbytes(out)),))
    return out
