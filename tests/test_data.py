"""Tests for minitx.io.data: byte tokenizer, stdlib corpus, splits and batches."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx.io import data
from minitx.io.data import Batches, ByteTokenizer, get_batch, load_corpus, split

tokenizer = ByteTokenizer()


# ---------------------------------------------------------------- tokenizer

@settings(max_examples=200, deadline=None)
@given(st.text())
def test_encode_decode_round_trip(text):
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert len(ids) == len(text.encode("utf-8"))
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < tokenizer.vocab_size)
    assert tokenizer.decode(ids) == text


def test_vocab_and_known_bytes():
    assert tokenizer.vocab_size == 256
    assert tokenizer.encode("Aé").tolist() == [65, 0xC3, 0xA9]
    assert tokenizer.decode([104, 105]) == "hi"
    assert tokenizer.decode(np.array([], dtype=np.int64)) == ""


def test_decode_invalid_utf8_is_replaced_not_raised():
    # Half of "é": a model can emit this, decoding must not crash.
    assert tokenizer.decode([0xC3]) == "\ufffd"


@pytest.mark.parametrize("bad", [[256], [-1], [0, 1000]])
def test_decode_rejects_out_of_range_ids(bad):
    with pytest.raises(ValueError, match=r"ids must be in \[0, 256\)"):
        tokenizer.decode(bad)


def test_decode_rejects_non_integer_or_2d_ids():
    with pytest.raises(ValueError, match="ids"):
        tokenizer.decode([1.5])
    with pytest.raises(ValueError, match="ids"):
        tokenizer.decode([[1, 2]])


def test_encode_rejects_non_str():
    with pytest.raises(TypeError, match="text"):
        tokenizer.encode(b"bytes")


# ---------------------------------------------------------------- corpus

def test_corpus_is_deterministic_and_large():
    text = load_corpus(max_bytes=10_000_000)
    assert len(text.encode("utf-8")) > 100_000
    assert text == load_corpus(max_bytes=10_000_000)
    assert "def " in text and "import " in text  # it really is Python source


def test_corpus_respects_max_bytes():
    for max_bytes in (1, 1000, 54_321):
        assert len(load_corpus(max_bytes=max_bytes).encode("utf-8")) <= max_bytes
    assert len(load_corpus(max_bytes=1000).encode("utf-8")) >= 990


def test_corpus_seed_changes_order_not_content():
    a, b = load_corpus(10_000_000, seed=0), load_corpus(10_000_000, seed=1)
    assert a != b
    assert sorted(a.splitlines()) == sorted(b.splitlines())


def test_corpus_falls_back_to_docstrings(monkeypatch):
    monkeypatch.setattr(data, "_stdlib_directory", lambda: "/no/such/directory")
    text = load_corpus(max_bytes=50_000)
    assert len(text) > 1000
    assert text == load_corpus(max_bytes=50_000)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_corpus_rejects_bad_max_bytes(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        load_corpus(max_bytes=bad)


# ---------------------------------------------------------------- split

def test_split_is_contiguous_and_complete():
    tokens = np.arange(100)
    train, val = split(tokens, 0.1)
    assert len(train) == 90 and len(val) == 10
    np.testing.assert_array_equal(np.concatenate([train, val]), tokens)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split(np.arange(100), fraction)


def test_split_rejects_empty_side():
    with pytest.raises(ValueError, match="empty"):
        split(np.arange(3), 0.01)


# ---------------------------------------------------------------- batches

def test_batch_shapes_and_shift():
    tokens = np.arange(1000, dtype=np.int64)  # token value == its position
    inputs, targets = get_batch(tokens, 4, 16, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (4, 16)
    assert inputs.dtype == targets.dtype == np.int64
    np.testing.assert_array_equal(targets, inputs + 1)  # next token everywhere
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    np.testing.assert_array_equal(np.diff(inputs, axis=1), 1)  # contiguous windows


@settings(max_examples=50, deadline=None)
@given(length=st.integers(2, 50), batch=st.integers(1, 8), data_draw=st.data())
def test_batches_stay_in_bounds(length, batch, data_draw):
    seq = data_draw.draw(st.integers(1, length - 1))
    tokens = np.arange(length)
    inputs, targets = get_batch(tokens, batch, seq, np.random.default_rng(length))
    assert inputs.min() >= 0 and targets.max() <= length - 1


def test_batch_with_seq_equal_to_len_minus_one_uses_whole_array():
    inputs, targets = get_batch(np.arange(5), 3, 4, np.random.default_rng(0))
    assert (inputs == [0, 1, 2, 3]).all() and (targets == [1, 2, 3, 4]).all()


def test_batches_iterator_is_seeded():
    tokens = np.arange(500)
    first = [next(Batches(tokens, 2, 8, seed=3))[0] for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    stream = Batches(tokens, 2, 8, seed=3)
    assert not np.array_equal(next(stream)[0], next(stream)[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=0), "batch"),
    (dict(batch=2.0), "batch"),
    (dict(seq=0), "seq"),
    (dict(seq=10), "needs at least 11"),
    (dict(rng=42), "rng"),
    (dict(data=np.zeros((2, 20), dtype=np.int64)), "data"),
    (dict(data=np.zeros(20)), "data"),
])
def test_get_batch_argument_errors(kwargs, match):
    args = dict(data=np.arange(10), batch=2, seq=4, rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        get_batch(**args)


def test_batches_validates_eagerly():
    with pytest.raises(ValueError, match="seq"):
        Batches(np.arange(10), batch=2, seq=0, seed=0)
