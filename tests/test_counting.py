"""Counts from execution equal `minitx.formulas`, exactly, for drawn configurations (STYLE P10, P13).

The model's ops record their cost from the arrays they are handed; `minitx.formulas` derives it from the
Config and (B, T) alone. Here both run for hypothesis-drawn tiny models (GPT-2 and Llama families, and every
switch drawn independently: tied/untied, MHA/GQA/MQA, biases or not, Gemma's scale and (1 + w)), and every
phase, op name, FLOP, MAC and byte per category must agree. The structural claims the lessons make (backward
= 2 × forward in MACs, what training/forward is and why it is not 3, forward matmul FLOPs = 2·params·tokens +
attention) are checked on the counts too, and the Counter API on real runs.

`measure_saved_activations` below measures what a training forward keeps by merging the byte spans of the
arrays its caches hold; `minitx.memory.measure_saved_activations` measures the same by merging views into
their base arrays. Both must equal the formula.
"""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitx
from minitx import AdamW, Config, Transformer
from minitx import conventions as cv
from minitx import formulas, memory
from minitx.counting import CATEGORIES, Counter, Record
from minitx.model import _positions
from minitx.ops.loss import cross_entropy_forward
from strategies import config_and_shape, configs

DTYPES = st.sampled_from(["float32", "float64"])
# GPT-2 and Llama families, and "any": each switch drawn on its own
ANY_CONFIG_AND_SHAPE = st.one_of(config_and_shape(), config_and_shape(family="any"))
ANY_CONFIG = st.one_of(configs(), configs(family="any"))


# ---- helpers -------------------------------------------------------------------------------------------------

def measured(counter: Counter) -> dict[str, dict[str, tuple]]:
    """{phase: {name: (op, flops, macs, reads, writes)}} in record order, reads and writes as {category: bytes}."""
    out: dict[str, dict[str, tuple]] = {}
    for r in counter.records:
        names = out.setdefault(r.phase, {})
        assert r.name not in names, f"{r.name} recorded twice in phase {r.phase}"
        reads: dict[str, int] = {}
        writes: dict[str, int] = {}
        for cat, n in r.reads:
            reads[cat] = reads.get(cat, 0) + n
        for cat, n in r.writes:
            writes[cat] = writes.get(cat, 0) + n
        names[r.name] = (r.op, r.flops, r.macs, reads, writes)
    return out


def predicted(costs: dict[str, formulas.OpCost]) -> dict[str, tuple]:
    return {name: (c.op, c.flops, c.macs, c.reads, c.writes) for name, c in costs.items()}


def assert_same(got: dict[str, tuple], want: dict[str, tuple], what: str) -> None:
    assert list(got) == list(want), f"{what}: op names or order differ"
    for name in want:
        assert got[name] == want[name], f"{what} {name}:\n  counted  {got[name]}\n  formula  {want[name]}"


def nonzero(d: dict[str, int]) -> dict[str, int]:
    """Counter.bytes_by_category lists a category read but never written with 0 written; summary omits it."""
    return {k: v for k, v in d.items() if v}


def training_run(cfg: Config, B: int, T: int, dtype: str = "float32", seed: int = 0):
    """(model, optimizer, counter) after one counted loss_and_grads + AdamW.step on random ids."""
    model = Transformer(cfg, seed=seed, dtype=dtype)
    opt = AdamW(model)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, (B, T))
    targets = rng.integers(0, cfg.vocab_size, (B, T))
    with minitx.count() as c:
        _, grads = model.loss_and_grads(tokens, targets)
        opt.step(grads)
    return model, opt, c


def _arrays(obj, out: list) -> None:
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):          # NamedTuple caches are tuples
        for x in obj:
            _arrays(x, out)


def measure_saved_activations(model: Transformer, tokens, targets=None) -> int:
    """Bytes of memory held by the arrays a training forward keeps for its backward.

    Runs `_forward(tokens, pos, keep=True)` (and, with targets, the loss's forward, as `loss_and_grads` does)
    and walks the returned caches. Parameter views (anything sharing memory with model.flat) and the RoPE
    tables are left out. Arrays are merged by the memory they span, so an array reachable from several caches
    (the positions, the residual stream seen through different reshapes, k and v as views of their buffers)
    counts once."""
    tokens = model.check_tokens(tokens, "tokens")
    B, T = tokens.shape
    logits, caches = model._forward(tokens, _positions(B, T), keep=True)
    kept = [caches]
    if targets is not None:
        targets = model.check_tokens(targets, "targets")
        _, loss_cache = cross_entropy_forward(logits.reshape(B * T, -1), targets.reshape(-1), "loss")
        kept.append(loss_cache)
    arrays: list[np.ndarray] = []
    _arrays(kept, arrays)
    constants = [model.flat] + [t for t in model.rope if t is not None]
    spans = sorted(np.lib.array_utils.byte_bounds(a) for a in arrays
                   if a.nbytes and not any(np.shares_memory(a, k) for k in constants))
    total, lo, hi = 0, None, None
    for a, b in spans:                            # union of [start, end) byte ranges
        if hi is not None and a < hi:
            hi = max(hi, b)
            continue
        if hi is not None:
            total += hi - lo
        lo, hi = a, b
    return total + (hi - lo if hi is not None else 0)


