"""AdamW over the flat parameter buffer, with PyTorch's semantics (torch.optim.AdamW).

For every parameter p with gradient g, at step t:
    p ← p · (1 − lr·wd)                      decoupled weight decay (applied to every parameter, as PyTorch does)
    m ← β1·m + (1 − β1)·g                    first moment: a running mean of gradients
    v ← β2·v + (1 − β2)·g²                   second moment: a running mean of squared gradients
    p ← p − lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε)   bias-corrected: m and v start at zero

m and v are two more buffers the size of the parameters: Adam's "two extra copies of the weights".
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import checks
from ..accounting import conventions as cv
from ..accounting.counting import counting, nbytes, phase, record
from .params import views


@njit(cache=True, error_model="numpy")
def _adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    # Scalars are cast to the parameters' dtype so that a float32 model updates in float32 arithmetic (as
    # PyTorch does), which the compiler can vectorise; mixing in float64 scalars would not.
    f = p.dtype.type
    decay, b1, b2 = f(1.0 - lr * weight_decay), f(beta1), f(beta2)
    one_minus_b1, one_minus_b2 = f(1.0 - beta1), f(1.0 - beta2)
    c1, c2, step, e = f(bc1), f(bc2), f(lr), f(eps)
    for i in range(p.size):
        gi = g[i]
        p[i] *= decay
        mi = b1 * m[i] + one_minus_b1 * gi
        vi = b2 * v[i] + one_minus_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step * (mi / c1) / (np.sqrt(vi / c2) + e)


class AdamW:
    """`AdamW(model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)`; `opt.step(grads)`.

    `grads` is the dict returned by `model.loss_and_grads` (or the flat gradient array itself).
    `opt.m` and `opt.v` are flat buffers with named views `opt.state["m"][name]`, like the parameters.
    """

    def __init__(self, model, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        checks.number("lr", lr, 0.0)   # lr = 0 is allowed, as in PyTorch: a step then changes nothing
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        checks.number("betas[0]", betas[0], 0.0, 1.0, high_open=True)
        checks.number("betas[1]", betas[1], 0.0, 1.0, high_open=True)
        checks.positive("eps", eps)
        checks.number("weight_decay", weight_decay, 0.0)
        self.model = model
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), (float(betas[0]), float(betas[1])), \
            float(eps), float(weight_decay)
        self.m = np.zeros_like(model.flat)
        self.v = np.zeros_like(model.flat)
        self.state = {"m": views(self.m, model.table), "v": views(self.v, model.table)}
        self.t = 0

    def step(self, grads) -> None:
        """One update of every parameter, in place."""
        g = self._flat_grads(grads)
        self.t += 1
        b1, b2 = self.betas
        p = self.model.flat
        with phase("optimizer"):
            _adamw_step(p, g, self.m, self.v, self.lr, b1, b2, self.eps, self.weight_decay,
                        1.0 - b1 ** self.t, 1.0 - b2 ** self.t)
            if counting():
                state = nbytes(self.m, self.v)
                record("adamw", "optimizer", cv.ADAMW * p.size,
                       reads=(("weights", nbytes(p)), ("gradients", nbytes(g)), ("optimizer_state", state)),
                       writes=(("weights", nbytes(p)), ("optimizer_state", state)))

    def _flat_grads(self, grads) -> np.ndarray:
        flat = getattr(self.model, "grad_flat", None)
        if isinstance(grads, np.ndarray):
            g = grads
        elif isinstance(grads, dict) and flat is not None and grads is self.model.grads:
            g = flat
        elif isinstance(grads, dict):
            missing = sorted(set(self.model.params) - set(grads))
            extra = sorted(set(grads) - set(self.model.params))
            if missing or extra:
                raise ValueError(f"grads must be keyed like model.params; missing {missing[:5]}, unknown {extra[:5]}")
            for s in self.model.table:    # a wrong shape could otherwise shift every later tensor's gradient
                if np.shape(grads[s.name]) != s.shape:
                    raise ValueError(f"grads[{s.name!r}] has shape {np.shape(grads[s.name])}, expected {s.shape}")
            g = np.concatenate([np.asarray(grads[s.name], dtype=self.model.dtype).reshape(-1)
                                for s in self.model.table])
        else:
            raise TypeError(f"grads must be a dict of arrays or a flat array, got {type(grads).__name__}")
        if g.shape != self.model.flat.shape or g.dtype != self.model.flat.dtype:
            raise ValueError(f"flat grads must have shape {self.model.flat.shape} and dtype {self.model.flat.dtype}, "
                             f"got {g.shape} {g.dtype}")
        if not np.all(np.isfinite(g)):
            raise ValueError("grads contain NaN or inf; refusing to corrupt the parameters and Adam state")
        return g

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t, "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}
