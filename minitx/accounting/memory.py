"""Memory, measured: what a model, its gradients, AdamW and one training step actually hold, byte for byte.

    from minitx.memory import report
    r = report(model, B=4, T=128, optimizer=opt)
    print(r.table())          # parameters, gradients, Adam state, saved activations, inference peak, KV cache
    r.to_dict()               # the same numbers, JSON-ready

The closed forms live in `minitx.formulas`; this module only measures, so the two can be compared:

* `measure_saved_activations(model, tokens)`: runs the training forward (`model.run(batch, keep=True)` and the
  cross-entropy forward, exactly as `loss_and_grads` does) and adds up the bytes of the distinct arrays the
  caches hold, i.e. everything that stays alive between the forward and the backward.
* `measure_inference_peak(model, tokens)`: runs `model.forward` (which keeps nothing) under `tracemalloc` and
  returns the peak of what was allocated during the call. NumPy reports its data buffers to tracemalloc, so
  this is the real high-water mark of the arrays, not an estimate.

Why the two differ by so much: a training forward must keep every op's input (or output) until the backward
consumes it, so its memory grows with the number of layers; inference frees each activation as soon as the
next op has read it, so only a few arrays are alive at any moment: the measured peak is about 2-3 times the
largest single activation (an op's input and output, next to the residual stream), whatever the depth, plus
the weights and, when decoding, the KV cache. Training needs all of them at once.
"""
from __future__ import annotations

import gc
import tracemalloc
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import checks
from ..core.batch import rectangle
from ..core.model import Transformer
from ..core.ops.loss import cross_entropy_forward
from . import formulas

__all__ = ["MemoryReport", "measure_saved_activations", "measure_inference_peak", "largest_activation",
           "report", "saved_arrays"]


# ---- walking the caches --------------------------------------------------------------------------------------