# ---- parameters ----------------------------------------------------------------------------------------------

@settings(max_examples=30)
@given(ANY_CONFIG)
def test_param_counts_equal_the_allocated_model(cfg):
    model = Transformer(cfg)
    assert model.num_params() == formulas.num_params(cfg)
    parts = dict.fromkeys(("embedding", "attention", "mlp", "norm", "lm_head"), 0)
    for spec in model.table:
        parts[spec.part] += spec.size
    breakdown = formulas.param_breakdown(cfg)
    assert breakdown == {**parts, "total": model.num_params()}
    sizes = {spec.name: spec.size for spec in model.table}
    vocabulary_tables = sizes["wte"] + sizes.get("wpe", 0) + sizes.get("lm_head.w", 0)
    assert formulas.non_embedding_params(cfg) == model.num_params() - vocabulary_tables
    # matmul parameters: every linear layer's w, and the head once (wte itself when tied)
    matmul = sum(n for name, n in sizes.items() if name.endswith((".qkv.w", ".proj.w", ".up.w", ".down.w")))
    matmul += sizes["wte"] if cfg.tie_embeddings else sizes["lm_head.w"]
    assert formulas.matmul_params(cfg) == matmul


# ---- a training step, op by op -------------------------------------------------------------------------------

@settings(max_examples=20)
@given(ANY_CONFIG_AND_SHAPE, DTYPES)
def test_training_step_counts_equal_formulas(cfg_bt, dtype):
    cfg, (B, T) = cfg_bt
    model, opt, c = training_run(cfg, B, T, dtype)
    step = formulas.training_step(cfg, B, T, dtype)
    got = measured(c)
    assert list(got) == ["forward", "backward", "optimizer"]
    for ph in got:
        assert_same(got[ph], predicted(step[ph]), ph)
        totals = formulas.summary(step[ph])
        sub = c.filter(phase=ph)
        assert (totals["flops"], totals["macs"], totals["bytes_read"], totals["bytes_written"]) == \
            (sub.flops, sub.macs, sub.bytes_read, sub.bytes_written)
        assert totals["reads"] == nonzero(sub.bytes_by_category("read"))
        assert totals["writes"] == nonzero(sub.bytes_by_category("written"))
    assert formulas.summary(step)["flops"] == c.flops        # the nested dict sums over all phases

    # memory that was allocated, against its formula
    assert model.flat.nbytes == formulas.param_bytes(cfg, dtype)
    assert model.grad_flat.nbytes == formulas.grad_bytes(cfg, dtype)
    assert opt.m.nbytes + opt.v.nbytes == formulas.adam_state_bytes(cfg, dtype)


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE, DTYPES)
def test_forward_pass_counts_equal_formulas(cfg_bt, dtype):
    cfg, (B, T) = cfg_bt
    model = Transformer(cfg, dtype=dtype)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (B, T))
    with minitx.count() as c:
        model.forward(tokens)
    assert_same(measured(c)["forward"], predicted(formulas.forward_pass(cfg, B, T, dtype)), "forward")


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE, DTYPES)
def test_prefill_and_decode_counts_equal_formulas(cfg_bt, dtype):
    from minitx.decode import KVCache, decode, prefill
    cfg, (B, T) = cfg_bt
    cfg = cfg.replace(n_ctx=max(cfg.n_ctx, T + 2))               # room for two decode steps
    model = Transformer(cfg, dtype=dtype)
    rng = np.random.default_rng(2)
    cache = KVCache(cfg, B, T + 2, dtype)
    assert cache.nbytes == formulas.kv_cache_bytes(cfg, B, T + 2, dtype)
    with minitx.count() as c:
        prefill(model, rng.integers(0, cfg.vocab_size, (B, T)), cache)
    assert_same(measured(c)["prefill"], predicted(formulas.prefill(cfg, B, T, dtype)), "prefill")
    for t in (T, T + 1):                                          # cache length before the step
        with minitx.count() as c:
            decode(model, rng.integers(0, cfg.vocab_size, B), cache)
        assert_same(measured(c)["decode"], predicted(formulas.decode_step(cfg, B, t, dtype)), f"decode t={t}")
        kv_written = sum(n for r in c.records for cat, n in r.writes if cat == "kv_cache")
        assert kv_written == formulas.kv_bytes_per_token(cfg, dtype) * B


