"""Plain, obviously-correct references for every minitx kernel: NumPy in float64, no Numba.

Each function here is written to be checked by eye, not to be fast: loops where the op is a loop (attention rows,
embedding rows), straight formulas elsewhere, and backward passes that walk the forward's lines in reverse one
small step at a time (the "staged" style of llm.c's doc/layernorm), rather than repeating the closed forms the
kernels use. Every function upcasts its inputs to float64 and returns float64, so a float32 kernel can be
compared with it and the difference is the kernel's rounding alone.

Shapes follow the dimension legend of `minitx.ops` (B, T, S, C, V, NH, KV, HS, F, N).

    layernorm_fwd / layernorm_bwd              torch.nn.LayerNorm
    rmsnorm_fwd / rmsnorm_bwd                  LlamaRMSNorm, Gemma's (1 + w) with unit_offset=True
    gelu_fwd / gelu_bwd                        torch.nn.functional.gelu(approximate="tanh")
    gated_fwd / gated_bwd                      SwiGLU (silu) and GeGLU (tanh GELU), input laid out [gate | up]
    split_fwd / split_bwd                      split heads, with HF's rotate-half RoPE
    scores_fwd / scores_bwd, mix_fwd / mix_bwd q kᵀ and p v with grouped-query heads
    softmax_fwd / softmax_bwd                  causal softmax where query (b, t) sees keys 0..pos[b, t]
    cross_entropy_fwd / cross_entropy_bwd      mean over rows, like F.cross_entropy
    embedding_fwd / embedding_bwd              gather + learned positions / Gemma scale; scatter-add backward
    linear_fwd / linear_bwd                    x @ w + b
    adamw_step                                 torch.optim.AdamW (single-tensor, non-amsgrad, non-maximize)
    model_forward                              a whole Transformer forward composed from the functions above

and the two tolerance rules every comparison uses: `assert_close` (kernel vs reference, from the dtype's eps and
the magnitudes involved) and `assert_fd_close` (analytic vs central finite differences in float64), with
`check_vjp`, the fake-loss finite-difference check of a backward.
"""
from __future__ import annotations

import math

import numpy as np

from minitx.core.batch import TokenBatch, pack
from minitx.core.ops.attention import block_queries

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def f64(*arrays):
    """Upcast to float64 (copies: references never alias their inputs)."""
    out = tuple(None if a is None else np.array(a, dtype=np.float64) for a in arrays)
    return out[0] if len(out) == 1 else out


# ---- norms ---------------------------------------------------------------------------------------------------

def layernorm_fwd(x, w, b, eps):
    """(N, C) -> (N, C): (x - mean) / sqrt(var + eps) * w + b, biased variance, as torch.nn.LayerNorm."""
    x, w, b = f64(x, w, b)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def layernorm_bwd(dout, x, w, eps, dres=None):
    """-> dx (N, C), dw (C,), db (C,). dres (the skip connection's gradient) is added to dx when given.

    Staged: forward was xmu = x - mean(x); var = mean(xmu²); r = (var + eps)^-½; norm = xmu·r; y = norm·w + b."""
    dout, x, w = f64(dout, x, w)
    C = x.shape[1]
    xmu = x - x.mean(axis=1, keepdims=True)
    var = (xmu ** 2).mean(axis=1, keepdims=True)
    r = 1.0 / np.sqrt(var + eps)
    norm = xmu * r
    db = dout.sum(axis=0)
    dw = (dout * norm).sum(axis=0)
    dnorm = dout * w
    dxmu = dnorm * r                                        # through norm = xmu · r, holding r
    dr = (dnorm * xmu).sum(axis=1, keepdims=True)           # through norm = xmu · r, holding xmu
    dvar = dr * (-0.5) * (var + eps) ** -1.5                # r = (var + eps)^-½
    dxmu = dxmu + dvar * 2.0 * xmu / C                      # var = mean(xmu²)
    dx = dxmu - dxmu.mean(axis=1, keepdims=True)            # xmu = x - mean(x)
    if dres is not None:
        dx = dx + f64(dres)
    return dx, dw, db


