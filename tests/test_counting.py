"""Counts from execution equal `minitx.accounting.formulas`, exactly, for drawn configurations.

The model's ops record their cost from the arrays they are handed; `minitx.accounting.formulas` derives it from the
Config and (B, T) alone. Here both run for hypothesis-drawn tiny models (GPT-2 and Llama families, and every
switch drawn independently: tied/untied, MHA/GQA/MQA, biases or not, Gemma's scale and (1 + w)), and every
phase, op name, FLOP, MAC and byte per category must agree. The structural claims the lessons make (backward
= 2 × forward in MACs, what training/forward is and why it is not 3, forward matmul FLOPs = 2·params·tokens +
attention) are checked on the counts too, and the Counter API on real runs.

`measure_saved_activations` below measures what a training forward keeps by merging the byte spans of the
arrays its caches hold; `minitx.accounting.memory.measure_saved_activations` measures the same by merging views into
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
from minitx import AdamW, Config, KVCache, Transformer
from minitx import conventions as cv
from minitx import formulas, memory
from minitx.accounting.counting import Counter
from minitx.accounting.ledger import CATEGORIES, Ledger, Record, make
from minitx.core.batch import rectangle
from minitx.core.ops.loss import cross_entropy_forward
from strategies import config_and_shape, configs

DTYPES = st.sampled_from(["float32", "float64"])
# GPT-2 and Llama families, and "any": each switch drawn on its own
ANY_CONFIG_AND_SHAPE = st.one_of(config_and_shape(), config_and_shape(family="any"))
ANY_CONFIG = st.one_of(configs(), configs(family="any"))


# ---- helpers -------------------------------------------------------------------------------------------------

def assert_same(counted: Ledger, formula: Ledger, what: str) -> None:
    """The two ledgers hold the same records in the same order: name, op, phase, FLOPs, MACs, bytes read and
    written per category, every one."""
    got, want = list(counted), list(formula)
    assert [r.name for r in got] == [r.name for r in want], f"{what}: op names or order differ"
    for g, w in zip(got, want):
        assert g == w, f"{what} {w.name}:\n  counted  {g}\n  formula  {w}"


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

    Runs `run(rectangle(tokens), keep=True)` (and, with targets, the loss's forward, as `loss_and_grads` does)
    and walks the returned caches. Parameter views (anything sharing memory with model.flat) and the RoPE
    tables are left out. Arrays are merged by the memory they span, so an array reachable from several caches
    (the positions, the residual stream seen through different reshapes, k and v as views of their buffers)
    counts once."""
    tokens = model.check_tokens(tokens, "tokens")
    logits, caches = model.run(rectangle(tokens), keep=True)
    kept = [caches]
    if targets is not None:
        targets = model.check_tokens(targets, "targets")
        _, loss_cache = cross_entropy_forward(logits, targets.reshape(-1), "loss")
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
    assert list(c.by("phase")) == ["forward", "backward", "optimizer"]
    assert_same(c, step, "training step")
    for ph in ("forward", "backward", "optimizer"):     # and so every total of every phase
        assert c.filter(phase=ph).totals() == step.filter(phase=ph).totals()

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
    assert_same(c, formulas.forward_pass(cfg, B, T, dtype), "forward")


@settings(max_examples=15)
@given(ANY_CONFIG_AND_SHAPE, DTYPES)
def test_prefill_and_decode_counts_equal_formulas(cfg_bt, dtype):
    cfg, (B, T) = cfg_bt
    cfg = cfg.replace(n_ctx=max(cfg.n_ctx, T + 2))               # room for two decode steps
    model = Transformer(cfg, dtype=dtype)
    rng = np.random.default_rng(2)
    cache = KVCache(cfg, B, T + 2, dtype)
    assert cache.nbytes == formulas.kv_cache_bytes(cfg, B, T + 2, dtype)
    with minitx.count() as c:
        model.prefill(rng.integers(0, cfg.vocab_size, (B, T)), cache)
    assert_same(c, formulas.prefill(cfg, B, T, dtype), "prefill")
    for t in (T, T + 1):                                          # cache length before the step
        with minitx.count() as c:
            model.decode(rng.integers(0, cfg.vocab_size, B), cache)
        assert_same(c, formulas.decode_step(cfg, B, t, dtype), f"decode t={t}")
        assert c.writes["kv_cache"] == formulas.kv_bytes_per_token(cfg, dtype) * B


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
    # minitx.accounting.memory measures it too, merging views by their base array rather than by byte span
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
    assert ratio == Fraction(step.flops, step.filter(phase="forward").flops)


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
    for ph in ("forward", "backward"):     # the same filters on the formulas' ledger select the same records
        assert block.filter(phase=ph).records == step.filter("layers.0", phase=ph).records
    assert c.filter("loss").flops == step.filter("loss").flops == sum(r.flops for r in step if r.name == "loss")
    assert c.filter(phase="optimizer").records[0].name == "adamw"
    assert c.filter(op="softmax").flops == sum(r.flops for r in step if r.op == "softmax")
    assert c.filter("layers.0", phase="forward", op="norm").macs == 0


def test_filter_prefix_is_a_whole_name_part():
    recs = [make(f"layers.{i}.mlp.up", "matmul", 10 * i, i, phase="forward") for i in (1, 10, 11)]
    c = Ledger(recs + [make("layers.1", "matmul", 1, phase="forward")])
    assert [r.name for r in c.filter("layers.1").records] == ["layers.1.mlp.up", "layers.1"]


def test_bytes_per_category_and_groups():
    _, _, c = training_run(TINY, 2, 3)
    assert set(c.reads) | set(c.writes) == {"weights", "activations", "gradients", "optimizer_state"}  # no KV
    assert set(c.reads) <= set(CATEGORIES)
    assert sum(c.reads.values()) == c.bytes_read and sum(c.writes.values()) == c.bytes_written
    step = formulas.training_step(TINY, 2, 3)
    assert c.reads == step.reads and c.writes == step.writes
    assert sum(g.flops for g in c.by("op").values()) == c.flops
    assert {k: g.totals(k) for k, g in c.by("name", depth=1).items()} == \
        {k: g.totals(k) for k, g in step.by("name", depth=1).items()}
    with pytest.raises(ValueError):
        c.by("colour")


def test_a_record_sums_and_compares_as_a_value():
    r = make("x", "matmul", flops=100, macs=50, reads=(("weights", 30), ("activations", 10), ("weights", 2)),
             writes=(("activations", 0),), phase="forward")
    assert r.reads == {"weights": 32, "activations": 10} and r.writes == {}      # merged, zeros dropped
    assert (r.bytes_read, r.bytes, r.intensity) == (42, 42, 100 / 42)
    assert make("y", "layout", 0).intensity == float("inf")
    total = Ledger([r, r]).totals("two")
    assert total == make("two", "matmul", 200, 100, (("weights", 64), ("activations", 20)), phase="forward")


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
    # the same table of the formulas' ledger prints the same numbers
    assert formulas.training_step(TINY, 1, 3).table("phase") == c.table("phase")