# ---- memory --------------------------------------------------------------------------------------------------

@settings(max_examples=20)
@given(ANY_CONFIG_AND_SHAPE, DTYPES)
def test_saved_activations_equal_what_the_forward_keeps(cfg_bt, dtype):
    cfg, (B, T) = cfg_bt
    model = Transformer(cfg, dtype=dtype)
    rng = np.random.default_rng(3)
    tokens, targets = rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))
    forward_only = formulas.saved_activation_bytes(cfg, B, T, dtype, include_loss=False)
    with_loss = formulas.saved_activation_bytes(cfg, B, T, dtype)          # what loss_and_grads keeps
    assert measure_saved_activations(model, tokens) == forward_only
    assert measure_saved_activations(model, tokens, targets) == with_loss
    # minitx.memory measures it too, merging views by their base array rather than by byte span
    assert memory.measure_saved_activations(model, tokens, targets, include_loss=False) == forward_only
    assert memory.measure_saved_activations(model, tokens, targets) == with_loss
    mem = formulas.training_memory(cfg, B, T, dtype)
    assert mem["activations"] == with_loss
    assert mem["total"] == mem["weights"] + mem["gradients"] + mem["optimizer_state"] + mem["activations"]


# the ops whose record writes exactly one tensor (the split writes q, k and v; the norms add their statistics)
SINGLE_OUTPUT = (".attn.qkv", ".attn.scores", ".attn.softmax", ".attn.mix", ".attn.merge", ".attn.proj",
                 ".residual", ".mlp.up", ".mlp.act", ".mlp.down", "lm_head", "embed")


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE, DTYPES)
def test_largest_activation_is_the_largest_tensor_a_forward_writes(cfg_bt, dtype):
    cfg, (B, T) = cfg_bt
    model = Transformer(cfg, dtype=dtype)
    with minitx.count() as c:
        model.forward(np.zeros((B, T), dtype=np.int64))
    written = {r.bytes_written for r in c.records if r.name.endswith(SINGLE_OUTPUT)}
    sizes = formulas.activation_sizes(cfg, B, T, dtype)
    assert set(sizes.values()) <= written
    mem = formulas.inference_memory(cfg, B, T, dtype)
    assert mem["largest_activation"] == max(written)
    assert mem["kv_cache"] == formulas.kv_cache_bytes(cfg, B, T, dtype)
    assert mem["total"] == mem["weights"] + mem["kv_cache"] + mem["largest_activation"]


# ---- structural claims, read off the counts ------------------------------------------------------------------

def _phase(c: Counter, ph: str) -> Counter:
    return c.filter(phase=ph)


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE)
def test_backward_macs_are_exactly_twice_forward(cfg_bt):
    """Every multiply-add of the forward is a matmul (linear layers, the head, scores, mix), and each matmul's
    backward is two of the same size: dX = dY·Wᵀ and dW = Xᵀ·dY. No other op does multiply-adds."""
    cfg, (B, T) = cfg_bt
    _, _, c = training_run(cfg, B, T)
    assert _phase(c, "backward").macs == 2 * _phase(c, "forward").macs
    for r in c.records:
        assert (r.macs > 0) == (r.op in ("matmul", "attention")), r


