"""AdamW over the flat parameter buffer, with PyTorch's semantics (torch.optim.AdamW).

For every parameter p with gradient g, at step t:
    p ← p · (1 − lr·wd)                      decoupled weight decay (applied to every parameter, as PyTorch does)
    m ← β1·m + (1 − β1)·g                    first moment: a running mean of gradients
    v ← β2·v + (1 − β2)·g²                   second moment: a running mean of squared gradients
    p ← p − lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε)   bias-corrected: m and v start at zero

m and v are two more buffers the size of the parameters: Adam's "two extra copies of the weights".
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from .. import checks
from ..dtypes import TRAINABLE
from ..accounting import conventions as cv
from ..accounting.counting import counting, nbytes, phase, record
from .model import Transformer
from .params import views
from .shaped import is_shaped, shaped


@njit(cache=True, error_model="numpy")
def _adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    # p, g, m, v: the flat parameter, gradient and moment buffers, one entry per parameter, all of one dtype;
    # the rest Python floats; bc1 = 1 − β1ᵗ and bc2 = 1 − β2ᵗ, computed once per step by the caller.
    # Scalars are cast to the parameters' dtype so that a float32 model updates in float32 arithmetic (as
    # PyTorch does), which the compiler can vectorise; mixing in float64 scalars would not.
    # (A Python float is float64: one of them in the expression would promote every element to float64 and
    # back, doubling the work per element and halving how many fit a vector register.) The scalar combinations,
    # 1 − lr·wd and 1 − β, are formed in float64 first and rounded once.
    f = p.dtype.type
    decay, b1, b2 = f(1.0 - lr * weight_decay), f(beta1), f(beta2)
    one_minus_b1, one_minus_b2 = f(1.0 - beta1), f(1.0 - beta2)
    c1, c2, step, e = f(bc1), f(bc2), f(lr), f(eps)
    # One fused pass: each parameter's four values are read once and its three updated values written once.
    # Every parameter's update is independent of the others', so the flat buffer is walked as one array.
    for i in range(p.size):
        gi = g[i]
        # Decoupled weight decay (the "W" of AdamW), applied first as torch.optim.AdamW does: p shrinks toward 0
        # directly, rather than wd·p being added to the gradient, where Adam would rescale it by 1/√v̂.
        p[i] *= decay
        # The moments: exponential moving averages of g and g². Kept in locals, so the update below reads
        # registers rather than re-reading m and v.
        mi = b1 * m[i] + one_minus_b1 * gi
        vi = b2 * v[i] + one_minus_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        # m and v start at zero, so after t steps they are biased toward 0 by the factor (1 − βᵗ); dividing by
        # c1 and c2 undoes it. The step is then lr · m̂ / (√v̂ + ε): about lr in size whatever the gradient's
        # scale, with ε (added outside the root, as PyTorch does) guarding parameters whose v̂ is ~0.
        p[i] -= step * (mi / c1) / (np.sqrt(vi / c2) + e)


class AdamW:
    """`AdamW(model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)`; `opt.step(grads)`.

    `grads` is the dict returned by `model.loss_and_grads` (or the flat gradient array itself).
    `opt.m` and `opt.v` are flat buffers with named views `opt.state["m"][name]`, like the parameters.
    """

    def __init__(self, model, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        checks.instance("model", model, Transformer, "a minitx Transformer")
        self.model = model
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self._hyperparameters()
        if model.quantized:
            raise ValueError("quantized (int8/int4) models are inference-only: AdamW trains float32/float64 models")
        if not model.shape_only and model.dtype.name not in TRAINABLE:
            raise ValueError(f"{model.dtype.name} models are inference-only here: AdamW trains "
                             f"{' or '.join(TRAINABLE)} models")
        zeros = (lambda: shaped(model.flat.shape, model.dtype)) if model.shape_only else \
            (lambda: np.zeros_like(model.flat))
        self.m, self.v = zeros(), zeros()
        self.state = {"m": views(self.m, model.table), "v": views(self.v, model.table)}
        self.t = 0

    def _hyperparameters(self) -> tuple[float, float, float, float, float]:
        """(lr, beta1, beta2, eps, weight_decay), checked. Called by every step, not only at construction:
        training sets `opt.lr` each step, and a NaN learning rate would turn every weight into NaN."""
        lr = checks.number("lr", self.lr, 0.0)   # lr = 0 is allowed, as in PyTorch: a step then changes nothing
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        b1 = checks.number("betas[0]", self.betas[0], 0.0, 1.0, high_open=True)
        b2 = checks.number("betas[1]", self.betas[1], 0.0, 1.0, high_open=True)
        return lr, b1, b2, checks.positive("eps", self.eps), checks.number("weight_decay", self.weight_decay, 0.0)

    def step(self, grads) -> None:
        """One update of every parameter, in place."""
        lr, b1, b2, eps, weight_decay = self._hyperparameters()
        g = self._flat_grads(grads)
        self.t += 1                     # t counts from 1, so the first step's bias corrections are 1 − β
        p = self.model.flat
        with phase("optimizer"):
            if not is_shaped(p):
                _adamw_step(p, g, self.m, self.v, lr, b1, b2, eps, weight_decay, 1.0 - b1 ** self.t,
                            1.0 - b2 ** self.t)
            if counting():
                state = nbytes(self.m, self.v)
                record("adamw", "optimizer", cv.ADAMW * p.size,
                       reads=(("weights", nbytes(p)), ("gradients", nbytes(g)), ("optimizer_state", state)),
                       writes=(("weights", nbytes(p)), ("optimizer_state", state)))

    def _flat_grads(self, grads) -> np.ndarray:
        flat = getattr(self.model, "grad_flat", None)
        if isinstance(grads, np.ndarray):
            g = grads
        elif isinstance(grads, Mapping) and flat is not None and grads is self.model.grads:
            g = flat
        elif isinstance(grads, Mapping):
            missing = sorted(set(self.model.params) - set(grads))
            extra = sorted(set(grads) - set(self.model.params))
            if missing or extra:
                raise ValueError(f"grads must be keyed like model.params; missing {missing[:5]}, unknown {extra[:5]}")
            for s in self.model.table:    # a wrong shape could otherwise shift every later tensor's gradient
                if np.shape(grads[s.name]) != s.shape:
                    raise ValueError(f"grads[{s.name!r}] has shape {np.shape(grads[s.name])}, expected {s.shape}")
            arrays = [np.asarray(grads[s.name]) for s in self.model.table]
            kinds = {a.dtype.kind for a in arrays}
            if not kinds <= {"f", "i", "u"}:    # complex (its imaginary part would be dropped), object, bool, text
                raise TypeError(f"grads must hold real numbers, got dtypes {sorted({a.dtype.name for a in arrays})}")
            g = np.concatenate([a.astype(self.model.dtype).reshape(-1) for a in arrays])
        else:
            raise TypeError(f"grads must be a dict of arrays or a flat array, got {type(grads).__name__}")
        if g.shape != self.model.flat.shape or g.dtype != self.model.flat.dtype:
            raise ValueError(f"flat grads must have shape {self.model.flat.shape} and dtype {self.model.flat.dtype}, "
                             f"got {g.shape} {g.dtype}")
        # One extra read of the whole gradient per step, and not recorded (minitx.conventions: a guard, not the
        # model's computation): a NaN written into m or v would never wash out, so it is refused before it lands.
        if not is_shaped(g) and not np.all(np.isfinite(g)):
            raise ValueError("grads contain NaN or inf; refusing to corrupt the parameters and Adam state")
        return g

    def state_dict(self) -> dict:
        lr, b1, b2, eps, weight_decay = self._hyperparameters()
        return {"m": self.m, "v": self.v, "t": self.t, "lr": lr, "betas": [b1, b2], "eps": eps,
                "weight_decay": weight_decay}
