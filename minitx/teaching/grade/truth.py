"""What minitx counts when it runs the model a case describes: the answers the grader compares students with.

Every value here comes from execution, never from the closed forms of `minitx.formulas` (a test checks that this
package does not import them): a small model is allocated and run for real, in float32 or in the 16-bit format
the case names (bfloat16 and float16 run here too); a real preset is run by shape (`Transformer(cfg,
shape_only=True)`: the same ops, in the same order, record the same costs from the shapes and dtypes they are
handed, with nothing allocated). Then:

    parameters          the model's flat parameter buffer: its size, its bytes
    training memory     the buffers a training step allocated: weights, gradients, AdamW's m and v
    FLOPs               2 × the MACs the counter saw (every matmul: linear layers, QKᵀ and A·V)
    KV cache            the allocated cache's buffer
    decode bytes        what the step's matmuls read from the weights, and attention from the KV cache
    time                the counted step's ops on a hardware preset's roofline (minitx.roofline.analyze); for
                        the compute-bound prefill, its counted FLOPs at the chip's peak
    this machine        a decode sweep timed here (minitx.teaching.grade.experiment)
    serving engine      minitx.Engine run for real on the requests: the KV bytes its block manager reserved
                        (and those holding a token) after the first step
    quantized weights   a bfloat16 model quantized by minitx.quantize (small models) or built quantized by shape
                        (real presets): its stored bytes, and the parts they are made of

Each function takes a `grid.Case`; results are kept for the life of the process (a class of 30 students is
graded against one set of runs).
"""
from __future__ import annotations

import numpy as np

from ...accounting.counting import Counter, count
from ...core.kv_cache import KVCache
from ...core.model import Transformer
from ...core.optim import AdamW
from ...core.quantize_model import quantize
from ...dtypes import RUNNABLE
from ...serving.engine import Engine
from ...serving.roofline import analyze
from .grid import Case

_memo: dict[tuple, object] = {}
SERVING_DTYPE = "bfloat16"        # the serving exercises: bf16 weights, activations and KV cache
SERVING_ATTENTION = "fused"       # what servers run: one attention kernel, no score matrix in memory
BYTES_TO_DTYPE = {4: "float32", 2: "bfloat16"}


def memo(fn):
    """Keep each (function, case) result: the expected values do not change within a process."""
    def wrapper(case: Case, *more):
        key = (fn.__name__, case.cfg, case.args, case.real, more)
        if key not in _memo:
            _memo[key] = fn(case, *more)
        return _memo[key]
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def model(case: Case, dtype: str = "float32", attention: str = "unfused") -> Transformer:
    """The case's model: allocated and initialised when the case is real (its dtype runs here), else by shape."""
    real = case.real and dtype in RUNNABLE
    return Transformer(case.cfg, seed=0, dtype=dtype, attention=attention, shape_only=not real)


def _tokens(case: Case, B: int, T: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, case.cfg.vocab_size, (B, T))


# ---- parameters and memory -----------------------------------------------------------------------------------

@memo
def params(case: Case) -> int:
    """Parameters in the model's flat buffer (each tensor once: a tied head is the embedding table)."""
    return int(model(case).flat.size)


@memo
def weights_bytes(case: Case) -> int:
    """Bytes of the parameters stored in the case's `dtype` argument."""
    m = model(case, case.arg("dtype"))
    return int(m.flat.nbytes + sum(q.nbytes for q in m.quantized.values()))


@memo
def training_state_bytes(case: Case) -> int:
    """Weights, gradients and AdamW's m and v as a float32 training step allocates them."""
    m = model(case)
    opt = AdamW(m)
    tokens = _tokens(case, 1, 4)
    _, grads = m.loss_and_grads(tokens, tokens)
    opt.step(grads)
    return int(m.flat.nbytes + m.grad_flat.nbytes + opt.m.nbytes + opt.v.nbytes)


@memo
def kv_cache_bytes(case: Case) -> int:
    """The buffer of a full KV cache of `batch` × `seq_len` positions in `bytes_per_value`-byte numbers."""
    dtype = BYTES_TO_DTYPE[case.arg("bytes_per_value")]
    real = case.real and dtype in RUNNABLE
    cache = KVCache(case.cfg, case.arg("batch"), case.arg("seq_len"), dtype, shape_only=not real)
    return int(cache.buffer.nbytes)


# ---- compute ---------------------------------------------------------------------------------------------------

@memo
def forward_counts(case: Case) -> Counter:
    """One inference forward over `batch` sequences of `seq_len` tokens, counted."""
    m = model(case)
    with count() as c:
        m.forward(_tokens(case, case.arg("batch"), case.arg("seq_len")))
    return c


@memo
def training_counts(case: Case) -> Counter:
    """One training step's forward and backward (loss_and_grads) over `batch` × `seq_len` tokens, counted."""
    m = model(case)
    tokens = _tokens(case, case.arg("batch"), case.arg("seq_len"))
    with count() as c:
        m.loss_and_grads(tokens, np.roll(tokens, -1, axis=1))
    return c