def nonmatmul_excess(cfg: Config, B: int, T: int) -> int:
    """Σ over ops of (backward FLOPs − 2 × forward FLOPs), plus the optimizer: exactly what separates a training
    step's FLOPs from 3 × its forward's. The matmuls' multiply-adds contribute 0 (backward = 2 × forward), so
    every term is a non-matmul op's, derived here from the conventions, op by op (a third derivation, beside
    the counts and formulas.training_step):"""
    N, C, V, L = B * T, cfg.d_model, cfg.vocab_size, cfg.n_layers
    NH, KV, HS, F = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    U = 2 * F if cfg.mlp == "gated" else F
    QKV = (NH + 2 * KV) * HS
    ln = cfg.norm == "layernorm"
    (fe, fr), (be, br) = (cv.LAYERNORM_FWD, cv.LAYERNORM_BWD) if ln else (cv.RMSNORM_FWD, cv.RMSNORM_BWD)
    uo = cv.NORM_UNIT_OFFSET * C if cfg.norm_unit_offset else 0
    norm = N * (be * C + br) - 2 * N * (fe * C + fr) - 2 * uo      # (1 + w): computed in the forward only
    act = {"standard": (cv.GELU_FWD, cv.GELU_BWD)}.get(cfg.mlp) or \
        ((cv.GEGLU_FWD, cv.GEGLU_BWD) if cfg.activation == "gelu_tanh" else (cv.SWIGLU_FWD, cv.SWIGLU_BWD))
    visible = B * T * (T + 1) // 2 * NH
    (sfe, sfr), (sbe, sbr) = cv.SOFTMAX_FWD, cv.SOFTMAX_BWD
    per_layer = (
        2 * (norm + cv.RESIDUAL_GRAD_ADD * N * C)                  # ln_1, ln_2: the skip's gradient joins here
        - 2 * 2 * cv.ELEMENTWISE * N * C                           # two residual adds: no backward FLOPs
        - (N * (QKV + C + U + C) if cfg.bias else 0)               # bias add = bias-gradient sum: 1×, not 2×
        - cv.ROPE * N * (NH + KV) * HS * (cfg.position == "rope")  # rotating back costs 1×, not 2×
        + (sbe - 2 * sfe) * visible + (sbr - 2 * sfr) * B * NH * T  # softmax backward is cheaper than 2×
        + (act[1] - 2 * act[0]) * N * F)                           # GELU 18 = 2·9; GeGLU +1; SwiGLU +2
    learned, scale = int(cfg.position == "learned"), int(cfg.embed_scale)
    embed = N * C * (1 + learned + scale) - 2 * N * C * (learned + scale)   # the scatter-add into wte is new
    (lv, lr), (bv, blr) = cv.CROSS_ENTROPY_FWD, cv.CROSS_ENTROPY_BWD
    loss = N * (bv * V + blr) - 2 * N * (lv * V + lr)              # −5·V per row: the loss backward is cheap
    return L * per_layer + norm + embed + loss + cv.ADAMW * formulas.num_params(cfg)


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE)
def test_training_over_forward_flops_is_3_plus_the_non_matmul_excess(cfg_bt):
    """training / forward = 3 + excess / forward, exactly (forward = the forward phase, the loss included).

    Not 3, because only the matmuls' backward is exactly 2× their forward. The rest: the loss backward is
    3·V + 1 per row against 2·(4·V + 4); the softmax's 5 per entry against 2·7; residual adds and RoPE have
    backward FLOPs 0 and 1× (not 2×); bias adds and their gradient sums are 1×; norms are a little over 2×;
    the embedding's scatter-add is new; and AdamW adds 15 per parameter. At GPT-2 small's shapes (B = 1,
    T = 1024) the ratio is 3.0028; at B = 8 it is 2.9972 (the optimizer is amortised over more tokens, and the
    loss and softmax savings win): see test_formulas.test_training_to_forward_ratio_of_gpt2_small."""
    cfg, (B, T) = cfg_bt
    _, _, c = training_run(cfg, B, T)
    fwd, bwd, opt = (_phase(c, ph).flops for ph in ("forward", "backward", "optimizer"))
    assert fwd + bwd + opt == 3 * fwd + nonmatmul_excess(cfg, B, T)
    # ... and the matmuls' own FLOPs (their multiply-adds: 2·MACs) are exactly 3× in training
    mm = c.filter(op="matmul").macs + c.filter(op="attention").macs
    fmm = _phase(c, "forward").filter(op="matmul").macs + _phase(c, "forward").filter(op="attention").macs
    assert 2 * mm == 3 * (2 * fmm)
    ratio = Fraction(fwd + bwd + opt, fwd)
    step = formulas.training_step(cfg, B, T)
    assert ratio == Fraction(formulas.summary(step)["flops"], formulas.summary(step["forward"])["flops"])


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE)
def test_forward_matmul_flops_are_2_params_tokens_plus_attention(cfg_bt):
    """Forward multiply-add FLOPs (2·MACs) = 2·(matmul parameters)·B·T + 4·L·B·T²·NH·HS.

    Matmul parameters: every linear layer's weight and the LM head (the tied wte counted once, as the head);
    not norms, biases, wpe, nor the embedding lookup (a gather, 0 FLOPs). The attention term is scores and mix
    over the full T × T rectangle, 2·B·NH·T²·HS each per layer: per token 4·L·T·NH·HS, PaLM's forward
    term."""
    cfg, (B, T) = cfg_bt
    model = Transformer(cfg)
    with minitx.count() as c:
        model.forward(np.zeros((B, T), dtype=np.int64))
    attention = 4 * cfg.n_layers * B * T * T * cfg.n_heads * cfg.head_dim
    assert 2 * c.macs == 2 * formulas.matmul_params(cfg) * B * T + attention
    assert attention == formulas.attention_flops_palm(cfg, T) * B * T
    assert 2 * c.filter(op="attention").macs == attention