def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns a view's memory (a view keeps its whole base alive)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _walk(obj, out: list) -> None:
    """Collect every ndarray inside nested caches (NamedTuples are tuples; lists of layer caches; dicts)."""
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _walk(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _walk(item, out)


def saved_arrays(model: Transformer, caches) -> list[np.ndarray]:
    """The distinct memory blocks `caches` keep alive, excluding the model's own constants.

    Each array found is replaced by the array that owns its memory (its root base), so a view and its base,
    or two slices of one buffer (k[:, :, :S] kept by the scores and the mix), count once. Arrays sharing memory
    with the parameters (`model.flat`: a LinearCache's w, a norm's w, wte as the tied head) or with the RoPE
    tables (`model.rope`) are left out: they exist whether or not anything is trained.
    """
    constants = [model.flat] + [t for t in model.rope if t is not None]
    found: list[np.ndarray] = []
    _walk(caches, found)
    roots = {id(r): r for r in map(_root, found)}       # distinct owners: NumPy's own buffers never overlap
    return [r for r in roots.values() if not any(np.shares_memory(r, c) for c in constants)]


def _training_caches(model: Transformer, tokens, targets=None):
    """Run the training forward exactly as `loss_and_grads` does, and return everything it keeps."""
    tokens = model.check_tokens(tokens, "tokens")
    if targets is None:
        targets = np.roll(tokens, -1, axis=1)          # any valid ids do: the shapes are what matter
    targets = model.check_tokens(targets, "targets")
    if targets.shape != tokens.shape:
        raise ValueError(f"targets shape {targets.shape} must equal tokens shape {tokens.shape}")
    logits, caches = model.run(rectangle(tokens), keep=True)
    _, loss_cache = cross_entropy_forward(logits, targets.reshape(-1), "loss")
    return caches, loss_cache


def measure_saved_activations(model: Transformer, tokens, targets=None, include_loss: bool = True) -> int:
    """Bytes a training step keeps from its forward for its backward, measured on a real forward.

    Counted: every distinct array held by the caches `model.run(rectangle(tokens), keep=True)` returns (the
    embedding's, each block's LayerCaches, ln_f's and the LM head's), and, with include_loss=True (the
    default, what `loss_and_grads` holds), the loss cache: the logits (N, V), the int64 targets (N,) and the
    per-row log-sum-exp (N,). That includes the int64 token ids and the int64 positions array (one array,
    shared by the embedding, every split and every softmax), the norms' per-row statistics, and for Gemma the
    (1 + w) scales the norms allocate.

    Each array counts once, by memory: a view (a reshape, the k/v slices of the key/value buffers) counts as
    the whole buffer it views, once however many caches hold it. Not counted: parameter views (anything
    sharing memory with `model.flat`) and the RoPE cos/sin tables (`model.rope`), which are model constants;
    arrays the forward made and then dropped (the qkv output, the raw scores, the projection outputs), which
    are not alive at the start of the backward; and Python objects (floats, strings, the tuples themselves).

    `formulas.saved_activation_bytes(cfg, B, T, dtype, include_loss)` predicts this number exactly.
    """
    caches, loss_cache = _training_caches(model, tokens, targets)
    kept = (caches, loss_cache) if include_loss else caches
    return int(sum(a.nbytes for a in saved_arrays(model, kept)))


def largest_activation(model: Transformer, tokens) -> int:
    """Bytes of the largest single array a forward over `tokens` produces.

    Taken from a real forward: the largest of the arrays a training forward keeps (which include the logits,
    the attention probabilities and the MLP's hidden activations) and of the arrays it produces and drops,
    whose shapes the caches record: each linear layer's output (N, M) (the qkv output is the only one larger
    than a kept array in some configurations) and the raw scores (B, NH, T, S), as large as the probabilities.
    """
    return _largest(model, *_training_caches(model, tokens))


def _largest(model: Transformer, caches, loss_cache) -> int:
    sizes = [a.nbytes for a in saved_arrays(model, (caches, loss_cache))]
    emb, layer_caches, lnf, head = caches
    for lc in layer_caches:
        for lin in (lc.qkv, lc.proj, lc.up, lc.down):
            M = lin.w.shape[0] if lin.transposed else lin.w.shape[1]
            sizes.append(lin.x.shape[0] * M * lin.x.itemsize)
        q, k = lc.scores.a, lc.scores.kv
        sizes.append(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.itemsize)
    return int(max(sizes))


def measure_inference_peak(model: Transformer, tokens) -> int:
    """Peak bytes allocated while `model.forward(tokens)` runs, above what was allocated before it started.

    Measured with `tracemalloc`, which sees NumPy's array buffers (and Python's own small objects, a few kB
    here). A warm-up forward runs first, untraced, so Numba's one-time compilation is not counted. The peak
    includes the returned logits (B, T, V), alive at the end. It does not include memory that BLAS allocates
    for itself outside NumPy (OpenBLAS's per-thread work buffers), which tracemalloc cannot see.

    An inference forward keeps no caches: each activation is freed once the next op has consumed it, so the
    peak is a few arrays at a time (roughly the largest activation, its neighbour, and the residual stream),
    independent of the number of layers, while training keeps every layer's arrays until the backward.
    """
    tokens = model.check_tokens(tokens, "tokens")
    model.forward(tokens)                             # compile / warm up outside the measurement
    gc.collect()
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        logits = model.forward(tokens)
        _, peak = tracemalloc.get_traced_memory()
        del logits
    finally:
        if started_here:
            tracemalloc.stop()
    return int(max(peak - before, 0))


# ---- the report ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryReport:
    """Measured bytes for one model at batch B and sequence length T (see `report`)."""
    config: str
    dtype: str
    B: int
    T: int
    n_params: int
    params: int                      # model.flat
    grads: int                       # the flat gradient buffer, laid out as the parameters
    optimizer_state: int             # AdamW's m and v
    saved_activations: int           # kept by a training forward for its backward (loss cache included)
    inference_peak: int              # traced peak during model.forward(tokens)
    largest_activation: int          # the largest single array a forward produces
    kv_cache: int | None = None      # cache.nbytes when a KVCache was given
    optimizer_measured: bool = False  # False: optimizer_state is what AdamW(model) would allocate (2 × params)
    predicted: dict | None = field(default=None, compare=False)  # minitx.formulas' numbers for the same

    @property
    def training_total(self) -> int:
        """Held at the start of a training step's backward: weights, gradients, Adam state, saved activations."""
        return self.params + self.grads + self.optimizer_state + self.saved_activations

    @property
    def inference_total(self) -> int:
        """Weights, the forward's traced peak, and the KV cache if one was given."""
        return self.params + self.inference_peak + (self.kv_cache or 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["training_total"] = self.training_total
        d["inference_total"] = self.inference_total
        return d

    def table(self) -> str:
        pred = self.predicted or {}
        rows = [
            ("parameters", self.params, pred.get("params"), "model.flat"),
            ("gradients", self.grads, pred.get("grads"), "same layout as the parameters"),
            ("optimizer state", self.optimizer_state, pred.get("optimizer_state"),
             "AdamW m + v" + ("" if self.optimizer_measured else " (what AdamW would allocate)")),
            ("saved activations", self.saved_activations, pred.get("saved_activations"),
             f"kept for backward at B={self.B}, T={self.T}, loss included"),
            ("training total", self.training_total, pred.get("training_total"), "at the start of backward"),
            ("inference peak", self.inference_peak, None, f"tracemalloc peak of forward at B={self.B}, T={self.T}"),
            ("largest activation", self.largest_activation, pred.get("largest_activation"),
             "one array"),
        ]
        if self.kv_cache is not None:
            rows.append(("KV cache", self.kv_cache, pred.get("kv_cache"), "cache.nbytes"))
        rows.append(("inference total", self.inference_total, None, "parameters + peak (+ KV cache)"))
        head = f"{'':<20} {'measured':>16} {'MiB':>10} {'formula':>16}  note"
        lines = [f"memory of {self.config} ({self.n_params:,} parameters, {self.dtype}), B={self.B}, T={self.T}",
                 head, "-" * len(head)]
        for name, value, formula, note in rows:
            f = f"{formula:>16,}" if formula is not None else f"{'-':>16}"
            lines.append(f"{name:<20} {value:>16,} {value / 2**20:>10.2f} {f}  {note}")
        ratio = self.saved_activations / self.inference_peak if self.inference_peak else float("inf")
        lines.append(f"saved activations / inference peak = {ratio:.1f}x: training keeps every layer's arrays, "
                     "inference about the largest one at a time")
        return "\n".join(lines)


def _predicted(cfg, B: int, T: int, dtype: str, kv: tuple | None) -> dict:
    """The closed forms of minitx.formulas for the same quantities, to print beside the measurements."""
    F = formulas
    out = {"params": F.param_bytes(cfg, dtype), "grads": F.grad_bytes(cfg, dtype),
           "optimizer_state": F.adam_state_bytes(cfg, dtype),
           "saved_activations": F.saved_activation_bytes(cfg, B, T, dtype, include_loss=True),
           "largest_activation": max(F.activation_sizes(cfg, B, T, dtype).values())}
    out["training_total"] = out["params"] + out["grads"] + out["optimizer_state"] + out["saved_activations"]
    if kv is not None:
        out["kv_cache"] = F.kv_cache_bytes(cfg, *kv)
    return out


def report(model: Transformer, B: int, T: int, optimizer=None, cache=None, seed: int = 0) -> MemoryReport:
    """Measure the memory of `model` for a batch of B sequences of T tokens.

    parameters and gradients: the flat buffers (the gradient buffer has the parameters' layout whether or not
    it is allocated yet); optimizer state: `optimizer.m` + `optimizer.v` when given, else the 2 × parameters
    an AdamW(model) would allocate; saved activations: `measure_saved_activations` at (B, T), loss included;
    inference peak: `measure_inference_peak` at (B, T); KV cache: `cache.nbytes` when a cache is given.
    Tokens are random ids from `seed` (only their shape matters).
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a minitx Transformer, got {type(model).__name__}")
    B, T = checks.integer("B", B), checks.integer("T", T)
    if T > model.cfg.n_ctx:
        raise ValueError(f"T={T} exceeds the model's context n_ctx={model.cfg.n_ctx}")
    tokens = np.random.default_rng(seed).integers(0, model.cfg.vocab_size, size=(B, T), dtype=np.int64)
    if optimizer is not None:
        if not (hasattr(optimizer, "m") and hasattr(optimizer, "v")):
            raise TypeError("optimizer must have flat moment buffers .m and .v (minitx.AdamW)")
        opt_bytes, measured = int(optimizer.m.nbytes + optimizer.v.nbytes), True
    else:
        opt_bytes, measured = 2 * int(model.flat.nbytes), False
    grads = model.grad_flat.nbytes if model.grad_flat is not None else model.flat.nbytes
    kv_bytes, kv_shape = None, None
    if cache is not None:
        nb = getattr(cache, "nbytes", None)
        if nb is None:
            raise TypeError("cache must have an nbytes attribute (minitx.decode.KVCache)")
        kv_bytes = int(nb() if callable(nb) else nb)
        if all(hasattr(cache, a) for a in ("batch", "max_len", "dtype")):
            kv_shape = (int(cache.batch), int(cache.max_len), np.dtype(cache.dtype).name)
    caches, loss_cache = _training_caches(model, tokens)
    saved = int(sum(a.nbytes for a in saved_arrays(model, (caches, loss_cache))))   # measure_saved_activations
    largest = _largest(model, caches, loss_cache)
    del caches, loss_cache
    gc.collect()
    peak = measure_inference_peak(model, tokens)
    predicted = _predicted(model.cfg, B, T, model.dtype.name, kv_shape)
    return MemoryReport(config=model.cfg.name, dtype=model.dtype.name, B=B, T=T, n_params=model.num_params(),
                        params=int(model.flat.nbytes), grads=int(grads), optimizer_state=opt_bytes,
                        saved_activations=saved, inference_peak=peak, largest_activation=largest,
                        kv_cache=kv_bytes, optimizer_measured=measured, predicted=predicted)