def matmul_flops(counts: Counter) -> int:
    """2 × every MAC the counter saw: the linear layers' and attention's QKᵀ and A·V (biases are not MACs)."""
    return 2 * counts.macs


def attention_flops(counts: Counter) -> int:
    """2 × the MACs of attention's QKᵀ and A·V alone."""
    return 2 * counts.filter(op="attention").macs


@memo
def decode_counts(case: Case, dtype: str = "float32", attention: str = "unfused") -> Counter:
    """One cached decode step of `batch` sequences with `context` tokens already in the cache, counted."""
    B, t = case.arg("batch"), case.arg("context")
    m = model(case, dtype, attention)
    cache = m.new_cache(B, t + 1, chunk=t)
    m.prefill(_tokens(case, B, t), cache)
    with count() as c:
        m.decode(np.zeros(B, dtype=np.int64), cache)
    return c


@memo
def prefill_counts(case: Case, dtype: str = "float32", attention: str = "unfused") -> Counter:
    """The prefill of `batch` prompts of `prompt` tokens into an empty cache, counted."""
    B, T = case.arg("batch"), case.arg("prompt")
    m = model(case, dtype, attention)
    cache = m.new_cache(B, T + 1, chunk=T)
    with count() as c:
        m.prefill(_tokens(case, B, T), cache)
    return c


def decode_bytes(counts: Counter) -> int:
    """Bytes a decode step's matmuls read from the weights (matrices and biases, the LM head included) plus the
    bytes attention reads from the KV cache."""
    return counts.filter(op="matmul").reads.get("weights", 0) + counts.reads.get("kv_cache", 0)


def step_time(counts: Counter, hardware: str) -> float:
    """Seconds: the counted ops on the hardware's bf16 roofline, each max(FLOPs / peak, bytes / bandwidth)."""
    return analyze(counts, hardware, "bf16").time


def compute_time(counts: Counter, hardware: str) -> float:
    """Seconds: the counted FLOPs at the hardware's bf16 peak, the roofline's compute floor (a compute-bound
    prefill's time; its memory-bound norms and additions come on top)."""
    return analyze(counts, hardware, "bf16").total().t_compute


# ---- the serving engine's KV cache -----------------------------------------------------------------------------

@memo
def engine_first_step(case: Case) -> tuple[int, int]:
    """(KV bytes reserved, KV bytes holding a token) once minitx.Engine has run the first step of the case's
    requests: prompts of `prompt_lens` tokens, each capped at `max_new_tokens`, arriving together and prefilled
    together (max_batch = the number of requests), float32, the case's `layout` and `block_size`."""
    prompts = case.arg("prompt_lens")
    engine = Engine(model(case), "continuous", case.arg("layout"), block_size=case.arg("block_size"),
                    max_batch=len(prompts))
    rng = np.random.default_rng(0)
    for n in prompts:
        engine.submit(rng.integers(0, case.cfg.vocab_size, n), case.arg("max_new_tokens"))
    first = engine.run().steps[0]
    return first.reserved_bytes, first.used_bytes


def kv_reserved_bytes(case: Case) -> int:
    return engine_first_step(case)[0]


# ---- quantized weights -----------------------------------------------------------------------------------------

@memo
def quantized_model(case: Case) -> Transformer:
    """The case's model with bfloat16 weights, its layer matrices quantized to `weight_dtype` with groups of
    `group_size` inputs (or left in bfloat16 when weight_dtype is "bfloat16"): minitx.quantize of a real bf16 model
    for a small case, a model built quantized by shape for a real preset."""
    fmt, g = case.arg("weight_dtype"), case.arg("group_size")
    if fmt == "bfloat16":
        return Transformer(case.cfg, dtype="bfloat16", shape_only=not case.real, init=False)
    if case.real:
        return quantize(Transformer(case.cfg, seed=0, dtype="bfloat16"), fmt, group_size=g)
    return Transformer(case.cfg, dtype="bfloat16", weight_dtype=fmt, group_size=g, shape_only=True)


def quantized_bytes(case: Case) -> int:
    """The weights as stored: the bfloat16 buffer (embeddings, head, norms, biases) and each matrix's values and
    scales."""
    return quantized_model(case).weight_nbytes


def quantized_parts(case: Case) -> dict[str, int]:
    """What the stored bytes are made of: `rest` (the bfloat16 buffer), `values`, `scales`; and what the values
    would take one int4 per byte (`values_one_per_byte`) or with ⌊M/2⌋ bytes per row (`values_rounded_down`)."""
    m = quantized_model(case)
    qs = list(m.quantized.values())
    return {"rest": int(m.flat.nbytes), "values": sum(q.values.nbytes for q in qs),
            "scales": sum(q.scales.nbytes for q in qs),
            "values_one_per_byte": sum(q.shape[0] * q.shape[1] for q in qs),
            "values_rounded_down": sum(q.shape[0] * (q.shape[1] // 2) for q in qs)}