# ---- the Counter API, on real runs ---------------------------------------------------------------------------

TINY = Config.preset("tiny-gpt2")


def test_counters_nest_and_reset():
    model = Transformer(TINY)
    tokens = np.zeros((1, 4), dtype=np.int64)
    with minitx.count() as outer:
        model.forward(tokens)
        with minitx.count() as inner:
            model.forward(tokens)
        n_inner = len(inner.records)
        model.forward(tokens)                                   # inner is closed: only outer sees this one
    assert len(inner.records) == n_inner == len(outer.records) // 3
    assert outer.flops == 3 * inner.flops
    model.forward(tokens)                                       # outside every counter: nothing recorded
    assert len(outer.records) == 3 * n_inner
    outer.reset()
    assert outer.records == [] and outer.flops == outer.bytes == 0


def test_two_identical_steps_count_identically():
    counts = [training_run(TINY, 2, 5, seed=7)[2] for _ in range(2)]
    assert counts[0].records == counts[1].records
    # a second step on the same model and optimizer too: counts do not depend on values or on step number
    model = Transformer(TINY)
    opt = AdamW(model)
    tokens = np.arange(10).reshape(2, 5)
    runs = []
    for _ in range(2):
        with minitx.count() as c:
            _, g = model.loss_and_grads(tokens, tokens[:, ::-1])
            opt.step(g)
        runs.append(c.records)
    assert runs[0] == runs[1] == counts[0].records


def test_filter_by_prefix_phase_op():
    cfg = TINY
    _, _, c = training_run(cfg, 2, 3)
    step = formulas.training_step(cfg, 2, 3)
    block = c.filter("layers.0")
    assert block.records and all(r.name.startswith("layers.0.") for r in block.records)
    for ph in ("forward", "backward"):
        want = formulas.by_name_prefix(step[ph], "layers.0")
        assert block.filter(phase=ph).flops == formulas.summary(want)["flops"]
        assert [r.name for r in block.filter(phase=ph).records] == list(want)
    assert c.filter("loss").flops == step["forward"]["loss"].flops + step["backward"]["loss"].flops
    assert c.filter(phase="optimizer").records[0].name == "adamw"
    assert c.filter(op="softmax").flops == sum(c.flops for ph in step.values() for c in ph.values()
                                                if c.op == "softmax")
    assert c.filter("layers.0", phase="forward", op="norm").macs == 0


def test_filter_prefix_is_a_whole_name_part():
    recs = [Record("forward", f"layers.{i}.mlp.up", "matmul", 10 * i, i, (), ()) for i in (1, 10, 11)]
    c = Counter(recs + [Record("forward", "layers.1", "matmul", 1, 0, (), ())])
    assert [r.name for r in c.filter("layers.1").records] == ["layers.1.mlp.up", "layers.1"]
    assert formulas.by_name_prefix({r.name: r for r in recs}, "layers.1") == {"layers.1.mlp.up": recs[0]}


def test_by_category_and_bytes_by_category():
    _, _, c = training_run(TINY, 2, 3)
    cats = c.by("category")
    assert set(cats) <= set(CATEGORIES)
    assert set(cats) == {"weights", "activations", "gradients", "optimizer_state"}   # no KV cache in training
    assert all(t.flops == 0 for t in cats.values())
    assert sum(t.bytes_read for t in cats.values()) == c.bytes_read
    assert sum(t.bytes_written for t in cats.values()) == c.bytes_written
    s = formulas.summary(formulas.training_step(TINY, 2, 3))
    assert nonzero(c.bytes_by_category("read")) == s["reads"]
    assert nonzero(c.bytes_by_category("written")) == s["writes"]
    with pytest.raises(ValueError):
        c.by("colour")


def test_to_dict_is_json_and_table_renders():
    _, _, c = training_run(TINY, 1, 3)
    d = json.loads(c.to_json())
    assert d["totals"]["flops"] == c.flops
    assert d["by_phase"]["optimizer"]["flops"] == c.filter(phase="optimizer").flops
    assert len(d["records"]) == len(c.records)
    table = c.table()
    assert "total" in table and "layers.0.attn.qkv" in table and "adamw" in table
    assert f"{c.flops:,}" in table
    top = c.table(depth=1)
    assert "layers.0" not in top and "layers" in top
    assert "backward" in c.table("phase")