def rmsnorm_fwd(x, w, eps, unit_offset=False):
    """(N, C) -> (N, C): x / sqrt(mean(x²) + eps) * w  (Gemma: * (1 + w))."""
    x, w = f64(x, w)
    scale = 1.0 + w if unit_offset else w
    return x / np.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps) * scale


def rmsnorm_bwd(dout, x, w, eps, unit_offset=False, dres=None):
    """-> dx (N, C), dw (C,). Staged: ms = mean(x²); r = (ms + eps)^-½; norm = x·r; y = norm·scale."""
    dout, x, w = f64(dout, x, w)
    C = x.shape[1]
    scale = 1.0 + w if unit_offset else w
    ms = (x ** 2).mean(axis=1, keepdims=True)
    r = 1.0 / np.sqrt(ms + eps)
    norm = x * r
    dw = (dout * norm).sum(axis=0)                          # d(1 + w)/dw = 1, so the same either way
    dnorm = dout * scale
    dx = dnorm * r
    dr = (dnorm * x).sum(axis=1, keepdims=True)
    dms = dr * (-0.5) * (ms + eps) ** -1.5
    dx = dx + dms * 2.0 * x / C
    if dres is not None:
        dx = dx + f64(dres)
    return dx, dw


# ---- activations ---------------------------------------------------------------------------------------------

def gelu_fwd(x):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    x = f64(x)
    return 0.5 * x * (1.0 + np.tanh(GELU_K * (x + GELU_C * x ** 3)))


def gelu_grad(x):
    """d gelu / dx, staged: inner = k(x + c x³); t = tanh(inner); y = ½ x (1 + t)."""
    x = f64(x)
    inner = GELU_K * (x + GELU_C * x ** 3)
    t = np.tanh(inner)
    dinner_dx = GELU_K * (1.0 + 3.0 * GELU_C * x ** 2)
    dt_dinner = 1.0 - t ** 2
    return 0.5 * (1.0 + t) + 0.5 * x * dt_dinner * dinner_dx


def gelu_bwd(dout, x):
    return f64(dout) * gelu_grad(x)


def silu_fwd(g):
    g = f64(g)
    return g / (1.0 + np.exp(-g))


def silu_grad(g):
    """d/dg of g·σ(g) = σ(g) + g·σ(g)(1 − σ(g))."""
    g = f64(g)
    s = 1.0 / (1.0 + np.exp(-g))
    return s + g * s * (1.0 - s)


def gated_fwd(u, kind):
    """(N, 2F) laid out [gate | up] -> (N, F): act(gate) · up; kind "swiglu" (silu) or "geglu" (tanh GELU)."""
    u = f64(u)
    F = u.shape[1] // 2
    gate, up = u[:, :F], u[:, F:]
    act = silu_fwd(gate) if kind == "swiglu" else gelu_fwd(gate)
    return act * up


def gated_bwd(dout, u, kind):
    """-> du (N, 2F): [dgate | dup] with dgate = dout·up·act'(gate), dup = dout·act(gate)."""
    dout, u = f64(dout, u)
    F = u.shape[1] // 2
    gate, up = u[:, :F], u[:, F:]
    act, dact = (silu_fwd(gate), silu_grad(gate)) if kind == "swiglu" else (gelu_fwd(gate), gelu_grad(gate))
    return np.concatenate([dout * up * dact, dout * act], axis=1)


# ---- attention -----------------------------------------------------------------------------------------------

def rotate_half(x):
    """HF transformers: cat(-x2, x1) over the last axis (x1 = first half, x2 = second half)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rotate_half_transpose(x):
    """The transpose of the linear map rotate_half: cat(x2, -x1)."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., half:], -x[..., :half]], axis=-1)


