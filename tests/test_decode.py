"""The KV-cached decoder, proved against the recompute decoder, Hugging Face, and the formulas.

* Cached vs recompute: at every step the cached logits equal the full-forward logits at that position (to the
  dtype's rounding) and greedy tokens are identical; GPT-2 and Llama (GQA, MQA) families, B = 1 and ragged B > 1,
  float64 and float32; plus hypothesis-drawn configs.
* A right-padded batch generates exactly what each sequence generates alone (greedy, and with stop tokens).
* Hugging Face: the greedy continuations in tests/fixtures/*.npz (HF's own cache), singly and as one batch.
* Counts == formulas for prefill, a decode step at several cache lengths and a recompute step, op by op:
  FLOPs, MACs and bytes per category. A decode step at cache length t reads 2·L·KV·HS·(t+1)·B·itemsize bytes of
  cache (the slice includes the new token's own row, written just before); its matmuls read the same weight
  bytes whatever B is (only the embedding / RoPE-table gathers grow with B: one row per token).
* The cost of the cache: per-token FLOPs of cached decode grow linearly in t, of recompute quadratically, and
  their ratio grows about linearly in t.
* Sampling (seed, top-k, top-p), streaming, the CLI, and bad input.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitx
from minitx import Config, KVCache, Transformer, count, generate
from minitx.accounting.counting import phase
from minitx.core.batch import ragged
from minitx.core.generate import Sampler, generate_recompute, stream
from strategies import TINY, configs

from minitx import formulas
from minitx.io import hf
from reference_ops import assert_close

HERE = os.path.dirname(os.path.abspath(__file__))
# The shared tiny configs (GPT-2 MHA tied, Llama GQA untied, Gemma MQA tied) with a longer context: the tests
# below decode up to 12 new tokens after a 7-token prompt, so they need n_ctx ≥ 19.
FAMILIES = {family: cfg.replace(n_ctx=24) for family, cfg in TINY.items()}
GPT2, LLAMA, GEMMA = FAMILIES["gpt2"], FAMILIES["llama-gqa"], FAMILIES["gemma-mqa"]
PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7], [2]]     # ragged on purpose
# The CLI's bytes tokenizer has one id per byte, so its model needs vocab_size 256 exactly; n_ctx 32 leaves room for
# the two-byte prompts plus --max-new-tokens (2 + 31 > 32 is the refused case below). Other sizes do not matter.
BYTES = Config(name="bytes", vocab_size=256, n_ctx=32, d_model=16, n_layers=1, n_heads=2)



def random_model(cfg: Config, dtype: str = "float64", seed: int = 0, std: float = 0.5) -> Transformer:
    """Every parameter moved by N(0, std²): peaked softmaxes and varied greedy paths, unlike the 0.02 init."""
    model = Transformer(cfg, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    model.flat += rng.normal(0.0, std, size=model.flat.shape).astype(dtype)
    return model


class Steps:
    """Decoding by hand, one step at a time: with the cache (model.prefill, then model.decode), or the recompute
    reference (model.run over each sequence's whole text so far, keeping each one's last logits)."""

    def __init__(self, model, prompts, n_new, use_cache):
        self.model, self.use_cache = model, use_cache
        self.rows = [np.asarray(p, dtype=np.int64) for p in prompts]
        lengths = np.array([len(r) for r in self.rows])
        if use_cache:
            self.cache = KVCache(model.cfg, len(self.rows), int(lengths.max()) + n_new, model.dtype)
            padded = np.zeros((len(self.rows), int(lengths.max())), dtype=np.int64)
            for b, r in enumerate(self.rows):
                padded[b, :len(r)] = r
            self.padded, self.lengths = padded, lengths

    def _recompute(self, name):
        with phase(name):
            logits, _ = self.model.run(ragged(self.rows))
        return logits[np.cumsum([len(r) for r in self.rows]) - 1]

    def first(self):
        if self.use_cache:
            return self.model.prefill(self.padded, self.cache, self.lengths)
        return self._recompute("prefill")

    def next(self, ids):
        if self.use_cache:
            return self.model.decode(ids, self.cache)
        self.rows = [np.append(r, t) for r, t in zip(self.rows, ids)]
        return self._recompute("decode")


def step_logits(model, prompts, n_new, use_cache):
    """Greedy decode by hand: (tokens (n_new, B), [logits (B, V)] per step)."""
    steps = Steps(model, prompts, n_new, use_cache)
    logits, all_logits, tokens = steps.first(), [], []
    for i in range(n_new):
        all_logits.append(logits)
        tokens.append(logits.argmax(-1))
        if i < n_new - 1:
            logits = steps.next(tokens[-1])
    return np.array(tokens), all_logits


# ---- the cache object ----------------------------------------------------------------------------------------

def test_kvcache_layout_and_nbytes():
    cache = KVCache(LLAMA, batch=3, max_len=10, dtype="float64")
    L, KV, HS = LLAMA.n_layers, LLAMA.n_kv_heads, LLAMA.head_dim
    assert len(cache.k) == len(cache.v) == L
    assert all(a.shape == (3, KV, 10, HS) and a.dtype == np.float64 and not a.any() for a in cache.k + cache.v)
    assert cache.lengths.dtype == np.int64 and cache.lengths.tolist() == [0, 0, 0]
    assert cache.nbytes == 2 * L * KV * HS * 10 * 3 * 8
    assert cache.nbytes == formulas.kv_cache_bytes(LLAMA, 3, 10, "float64")
    g = GPT2                                                                            # float32 by default
    assert KVCache(g, 1, g.n_ctx).nbytes == 2 * g.n_layers * g.n_kv_heads * g.head_dim * g.n_ctx * 1 * 4


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(batch=0, max_len=4), ValueError, "batch"),
    (dict(batch=True, max_len=4), ValueError, "batch"),
    (dict(batch=2.0, max_len=4), ValueError, "batch"),
    (dict(batch=1, max_len=0), ValueError, "max_len"),
    (dict(batch=1, max_len=GPT2.n_ctx + 1), ValueError, "n_ctx"),
    (dict(batch=1, max_len=4, dtype="int8"), ValueError, "dtype"),
    (dict(batch=1, max_len=4, dtype="nonsense"), ValueError, "dtype"),
])
def test_kvcache_rejects_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        KVCache(GPT2, **kwargs)
    with pytest.raises(TypeError, match="Config"):
        KVCache("gpt2", 1, 4)


# ---- cached == recompute -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["B1", "B4-ragged"])
def test_cached_logits_equal_recompute_at_every_step(family, dtype, prompts):
    model = random_model(FAMILIES[family], dtype)
    n_new = 12
    cached_tokens, cached = step_logits(model, prompts, n_new, use_cache=True)
    full_tokens, full = step_logits(model, prompts, n_new, use_cache=False)
    # the two paths sum in different orders; the error grows with the longest sums (the MLP's F) in every layer
    cfg = FAMILIES[family]
    for t, (a, b) in enumerate(zip(cached, full)):
        assert_close(a, b, f"logits at step {t}", dtype, terms=cfg.d_ff * cfg.n_layers)
    np.testing.assert_array_equal(cached_tokens, full_tokens)
    assert max(len(set(col)) for col in cached_tokens.T.tolist()) >= 3, "a degenerate path: too weak a test"
    assert generate(model, prompts, n_new) == generate(model, prompts, n_new, use_cache=False)


def test_public_prefill_decode_equal_forward():
    """model.prefill / model.decode against model.forward over each whole sequence, ragged batch."""
    model = random_model(LLAMA)
    prompts = [np.array(p) for p in PROMPTS]
    B, T = len(prompts), max(len(p) for p in prompts)
    padded = np.zeros((B, T), dtype=np.int64)
    for b, p in enumerate(prompts):
        padded[b, :len(p)] = p
    lengths = np.array([len(p) for p in prompts])
    cache = KVCache(LLAMA, B, LLAMA.n_ctx, "float64")
    logits = model.prefill(padded, cache, lengths)
    seqs = [list(p) for p in prompts]
    rng = np.random.default_rng(0)
    for step in range(8):
        for b in range(B):
            np.testing.assert_allclose(logits[b], model.forward([seqs[b]])[0, -1], rtol=1e-10, atol=1e-10)
        assert cache.lengths.tolist() == [len(s) for s in seqs]
        nxt = rng.integers(0, LLAMA.vocab_size, size=B)
        for b in range(B):
            seqs[b].append(int(nxt[b]))
        logits = model.decode(nxt if step % 2 else nxt[:, None], cache)       # (B,) and (B, 1) both accepted
        assert logits.shape == (B, LLAMA.vocab_size)


@settings(max_examples=15)
@given(cfg=configs(family="any"), data=st.data())
def test_cached_equals_recompute_on_drawn_configs(cfg, data):
    B = data.draw(st.integers(1, 3), label="B")
    lens = data.draw(st.lists(st.integers(1, max(1, cfg.n_ctx - 1)), min_size=B, max_size=B), label="lengths")
    n_new = data.draw(st.integers(1, cfg.n_ctx - max(lens)), label="n_new")
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in lens]
    model = random_model(cfg)
    tok_c, log_c = step_logits(model, prompts, n_new, True)
    tok_r, log_r = step_logits(model, prompts, n_new, False)
    for a, b in zip(log_c, log_r):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(tok_c, tok_r)


# ---- a padded batch == each sequence alone -------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_generates_what_each_sequence_generates_alone(family):
    model = random_model(FAMILIES[family])
    together = generate(model, PROMPTS, 10)
    alone = [generate(model, [p], 10)[0] for p in PROMPTS]
    assert together == alone
    assert all(len(o) == 10 for o in together)
    # as a (B, T) array too (all the same length)
    arr = np.array([p[:1] + p[-1:] for p in PROMPTS])
    assert generate(model, arr, 5) == [generate(model, [row], 5)[0] for row in arr]


def test_stop_tokens_end_each_sequence_and_are_kept():
    model = random_model(GPT2)
    free = generate(model, PROMPTS, 10)
    stop = free[0][3]                                       # sequence 0 emits it at step 3 (perhaps earlier)
    out = generate(model, PROMPTS, 10, stop_tokens=[stop])
    for b, (o, f) in enumerate(zip(out, free)):
        cut = f.index(stop) + 1 if stop in f else len(f)
        assert o == f[:cut], f"sequence {b}"               # stops right after the stop token, which is kept
    assert out[0][-1] == stop and len(out[0]) <= 4
    assert out == [generate(model, [p], 10, stop_tokens=stop)[0] for p in PROMPTS]   # one id works too
    assert generate(model, PROMPTS, 10, stop_tokens=stop, use_cache=False) == out


# ---- Hugging Face fixtures -----------------------------------------------------------------------------------

FIXTURES = ["gpt2_tiny", "llama_tiny_gqa", "mistral_tiny", "gemma_tiny", "mistral_window_tiny"]


def load_fixture(name):
    path = os.path.join(HERE, "fixtures", f"{name}.npz")
    f = np.load(path, allow_pickle=False)
    model = hf.load_hf(json.loads(str(f["config_json"])), {k[6:]: f[k] for k in f.files if k.startswith("param/")})
    prompts = [f["gen_prompt_0"], f["gen_prompt_1"]]
    return model, prompts, [f["gen_output_0"].tolist(), f["gen_output_1"].tolist()]


def fused_twin(model: Transformer) -> Transformer:
    """The same weights, run with fused attention (and, with a sliding window, a rolling KV cache)."""
    twin = Transformer(model.cfg, dtype=model.dtype.name, attention="fused")
    twin.flat[...] = model.flat
    return twin


@pytest.mark.parametrize("name", FIXTURES)
def test_greedy_tokens_equal_hugging_face(name):
    model, prompts, expected = load_fixture(name)
    n = len(expected[0])              # mistral_window_tiny generates past its 5-token window: 16 tokens
    assert [generate(model, [p], n)[0] for p in prompts] == expected            # singly
    assert generate(model, prompts, n) == expected                              # one right-padded batch
    assert generate_recompute(model, prompts, n) == expected                    # and without the cache
    assert generate(fused_twin(model), prompts, n) == expected                  # fused (rolling cache)


# ---- counts == formulas --------------------------------------------------------------------------------------

def assert_counts_equal(counted, formula, what):
    """The same records in the same order: name, op, phase, FLOPs, MACs, bytes per category."""
    assert [r.name for r in counted] == [r.name for r in formula], f"{what}: op names differ"
    for got, want in zip(counted, formula):
        assert got == want, f"{what}: {want.name}: counted {got} != formula {want}"


@settings(max_examples=12)
@given(cfg=configs(family="any"), data=st.data())
def test_counts_equal_formulas_prefill_and_decode_steps(cfg, data):
    B = data.draw(st.integers(1, 3), label="B")
    T = data.draw(st.integers(1, cfg.n_ctx), label="T")
    dtype = data.draw(st.sampled_from(["float32", "float64"]), label="dtype")
    s = np.dtype(dtype).itemsize
    L, KV, HS = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
    model = random_model(cfg, dtype)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(B, T))
    cache = KVCache(cfg, B, cfg.n_ctx, dtype)
    with count() as c:
        model.prefill(tokens, cache)
    assert {r.phase for r in c.records} == {"prefill"}
    assert_counts_equal(c, formulas.prefill(cfg, B, T, dtype), f"prefill B={B} T={T}")
    nxt = np.zeros(B, dtype=np.int64)
    for t in range(T, cfg.n_ctx):                           # every cache length the context allows
        with count() as c:
            model.decode(nxt, cache)
        assert {r.phase for r in c.records} == {"decode"}
        assert_counts_equal(c, formulas.decode_step(cfg, B, t, dtype), f"decode B={B} t={t}")
        # the cache slices that scores and mix read include the new token's row: t + 1 rows, K and V
        assert c.reads["kv_cache"] == 2 * L * KV * HS * (t + 1) * B * s
        assert c.writes["kv_cache"] == 2 * L * KV * HS * 1 * B * s


@pytest.mark.parametrize("family", FAMILIES)
def test_counts_equal_formulas_recompute_step_and_weights_independent_of_batch(family):
    cfg = FAMILIES[family]
    weights_read = {}
    for B in (1, 3):
        model = random_model(cfg, "float32")
        prompts = [[1, 2, 3]] * B
        steps = Steps(model, prompts, 6, use_cache=False)
        steps.first()
        for t in range(3, 8):
            with count() as c:
                steps.next(np.zeros(B, dtype=np.int64))
            assert {r.phase for r in c.records} == {"decode"}
            assert_counts_equal(c, formulas.recompute_step(cfg, B, t, "float32"), f"recompute B={B} t={t}")
        cache = KVCache(cfg, B, cfg.n_ctx)
        model.prefill(np.array(prompts), cache)
        with count() as c:
            model.decode(np.zeros(B, dtype=np.int64), cache)
        weights_read[B] = (c.filter(op="matmul").reads["weights"], c.reads["weights"])
    # The matmuls read every weight once per step, whatever B: the reason batching decode pays.
    assert weights_read[1][0] == weights_read[3][0]
    # Only the gathers grow with B: one embedding row (+ one position row, or a cos and a sin row per layer).
    s = 4
    per_token = (cfg.d_model * (1 + (cfg.position == "learned"))
                 + cfg.n_layers * cfg.head_dim * (cfg.position == "rope")) * s
    assert weights_read[3][1] - weights_read[1][1] == 2 * per_token


# ---- what the cache saves ------------------------------------------------------------------------------------

def test_cached_flops_grow_linearly_recompute_quadratically():
    cfg = GPT2.replace(n_ctx=64)
    model = random_model(cfg, "float32")
    lengths = list(range(1, 40))
    cached, full = {}, {}
    for use_cache, out in ((True, cached), (False, full)):
        steps = Steps(model, [[1]], len(lengths) + 1, use_cache)
        steps.first()
        for t in lengths:                                  # the step that feeds token t (cache holds t tokens)
            with count() as c:
                steps.next(np.array([t % cfg.vocab_size]))
            out[t] = c.flops
    f, r = np.array([cached[t] for t in lengths]), np.array([full[t] for t in lengths])
    assert np.all(np.diff(f, 2) == 0) and np.all(np.diff(f) > 0)        # cached: a + b·t exactly
    d2 = np.diff(r, 2)
    assert np.all(d2 == d2[0]) and d2[0] > 0                            # recompute: quadratic in t
    ratio = r / f
    shown = {t: round(float(ratio[t - 1]), 1) for t in (1, 8, 16, 32)}
    print("recompute / cached FLOPs per token at cache length t:", shown)
    assert np.all(np.diff(ratio) > 0)
    # ~linear growth: ratio / (t + 1) stays within a narrow band (it would be exactly 1 if the matmuls were all)
    per_t = ratio / (np.array(lengths) + 1)
    assert per_t.min() > 0.8 and per_t.max() < 2.0, per_t
    assert cached[16] == formulas.decode_step(cfg, 1, 16).flops
    assert full[16] == formulas.recompute_step(cfg, 1, 16).flops


# ---- sampling and streaming ----------------------------------------------------------------------------------

def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy():
    model = random_model(LLAMA)
    kw = dict(temperature=1.0, top_k=8, top_p=0.9)
    a = generate(model, PROMPTS, 10, seed=7, **kw)
    assert a == generate(model, PROMPTS, 10, seed=7, **kw)
    assert a == generate(model, PROMPTS, 10, seed=7, use_cache=False, **kw)
    assert a != generate(model, PROMPTS, 10, seed=8, **kw)
    greedy = generate(model, PROMPTS, 10)
    assert generate(model, PROMPTS, 10, temperature=0.7, top_k=1, seed=1) == greedy
    assert generate(model, PROMPTS, 10, temperature=0.7, top_p=1e-9, seed=1) == greedy


def test_sampler_filters_and_follows_the_tempered_distribution():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    n = 20000

    def freq(**kw):
        s = Sampler(kw.pop("temperature", 1.0), kw.pop("top_k", None), kw.pop("top_p", None), seed=0)
        return np.bincount(s(np.repeat(logits, n, axis=0)), minlength=4) / n    # n rows, one draw each
    assert np.abs(freq() - [0.5, 0.3, 0.15, 0.05]).max() < 0.015
    assert np.allclose(freq(top_k=2)[:2], [0.625, 0.375], atol=0.015) and freq(top_k=2)[2:].sum() == 0
    assert freq(top_p=0.75)[2:].sum() == 0                 # 0.5 + 0.3 reaches 0.75: the rest is cut
    assert freq(top_p=0.85)[3] == 0 and freq(top_p=0.85)[2] > 0
    assert freq(top_p=0.45)[0] == 1.0                      # the top token alone reaches 0.45
    p2 = np.array([0.5, 0.3, 0.15, 0.05]) ** 2             # temperature 0.5 squares the probabilities
    assert np.abs(freq(temperature=0.5) - p2 / p2.sum()).max() < 0.015


def test_stream_and_on_token_yield_tokens_as_they_come():
    model = random_model(GPT2)
    seen = []
    out = generate(model, PROMPTS, 6, on_token=lambda i, tok: seen.append((i, tok)))
    assert list(stream(model, PROMPTS, 6)) == seen
    assert [t for i, t in seen if i == 2] == out[2]
    assert [i for i, _ in seen[:len(PROMPTS)]] == list(range(len(PROMPTS)))   # step by step, in index order
    assert generate(model, PROMPTS, 0) == [[] for _ in PROMPTS]


# ---- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(temperature=-0.1), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature=1.0, top_k=0), ValueError, "top_k"),
    (dict(temperature=1.0, top_k=2.5), ValueError, "top_k"),
    (dict(temperature=1.0, top_p=0.0), ValueError, "top_p"),
    (dict(temperature=1.0, top_p=1.5), ValueError, "top_p"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=GPT2.n_ctx - 1), ValueError, "n_ctx"),  # a 2-token prompt + n_ctx - 1 > n_ctx
    (dict(prompts=[[1, 2], []]), ValueError, "prompt 1 is empty"),
    (dict(prompts=[]), ValueError, "prompts"),
    (dict(prompts=[[1, GPT2.vocab_size]]), ValueError, "prompt 0"),
    (dict(prompts=[[1.5, 2]]), TypeError, "prompt 0"),
    (dict(prompts=[[[1, 2]]]), ValueError, "1-D"),
    (dict(prompts="hello"), TypeError, "prompts"),
    (dict(stop_tokens=[GPT2.vocab_size]), ValueError, "stop_tokens"),
    (dict(seed=-3), ValueError, "seed"),
])
def test_generate_rejects_bad_input(kwargs, exc, words):
    model = random_model(GPT2)
    args = dict(prompts=[[1, 2]], max_new_tokens=3)
    args.update(kwargs)
    prompts, n_new = args.pop("prompts"), args.pop("max_new_tokens")
    with pytest.raises(exc, match=words):
        generate(model, prompts, n_new, **args)
    with pytest.raises(exc, match=words):                   # stream checks before the first token, too
        stream(model, prompts, n_new, **args)


def test_prefill_and_decode_reject_bad_input():
    model = random_model(GPT2)
    cache = KVCache(GPT2, 2, 6, "float64")
    with pytest.raises(TypeError, match="cache"):
        model.prefill([[1, 2]], "cache")
    with pytest.raises(TypeError, match="dtype"):
        model.prefill([[1, 2], [3, 4]], KVCache(GPT2, 2, 6, "float32"))
    with pytest.raises(ValueError, match="cache was built for L"):
        model.prefill([[1, 2], [3, 4]], KVCache(LLAMA, 2, 6, "float64"))
    with pytest.raises(ValueError, match="batch"):
        model.prefill([[1, 2]], cache)
    with pytest.raises(ValueError, match="non-empty"):
        model.prefill(np.zeros((2, 0), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="outside"):
        model.prefill([[1, 2], [3, GPT2.vocab_size]], cache)
    with pytest.raises(ValueError, match="max_len"):
        model.prefill(np.ones((2, 7), dtype=np.int64), cache)
    for bad in ([0, 2], [1, 3], [1]):
        with pytest.raises(ValueError, match="lengths"):
            model.prefill([[1, 2], [3, 4]], cache, lengths=bad)
    with pytest.raises(TypeError, match="lengths"):
        model.prefill([[1, 2], [3, 4]], cache, lengths=[1.0, 2.0])
    model.prefill([[1, 2], [3, 4]], cache, lengths=[2, 1])
    with pytest.raises(ValueError, match="empty cache"):
        model.prefill([[1, 2], [3, 4]], cache)
    with pytest.raises(ValueError, match="one new token"):
        model.decode([[1, 2], [3, 4]], cache)
    with pytest.raises(ValueError, match="batch"):
        model.decode([1, 2, 3], cache)
    with pytest.raises(ValueError, match="outside"):
        model.decode([1, -1], cache)
    with pytest.raises(TypeError, match="integer"):
        model.decode([1.0, 2.0], cache)
    for _ in range(4):                                      # lengths 2, 1 -> 6, 5: sequence 0 is full
        model.decode([1, 2], cache)
    before = cache.buffer.copy()
    with pytest.raises(ValueError, match="full"):
        model.decode([1, 2], cache)
    assert np.array_equal(before, cache.buffer) and cache.lengths.tolist() == [6, 5]   # nothing overwritten
    cache.reset()
    assert cache.lengths.tolist() == [0, 0] and not cache.buffer.any()
    # a cache made for a longer context than the model's would let positions run past the model's position
    # (or RoPE) tables: refused before any kernel runs
    long_cache = KVCache(GPT2.replace(n_ctx=2 * GPT2.n_ctx), 2, 2 * GPT2.n_ctx, "float64")
    with pytest.raises(ValueError, match="n_ctx"):
        model.prefill([[1, 2], [3, 4]], long_cache)
    # cache.lengths is public: a corrupted one (negative, or past max_len) is refused, never used as an index
    model.prefill([[1, 2], [3, 4]], cache)
    for bad in ([-1, 2], [2, 7]):
        cache.lengths[:] = bad
        with pytest.raises(ValueError, match="cache.lengths"):
            model.decode([1, 2], cache)
    # a cache as long as the context: decode refuses the (n_ctx + 1)-th token
    full = KVCache(GPT2, 1, GPT2.n_ctx, "float64")
    model.prefill(np.ones((1, GPT2.n_ctx), dtype=np.int64), full)
    with pytest.raises(ValueError, match="n_ctx"):
        model.decode([1], full)


# ---- the CLI -------------------------------------------------------------------------------------------------

def test_cli_generate_streams_text(monkeypatch, capsys):
    from minitx import cli
    from minitx.io import checkpoint
    model = random_model(BYTES, "float32")
    monkeypatch.setattr(checkpoint, "load_model", lambda path: (model, None, {"tokenizer": "bytes"}), raising=False)
    assert cli.main(["generate", "--checkpoint", "x.ckpt", "--prompt", "hi", "--max-new-tokens", "5",
                     "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    ids = generate(model, [list(b"hi")], 5)[0]
    assert text == "hi" + bytes(ids).decode("utf-8", errors="replace") + "\n"
    assert cli.main(["generate", "--checkpoint", "x.ckpt", "--prompt", "", "--max-new-tokens", "5"]) == 2
    assert "prompt" in capsys.readouterr().err
    assert cli.main(["generate", "--checkpoint", "x.ckpt", "--prompt", "hi", "--max-new-tokens", "31"]) == 2
    assert "n_ctx" in capsys.readouterr().err
    assert cli.main(["generate", "--checkpoint", "x.ckpt", "--prompt", "hi", "--top-p", "2"]) == 2
    monkeypatch.setattr(checkpoint, "load_model", lambda path: (model, None, {"tokenizer": "gpt2-bpe"}), raising=False)
    assert cli.main(["generate", "--checkpoint", "x.ckpt", "--prompt", "hi"]) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_cli_generate_from_a_saved_checkpoint(tmp_path, capsys):
    from minitx import cli
    from minitx.io import checkpoint
    model = random_model(BYTES, "float32")
    path = str(tmp_path / "m.ckpt")
    checkpoint.save_model(path, model)
    argv = ["generate", "--checkpoint", path, "--prompt", "ab", "--max-new-tokens", "8", "--seed", "3"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0 and capsys.readouterr().out == first          # seeded: the same text again
    ids = generate(model, [list(b"ab")], 8, temperature=0.8, seed=3)[0]       # the CLI's default temperature
    assert first == "ab" + bytes(ids).decode("utf-8", errors="replace") + "\n"


def test_public_api():
    assert minitx.KVCache is KVCache and minitx.generate is generate
    assert "KVCache" in minitx.__all__ and "generate" in minitx.__all__
