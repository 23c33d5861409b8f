"""`minitx.quantize(model, "int8" | "int4", group_size=128)`: a quantized copy of a float model.

The layout, the rounding and the kernels: minitx.core.quantize and minitx.core.ops.quantized_linear. This module
only builds the new model (an uninitialised Transformer of the same shape with quantized storage) and fills it:
the float parameters copied, each layer matrix quantized from the float one, one matrix at a time.
"""
from __future__ import annotations

from .. import checks
from .model import Transformer
from .quantize import QMAX, quantize_into


def quantize(model, fmt: str, group_size: int = 128):
    """A copy of `model` whose layers' matrices (q|k|v, output projection, MLP up and down) are stored as `fmt`
    ("int8" or "int4") with one float16 scale per `group_size` inputs, dequantized inside the matmul kernels.
    Everything else (embeddings, a tied or untied LM head, norms, biases) stays in the model's float format; the
    activations and the KV cache too. Inference only. `model` itself is not changed. A shape-only model gives a
    shape-only quantized model (counted, not executed)."""
    checks.instance("model", model, Transformer, "a minitx Transformer")
    fmt = checks.one_of("fmt", fmt, tuple(QMAX))
    group_size = checks.integer("group_size", group_size)
    if model.quantized:
        raise ValueError(f"model is already quantized ({model.precision}): quantize its float original instead")
    p = model.precision
    out = Transformer(model.cfg, dtype=p.activations, weight_dtype=fmt, kv_dtype=p.kv, group_size=group_size,
                      attention=model.attention, shape_only=model.shape_only, init=False)
    if not model.shape_only:
        for name, view in out.params.items():
            view[...] = model.params[name]
        for name, qw in out.quantized.items():
            quantize_into(model.params[name], qw)
    return out