def split_fwd(qkv, pos, NH, KV, cos=None, sin=None, S=None):
    """qkv (B, T, (NH+2KV)·HS), pos (B, T) -> q (B, NH, T, HS), k and v (B, KV, S, HS) (zeros where no token wrote).

    RoPE as in HF's apply_rotary_pos_emb: x·cos + rotate_half(x)·sin with cos, sin (P, HS/2) repeated to HS."""
    qkv = f64(qkv)
    B, T, D = qkv.shape
    HS = D // (NH + 2 * KV)
    S = T if S is None else S
    q = np.zeros((B, NH, T, HS))
    k = np.zeros((B, KV, S, HS))
    v = np.zeros((B, KV, S, HS))
    for b in range(B):
        for t in range(T):
            p = pos[b, t]
            heads = qkv[b, t].reshape(NH + 2 * KV, HS)
            qh, kh, vh = heads[:NH], heads[NH:NH + KV], heads[NH + KV:]
            if cos is not None:
                c = np.concatenate([cos[p], cos[p]]).astype(np.float64)
                s = np.concatenate([sin[p], sin[p]]).astype(np.float64)
                qh = qh * c + rotate_half(qh) * s
                kh = kh * c + rotate_half(kh) * s
            q[b, :, t] = qh
            k[b, :, p] = kh
            v[b, :, p] = vh
    return q, k, v


def split_bwd(dq, dk, dv, pos, cos=None, sin=None):
    """dq (B, NH, T, HS), dk and dv (B, KV, S, HS) -> dqkv (B, T, (NH+2KV)·HS), reading dk, dv at rows pos.

    y = x·c + R x·s is linear in x, so dx = dy·c + Rᵀ(dy·s)."""
    dq, dk, dv = f64(dq, dk, dv)
    B, NH, T, HS = dq.shape
    KV = dk.shape[1]
    dqkv = np.zeros((B, T, (NH + 2 * KV) * HS))
    for b in range(B):
        for t in range(T):
            p = pos[b, t]
            gq, gk, gv = dq[b, :, t], dk[b, :, p], dv[b, :, p]
            if cos is not None:
                c = np.concatenate([cos[p], cos[p]]).astype(np.float64)
                s = np.concatenate([sin[p], sin[p]]).astype(np.float64)
                gq = gq * c + rotate_half_transpose(gq * s)
                gk = gk * c + rotate_half_transpose(gk * s)
            dqkv[b, t] = np.concatenate([gq, gk, gv]).reshape(-1)
    return dqkv


