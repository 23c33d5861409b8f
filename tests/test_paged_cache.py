"""The paged KV cache (minitx.core.paged_cache): attention through a block table computes what a model computes
over each sequence alone, the counts charge exactly the blocks' bytes in use (equal to the closed forms), and a
bad block table is an error before any kernel touches the pool.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx import Transformer, count, formulas
from minitx.core.batch import Block, pack
from minitx.core.paged_cache import PagedKVCache
from reference_ops import assert_close
from strategies import TINY, TINY_LLAMA, configs

ATTENTIONS = ["unfused", "fused"]


def packed(seqs: list[list[int]], starts: list[int]):
    """Sequence i's tokens seqs[i][starts[i]:] in slot i, at their positions: one packed step."""
    ids = np.concatenate([np.asarray(s[p:], dtype=np.int64) for s, p in zip(seqs, starts)])
    slot = np.concatenate([np.full(len(s) - p, i, dtype=np.int64) for i, (s, p) in enumerate(zip(seqs, starts))])
    pos = np.concatenate([np.arange(p, len(s), dtype=np.int64) for s, p in zip(seqs, starts)])
    return pack(ids, slot, pos)


@settings(max_examples=15)
@given(configs(max_ctx=12), st.sampled_from(ATTENTIONS), st.integers(1, 4), st.data())
def test_paged_attention_equals_each_sequence_alone(cfg, attention, block_size, data):
    """Prompts prefilled into blocks scattered over the pool (a drawn permutation), then one decode token each:
    every logit equals the model's plain forward over that sequence alone (float64; a different batch shape
    rounds differently, hence the float64 rounding rule of assert_close: far below any real bug, which errs by
    O(|logits|))."""
    model = Transformer(cfg, dtype="float64", attention=attention)
    lengths = data.draw(st.lists(st.integers(1, cfg.n_ctx - 1), min_size=1, max_size=3))
    seqs = [data.draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=n + 1, max_size=n + 1)) for n in lengths]
    need = [-(-(n + 1) // block_size) for n in lengths]          # blocks for prompt + 1 decode token each
    pool = data.draw(st.permutations(range(sum(need) + 2)))        # two spare blocks never used
    cache = PagedKVCache(cfg, sum(need) + 2, block_size, slots=len(seqs), dtype="float64")
    taken = 0
    for i, k in enumerate(need):
        cache.assign(i, pool[taken:taken + k])
        taken += k
    prompts = [s[:-1] for s in seqs]
    logits, _ = model.run(packed(prompts, [0] * len(seqs)), cache)
    step, _ = model.run(packed(seqs, lengths), cache)               # each sequence's last token, at its length
    scale = max(np.abs(model.forward([s])).max() for s in seqs)
    # the longest float64 sum behind a logit, in each of the L layers the error compounds through: a matmul over
    # d_model or d_ff inputs, or attention over up to n_ctx keys
    terms = max(cfg.d_model, cfg.d_ff, cfg.n_ctx) * cfg.n_layers
    start = 0
    for s, n, row in zip(seqs, lengths, step):
        alone = model.forward([s])[0]
        assert_close(logits[start:start + n], alone[:n], "prefilled logits", np.float64, terms=terms, scale=scale)
        assert_close(row, alone[n], "decoded logits", np.float64, terms=terms, scale=scale)
        start += n


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
def test_gather_against_numpy_fancy_indexing(dtype):
    # An independent reference: NumPy takes the blocks (b, blocks, KV, X, HS), puts positions end to end, cuts S.
    # The gather copies bits, so every format comes out bit for bit (bfloat16 through its uint16 view).
    cfg = TINY_LLAMA.replace(n_layers=1, n_kv_heads=2, head_dim=4, n_ctx=12)
    cache = PagedKVCache(cfg, 9, 3, slots=3, dtype=dtype)
    cache.buffer[...] = np.random.default_rng(0).normal(size=cache.buffer.shape).astype(cache.dtype)
    for slot, blocks in enumerate(([4, 0, 7], [8, 2], [1, 3, 5, 6])):
        cache.assign(slot, blocks)
    k, v = cache.layer(0)
    for slot, b, S in ((0, 2, 5), (1, 2, 6), (0, 1, 9), (2, 1, 12)):
        got = cache.keys(k, v, Block(0, slot, b, S, 0))
        nb = -(-S // 3)
        for pool, out in zip((k, v), got):
            ref = pool[cache.table[slot:slot + b, :nb]]      # (b, nb, KV, X, HS)
            ref = ref.transpose(0, 2, 1, 3, 4).reshape(b, 2, nb * 3, 4)[:, :, :S]
            assert out.dtype == cache.dtype and np.array_equal(out.view(np.uint8), ref.view(np.uint8))


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cfg", TINY.values(), ids=TINY.keys())
def test_counts_charge_the_blocks_in_use_and_equal_the_closed_forms(cfg, attention):
    """A mixed step, prefill chunks and decode tokens: the counted records equal formulas.step record for record,
    and the KV bytes attention reads are the bytes of the positions the sequences hold once it has run,
    formulas.paged_kv_bytes' "used", not of their blocks' empty tail."""
    cfg = cfg.replace(n_ctx=16)
    model = Transformer(cfg, attention=attention)
    X = 3
    cache = PagedKVCache(cfg, 20, X, slots=3)
    for slot, blocks in enumerate(([5, 1, 9, 2], [0, 11, 3], [7, 8, 4, 6])):
        cache.assign(slot, blocks)
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, cfg.vocab_size, n).tolist() for n in (10, 7, 12)]
    model.run(packed([s[:6] for s in seqs], [0, 0, 0]), cache)      # 6 tokens each already cached
    # this step: sequence 0 decodes position 6 (7 positions held after), 1 runs a chunk 6..6 (n = 1, 7 held),
    # 2 runs a chunk at 6..11 (12 held)
    step = [s[:n] for s, n in zip(seqs, (7, 7, 12))]
    with count() as c:
        model.run(packed(step, [6, 6, 6]), cache, logits_rows=np.array([0, 1, 7]))
    # pack merges slots 0 and 1 (one token each at position 6) into one block of b = 2
    expected = formulas.step(cfg, [(2, 1, 6), (1, 6, 6)], "float32", attention, logits_rows=3)
    assert c.records == expected.with_phase("forward").records
    held = formulas.paged_kv_bytes(cfg, [7, 7, 12], X)
    kv_read = sum(r.reads.get("kv_cache", 0) for r in c.records)
    # by hand: 2 (K, V) · L · KV · HS · 4 bytes per position, 7 + 7 + 12 = 26 positions
    assert kv_read == held["used"] == 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4 * 26
    # reserved: ceil(7/3) + ceil(7/3) + ceil(12/3) = 3 + 3 + 4 blocks of 3 = 30 positions; waste 4 < 3 per sequence
    assert held["reserved"] == 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4 * 30
    assert held["waste"] == held["reserved"] - held["used"]


def test_pool_size_by_hand():
    cfg = TINY_LLAMA                    # L 2, KV 2, HS 6
    cache = PagedKVCache(cfg, num_blocks=5, block_size=4, slots=3, dtype="float64")
    # 2 (K and V) · L 2 · 5 blocks · KV 2 · X 4 · HS 6 · 8 bytes
    assert cache.nbytes == cache.buffer.nbytes == 2 * 2 * 5 * 2 * 4 * 6 * 8
    assert cache.block_bytes == 2 * 2 * 2 * 4 * 6 * 8
    assert cache.table.shape == (3, -(-cfg.n_ctx // 4)) and (cache.table == -1).all()
    assert cache.block_bytes == 4 * formulas.kv_bytes_per_token(cfg, "float64")


def test_shape_only_pool_counts_like_a_real_one():
    cfg = TINY_LLAMA.replace(n_ctx=16)
    counts = []
    for shape_only in (False, True):
        model = Transformer(cfg, attention="unfused", shape_only=shape_only)
        cache = PagedKVCache(cfg, 8, 4, slots=2, shape_only=shape_only)
        cache.assign(0, [3, 1])
        cache.assign(1, [0, 6, 2])
        with count() as c:
            model.run(packed([[1] * 5, [2] * 9], [0, 0]), cache)
        counts.append(c.records)
    assert counts[0] == counts[1]
    assert PagedKVCache(cfg, 10 ** 9, 16, slots=4, shape_only=True).nbytes == 10 ** 9 * 16 * \
        formulas.kv_bytes_per_token(cfg)                      # a pool of a billion blocks: nothing allocated


# ---- a bad block table never reaches a kernel ------------------------------------------------------------------

@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("bad", [-1, 8, 2 ** 40])
def test_a_missing_or_foreign_block_is_an_error_and_nothing_is_written(attention, bad):
    cfg = TINY_LLAMA.replace(n_ctx=16)
    model = Transformer(cfg, attention=attention)
    cache = PagedKVCache(cfg, 8, 4, slots=2)
    cache.assign(0, [3, 1])
    cache.table[0, 1] = bad                            # the block for positions 4..7 of slot 0
    before = cache.buffer.copy()
    with pytest.raises(ValueError, match="slot 0 needs blocks for positions 0..5"):
        model.run(packed([[1] * 6], [0]), cache)
    assert np.array_equal(cache.buffer, before)
    with pytest.raises(ValueError, match="outside the block table's 2 slots"):
        model.run(pack(np.array([1]), np.array([2]), np.array([0])), cache)
    with pytest.raises(ValueError, match="slot 0 needs"):
        cache.keys(cache.k[0], cache.v[0], packed([[1] * 6], [0]).blocks[0])


@settings(max_examples=60)
@given(st.one_of(st.integers(-3, 12), st.none(), st.text(max_size=3), st.floats()),
       st.one_of(st.lists(st.one_of(st.integers(-3, 12), st.floats(), st.booleans()), max_size=6), st.none(),
                 st.integers(), st.text(max_size=3)))
def test_assign_checks_its_arguments(slot, blocks):
    cache = PagedKVCache(TINY_LLAMA, 8, 4, slots=2)
    try:
        cache.assign(slot, blocks)
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    assert (cache.table >= -1).all() and (cache.table < 8).all()


@settings(max_examples=40)
@given(st.one_of(st.integers(-2, 2 ** 60), st.floats(), st.none(), st.text(max_size=3), st.booleans()),
       st.one_of(st.integers(-2, 64), st.floats(), st.none()), st.one_of(st.integers(-2, 8), st.none()),
       st.one_of(st.integers(-2, 40), st.none()), st.sampled_from(["float32", "float64", "int3", "bf16", None]))
def test_constructor_checks_its_arguments(num_blocks, block_size, slots, max_len, dtype):
    try:
        PagedKVCache(TINY_LLAMA, num_blocks, block_size, slots, max_len, dtype)
    except (ValueError, TypeError) as e:
        assert str(e)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_a_contiguous_cache_refuses_slots_and_positions_outside_it(attention):
    # The same guard for the one-row-per-slot KVCache when Transformer.run is called on it directly (the engine's
    # contiguous layout): a slot past its rows, or a position past max_len, before the split writes anything.
    from minitx import KVCache
    cfg = TINY_LLAMA.replace(n_ctx=16)
    model = Transformer(cfg, attention=attention)
    cache = KVCache(cfg, batch=2, max_len=8)
    before = cache.buffer.copy()
    with pytest.raises(ValueError, match="slots 2..2 fall outside the cache's 2 rows"):
        model.run(pack(np.array([1]), np.array([2]), np.array([0])), cache)
    with pytest.raises(ValueError, match="positions up to 8 pass the cache's max_len=8"):
        model.run(pack(np.array([1, 2]), np.array([1, 1]), np.array([7, 8])), cache)
    assert np.array_equal(cache.buffer, before)


def test_paged_kv_bytes_by_hand_and_its_refusals():
    cfg = TINY_LLAMA                                   # 2 · L 2 · KV 2 · HS 6 · 4 bytes = 192 bytes per position
    per = 2 * 2 * 2 * 6 * 4
    # lengths 1, 4, 5 in blocks of 4: paged holds 1 + 1 + 2 blocks = 16 positions, 10 used
    assert formulas.paged_kv_bytes(cfg, [1, 4, 5], 4) == {"used": 10 * per, "reserved": 16 * per, "waste": 6 * per}
    # contiguous, caps 9, 4, 12: 3 + 1 + 3 blocks = 28 positions reserved
    assert formulas.paged_kv_bytes(cfg, [1, 4, 5], 4, caps=[9, 4, 12])["reserved"] == 28 * per
    assert formulas.paged_kv_bytes(cfg, [], 4) == {"used": 0, "reserved": 0, "waste": 0}
    with pytest.raises(ValueError, match="caps must give one cap per length"):
        formulas.paged_kv_bytes(cfg, [5], 4, caps=[4])
    with pytest.raises(ValueError, match="block_size=0"):
        formulas.paged_kv_bytes(cfg, [5], 0)
    with pytest.raises(ValueError, match="lengths"):
        formulas.paged_kv_bytes(cfg, [-1], 4)
