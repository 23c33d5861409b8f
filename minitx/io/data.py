"""Training text, byte-level tokens and next-byte batches.

Three small pieces, each as plain as possible:

* ``ByteTokenizer`` — the simplest tokenizer there is: a token *is* a UTF-8
  byte, so the vocabulary is exactly 256 ids, nothing has to be learned or
  downloaded, and every string (in any language) can be encoded.  The price is
  longer sequences than a subword tokenizer would produce.

* ``load_corpus`` — training text that needs no download: the source code of
  a fixed list of pure-Python standard-library modules, read from the
  directory of the running interpreter (``sysconfig.get_paths()["stdlib"]``).
  Python source is a good toy corpus: lots of structure (indentation,
  brackets, keywords) plus English in docstrings and comments.  The text is
  deterministic for a given Python installation; a different Python version
  ships slightly different files, so do not expect identical bytes across
  versions.  If none of the files can be read (a zipped or stripped stdlib),
  we fall back to the docstrings of a fixed list of standard modules.

* ``split`` / ``get_batch`` / ``Batches`` — cut a token array into a
  train and a validation part, and sample random windows from it.  The target
  for each position is the *next* byte, so ``targets`` is ``inputs`` shifted
  left by one.
"""

from __future__ import annotations

import importlib
import os
import sysconfig

import numpy as np

from .. import checks

VOCAB_SIZE = 256  # one id per possible byte value

# Stable, pure-Python stdlib modules (paths relative to the stdlib directory).
# Kept sorted so the default corpus order is easy to reason about.
CORPUS_FILES = ("abc.py", "bisect.py", "calendar.py", "collections/__init__.py", "colorsys.py", "contextlib.py",
                "copy.py", "dataclasses.py", "fnmatch.py", "fractions.py", "functools.py", "glob.py", "graphlib.py",
                "heapq.py", "json/__init__.py", "json/decoder.py", "json/encoder.py", "numbers.py", "queue.py",
                "random.py", "shlex.py", "statistics.py", "string.py", "textwrap.py")

# Used only when none of CORPUS_FILES can be read.
_FALLBACK_MODULES = (
    "builtins", "collections", "functools", "itertools", "json", "math",
    "os", "random", "re", "statistics", "string", "textwrap",
)


class ByteTokenizer:
    """Text <-> token ids, where each id is one byte of the UTF-8 encoding."""

    vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> np.ndarray:
        """Return the UTF-8 bytes of ``text`` as a 1-D int64 array."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        # int64 because that is what embedding lookups and losses index with.
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        """Turn byte ids back into text.

        A model may emit byte sequences that are not valid UTF-8 (e.g. half
        of a multi-byte character), so invalid bytes become U+FFFD instead of
        raising.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
        if ids.size == 0:
            return ""
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= VOCAB_SIZE:
            raise ValueError(
                f"ids must be in [0, {VOCAB_SIZE}), got values from {low} to {high}"
            )
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def _stdlib_directory() -> str:
    """Where this interpreter keeps its pure-Python standard library."""
    return sysconfig.get_paths()["stdlib"]


def _read_stdlib_sources(order: list[str]) -> list[str]:
    directory = _stdlib_directory()
    pieces = []
    for relative_path in order:
        try:
            with open(os.path.join(directory, relative_path), encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError):
            continue  # missing or unreadable on this install: just skip it
        # A one-line marker between files, so the boundary is visible in the text.
        pieces.append(f"# ===== {relative_path} =====\n{source}\n")
    return pieces


def _read_module_docstrings() -> list[str]:
    pieces = []
    for module_name in _FALLBACK_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        docs = [module.__doc__]
        public_names = [name for name in sorted(dir(module)) if not name.startswith("_")]
        docs += [getattr(getattr(module, name, None), "__doc__", None) for name in public_names]
        # Docstrings are None under ``python -OO``; keep only real text.
        pieces += [doc + "\n\n" for doc in docs if isinstance(doc, str) and doc.strip()]
    return pieces


def load_corpus(max_bytes: int = 1_000_000, seed: int = 0) -> str:
    """Return deterministic training text that ships with Python itself.

    The text is the source of ``CORPUS_FILES`` (see the module docstring),
    concatenated in an order shuffled by ``seed``, and cut so that its UTF-8
    encoding is at most ``max_bytes`` long.  The same seed and Python
    installation always give the same text.
    """
    checks.integer("max_bytes", max_bytes)
    checks.integer("seed", seed, 0)
    order = [CORPUS_FILES[i] for i in np.random.default_rng(seed).permutation(len(CORPUS_FILES))]
    pieces = _read_stdlib_sources(order) or _read_module_docstrings()
    if not pieces:
        raise RuntimeError(
            "could not find any text: the standard library sources are missing "
            "and module docstrings are stripped (python -OO?)"
        )
    encoded = "".join(pieces).encode("utf-8")[:max_bytes]
    # The cut may land inside a multi-byte character; drop that partial tail.
    return encoded.decode("utf-8", errors="ignore")


def split(data: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split tokens into (train, validation); validation is the *last* part.

    A contiguous split (not a random one) keeps validation text unseen: random
    windows would overlap with training windows almost everywhere.
    """
    data = np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"data must be 1-D, got shape {data.shape}")
    checks.number("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    n_val = int(round(len(data) * val_fraction))
    if n_val == 0 or n_val == len(data):
        raise ValueError(
            f"val_fraction={val_fraction} of {len(data)} tokens leaves one side empty"
        )
    return data[:-n_val], data[-n_val:]


def get_batch(data: np.ndarray, batch: int, seq: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``batch`` random windows of ``seq + 1`` tokens from ``data``.

    Returns ``(inputs, targets)``, both int64 of shape (batch, seq), with
    ``targets[:, t] == inputs[:, t + 1]`` for t < seq - 1: the model is trained
    to predict every next byte of every window at once.
    """
    data = np.asarray(data)
    if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"data must be a 1-D integer array, got {data.dtype} {data.shape}")
    checks.integer("batch", batch)
    checks.integer("seq", seq)
    if seq + 1 > len(data):
        raise ValueError(f"data has {len(data)} tokens; seq={seq} needs at least {seq + 1}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    # Last valid start is len - seq - 1, so the window [start, start + seq] fits.
    starts = rng.integers(0, len(data) - seq, size=batch)
    windows = data[starts[:, None] + np.arange(seq + 1)].astype(np.int64)
    return windows[:, :-1].copy(), windows[:, 1:].copy()


class Batches:
    """An endless, seeded iterator of ``get_batch`` results.

    >>> inputs, targets = next(Batches(tokens, batch=8, seq=64, seed=0))
    """

    def __init__(self, tokens: np.ndarray, batch: int, seq: int, seed: int = 0):
        self.tokens, self.batch, self.seq = tokens, batch, seq
        self.rng = np.random.default_rng(seed)
        get_batch(tokens, batch, seq, np.random.default_rng(0))  # validate now, not later

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return get_batch(self.tokens, self.batch, self.seq, self.rng)