def scores_fwd(q, k):
    """q (B, NH, T, HS), k (B, KV, S, HS) -> (B, NH, T, S): query head h reads key head h // (NH/KV)."""
    q, k = f64(q, k)
    B, NH, T, _ = q.shape
    KV, S = k.shape[1], k.shape[2]
    G = NH // KV
    s = np.zeros((B, NH, T, S))
    for b in range(B):
        for h in range(NH):
            s[b, h] = q[b, h] @ k[b, h // G].T
    return s


def scores_bwd(ds, q, k):
    """-> dq (B, NH, T, HS), dk (B, KV, S, HS); each key head sums the gradients of its group of query heads."""
    ds, q, k = f64(ds, q, k)
    B, NH = q.shape[:2]
    G = NH // k.shape[1]
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    for b in range(B):
        for h in range(NH):
            dq[b, h] = ds[b, h] @ k[b, h // G]
            dk[b, h // G] += ds[b, h].T @ q[b, h]
    return dq, dk


def mix_fwd(p, v):
    """p (B, NH, T, S), v (B, KV, S, HS) -> (B, NH, T, HS)."""
    p, v = f64(p, v)
    B, NH, T, _ = p.shape
    G = NH // v.shape[1]
    out = np.zeros((B, NH, T, v.shape[3]))
    for b in range(B):
        for h in range(NH):
            out[b, h] = p[b, h] @ v[b, h // G]
    return out


def mix_bwd(dout, p, v):
    """-> dp (B, NH, T, S), dv (B, KV, S, HS)."""
    dout, p, v = f64(dout, p, v)
    B, NH = p.shape[:2]
    G = NH // v.shape[1]
    dp = np.zeros_like(p)
    dv = np.zeros_like(v)
    for b in range(B):
        for h in range(NH):
            dp[b, h] = dout[b, h] @ v[b, h // G].T
            dv[b, h // G] += p[b, h].T @ dout[b, h]
    return dp, dv


def softmax_fwd(scores, pos, scale):
    """(B, NH, T, S) -> probs: row (b, h, t) is softmax(scale · scores[..., :n]) with n = min(pos[b, t] + 1, S),
    and exactly 0 beyond. Masked scores are never read (they may hold anything, NaN included)."""
    scores = f64(scores)
    B, NH, T, S = scores.shape
    probs = np.zeros_like(scores)
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(int(pos[b, t]) + 1, S)
                a = scale * scores[b, h, t, :n]
                e = np.exp(a - a.max())
                probs[b, h, t, :n] = e / e.sum()
    return probs


def softmax_bwd(dprobs, probs, pos, scale):
    """-> dscores: for each row, ds = scale · Jᵀ dp with the softmax Jacobian J = diag(p) − p pᵀ (symmetric),
    over the visible entries only; masked entries get exactly 0."""
    dprobs, probs = f64(dprobs, probs)
    B, NH, T, S = probs.shape
    ds = np.zeros_like(probs)
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                n = min(int(pos[b, t]) + 1, S)
                p = probs[b, h, t, :n]
                J = np.diag(p) - np.outer(p, p)
                ds[b, h, t, :n] = scale * (J.T @ dprobs[b, h, t, :n])
    return ds


# ---- loss ----------------------------------------------------------------------------------------------------

def cross_entropy_fwd(logits, targets):
    """logits (N, V), targets (N,) -> mean over rows of −log softmax(logits)[target]."""
    logits = f64(logits)
    total = 0.0
    for i in range(logits.shape[0]):
        row = logits[i]
        m = row.max()
        lse = m + math.log(np.exp(row - m).sum())
        total += lse - row[targets[i]]
    return total / logits.shape[0]


def cross_entropy_bwd(logits, targets, dloss=1.0):
    """-> dlogits (N, V) = dloss · (softmax(logits) − onehot(targets)) / N."""
    logits = f64(logits)
    N, V = logits.shape
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    onehot = np.zeros((N, V))
    onehot[np.arange(N), targets] = 1.0
    return dloss * (p - onehot) / N


# ---- embedding -----------------------------------------------------------------------------------------------

def embedding_fwd(tokens, pos, wte, wpe=None, scale=None):
    """tokens, pos (B, T) -> (B, T, C): wte[token]·scale + wpe[pos] (each term only when given)."""
    wte, wpe = f64(wte, wpe)
    B, T = tokens.shape
    out = np.zeros((B, T, wte.shape[1]))
    for b in range(B):
        for t in range(T):
            row = wte[tokens[b, t]] * (1.0 if scale is None else scale)
            if wpe is not None:
                row = row + wpe[pos[b, t]]
            out[b, t] = row
    return out


def embedding_bwd(dout, tokens, pos, V, P=None, scale=None):
    """-> dwte (V, C), dwpe (P, C) or None: every (b, t) adds its row of dout into the rows it read, so a token that
    appears twice collects both contributions."""
    dout = f64(dout)
    B, T, C = dout.shape
    dwte = np.zeros((V, C))
    dwpe = np.zeros((P, C)) if P is not None else None
    for b in range(B):
        for t in range(T):
            dwte[tokens[b, t]] += dout[b, t] * (1.0 if scale is None else scale)
            if dwpe is not None:
                dwpe[pos[b, t]] += dout[b, t]
    return dwte, dwpe


# ---- linear --------------------------------------------------------------------------------------------------

def linear_fwd(x, w, b=None, transposed=False):
    x, w, b = f64(x, w, b)
    wm = w.T if transposed else w
    return x @ wm + (0.0 if b is None else b)


def linear_bwd(dout, x, w, transposed=False):
    """-> dx, dw (shaped like w), db."""
    dout, x, w = f64(dout, x, w)
    wm = w.T if transposed else w
    dw = x.T @ dout
    return dout @ wm.T, (dw.T if transposed else dw), dout.sum(axis=0)


# ---- optimizer -----------------------------------------------------------------------------------------------

def adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay):
    """One torch.optim.AdamW step (`_single_tensor_adamw`, amsgrad=False), on float64 copies; t counts from 1.

        p ← p·(1 − lr·wd);  m ← m + (g − m)(1 − β1);  v ← β2·v + (1 − β2)·g²
        p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + eps)
    Returns the new (p, m, v)."""
    p, g, m, v = f64(p, g, m, v)
    b1, b2 = betas
    p = p * (1.0 - lr * weight_decay)
    m = m + (g - m) * (1.0 - b1)                            # torch: exp_avg.lerp_(grad, 1 - beta1)
    v = v * b2 + (1.0 - b2) * g * g                         # torch: exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
    step_size = lr / (1.0 - b1 ** t)
    denom = np.sqrt(v) / math.sqrt(1.0 - b2 ** t) + eps
    return p - step_size * m / denom, m, v


# ---- the whole model -----------------------------------------------------------------------------------------

def model_forward(cfg, params, tokens, cos=None, sin=None, embed_scale=None):
    """tokens (B, T) -> logits (B, T, V) in float64, composed from the references above and the layout documented in
    minitx/params.py. Pass the model's RoPE tables and embedding scale (both are model constants)."""
    B, T = tokens.shape
    P = {k: f64(v) for k, v in params.items()}
    NH, KV, HS, C = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
    pos = np.tile(np.arange(T), (B, 1))
    learned = cfg.position == "learned"

    def norm(x, prefix):
        if cfg.norm == "layernorm":
            return layernorm_fwd(x, P[f"{prefix}.w"], P[f"{prefix}.b"], cfg.norm_eps)
        return rmsnorm_fwd(x, P[f"{prefix}.w"], cfg.norm_eps, cfg.norm_unit_offset)

    def linear(x, prefix):
        return linear_fwd(x, P[f"{prefix}.w"], P.get(f"{prefix}.b"))

    x = embedding_fwd(tokens, pos, P["wte"], P["wpe"] if learned else None, embed_scale).reshape(B * T, C)
    for l in range(cfg.n_layers):
        n = f"layers.{l}"
        qkv = linear(norm(x, f"{n}.ln_1"), f"{n}.attn.qkv").reshape(B, T, -1)
        q, k, v = split_fwd(qkv, pos, NH, KV, cos, sin)
        p = softmax_fwd(scores_fwd(q, k), pos, 1.0 / math.sqrt(HS))
        o = mix_fwd(p, v).transpose(0, 2, 1, 3).reshape(B * T, NH * HS)
        x = x + linear(o, f"{n}.attn.proj")
        u = linear(norm(x, f"{n}.ln_2"), f"{n}.mlp.up")
        if cfg.mlp == "standard":
            a = gelu_fwd(u)
        else:
            a = gated_fwd(u, "geglu" if cfg.activation == "gelu_tanh" else "swiglu")
        x = x + linear(a, f"{n}.mlp.down")
    head = P["wte"] if cfg.tie_embeddings else P["lm_head.w"]
    return linear_fwd(norm(x, "ln_f"), head, transposed=True).reshape(B, T, cfg.vocab_size)


# ---- comparing with the references: the two tolerance rules ------------------------------------------------

def assert_close(actual, expected, name: str, dtype, terms: int = 1, scale: float | None = None) -> None:
    """The rule for every kernel-vs-reference comparison (expected is the float64 reference):

        |actual − expected| ≤ 4 · terms · eps(dtype) · (|expected| + scale),   scale = max|expected| by default.

    eps(dtype) is the unit roundoff of the dtype the kernel ran in. `terms` is the length of the longest sum that
    produced an entry: the rounding error of a sum of n terms is bounded by about n·eps times the magnitude of
    the terms. `scale` (the tensor's largest magnitude) floors the bound, so an entry that is small because of
    cancellation is not held to a relative accuracy its inputs could never give it. The factor 4 covers the few
    roundings per term (a product, then the add, then a store in the kernel's dtype).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != reference {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{name}: non-finite entries at {np.argwhere(~np.isfinite(actual))[:5]}"
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    bound = 4 * terms * np.finfo(dtype).eps * (np.abs(expected) + scale)
    err = np.abs(actual - expected)
    if np.any(err > bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        rel = err / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
        raise AssertionError(
            f"{name} {np.dtype(dtype).name} shape {actual.shape}: max abs err {err.max():.3e}, max rel err "
            f"{rel.max():.3e}; worst at {tuple(int(j) for j in i)}: got {actual[i]!r}, reference {expected[i]!r}, "
            f"allowed {bound[i]:.3e} (4·{terms}·eps·(|ref| + {scale:.3e}))")


H = 1e-5  # finite-difference step (float64)


def assert_fd_close(analytic, numeric, name: str, loss_scale: float) -> None:
    """The rule for analytic-vs-finite-difference gradients, both float64:

        |analytic − numeric| ≤ 1e-6 · (|numeric| + max|numeric|) + 1e3 · eps64 · loss_scale / H

    A central difference with step H has truncation error O(H²·f''') (≈1e-10 here, inside the relative term) and
    roundoff error about eps·|L|/H from evaluating the fake loss L twice (`loss_scale` = Σ|out·dout|)."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    assert analytic.shape == numeric.shape, f"{name}: shape {analytic.shape} != {numeric.shape}"
    bound = 1e-6 * (np.abs(numeric) + np.abs(numeric).max()) + 1e3 * np.finfo(np.float64).eps * loss_scale / H
    err = np.abs(analytic - numeric)
    if np.any(err > bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"{name} shape {analytic.shape}: analytic vs finite differences, max abs err "
                             f"{err.max():.3e}; worst at {tuple(int(j) for j in i)}: analytic {analytic[i]!r}, "
                             f"numeric {numeric[i]!r}, allowed {bound[i]:.3e}")


def fd_grad(fake_loss, x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar `fake_loss()` with respect to every entry of x (perturbed in place and
    restored). Inputs are tiny, so every entry is checked."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + H
        plus = fake_loss()
        x[idx] = old - H
        minus = fake_loss()
        x[idx] = old
        g[idx] = (plus - minus) / (2 * H)
    return g


def check_vjp(forward, inputs: dict[str, np.ndarray], douts, analytic: dict[str, np.ndarray], name: str) -> None:
    """Finite-difference check of a backward: `forward()` reads the arrays in `inputs` (perturbed in place) and
    returns one output or a tuple of outputs; `douts` match them; `analytic` maps input names to the backward's
    gradients. The fake loss is L = Σ_i Σ out_i · dout_i."""
    douts = douts if isinstance(douts, tuple) else (douts,)

    def fake_loss() -> float:
        outs = forward()
        outs = outs if isinstance(outs, tuple) else (outs,)
        return float(sum((np.asarray(o) * d).sum() for o, d in zip(outs, douts)))

    outs = forward()
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss_scale = float(sum(np.abs(np.asarray(o) * d).sum() for o, d in zip(outs, douts))) + 1.0
    for key, x in inputs.items():
        assert_fd_close(analytic[key], fd_grad(fake_loss, x), f"{name}: d{key}", loss_scale)


# ---- layouts: split_forward packs tokens one row each and lays queries out block by block -----------------------

def packed(pos: np.ndarray) -> TokenBatch:
    """Sequence b's tokens at positions pos[b], in KV slot b, packed one row each."""
    B, T = pos.shape
    return pack(np.zeros(B * T, dtype=np.int64), np.repeat(np.arange(B), T), pos.reshape(-1))


def by_sequence(q: np.ndarray, batch: TokenBatch, NH: int, HS: int, B: int, T: int) -> np.ndarray:
    """split's queries, block by block, as one (B, NH, T, HS) array (sequence b = slot b)."""
    out = np.empty((B, NH, T, HS), dtype=q.dtype)
    for blk in batch.blocks:
        out[blk.slot:blk.slot + blk.b] = block_queries(q, blk, NH, HS)
    return out


def to_blocks(dq: np.ndarray, batch: TokenBatch) -> np.ndarray:
    """The inverse: a (B, NH, T, HS) array laid out block by block, as split_backward reads it."""
    NH, HS = dq.shape[1], dq.shape[3]
    flat = np.empty(dq.size, dtype=dq.dtype)
    for blk in batch.blocks:
        block_queries(flat, blk, NH, HS)[...] = dq[blk.slot:blk.slot + blk.b]
    return flat
