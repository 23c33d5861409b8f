"""minitx checkpoints: named NumPy arrays + a JSON dict, in one safe file.

Why our own format?  Python's pickle (which NumPy falls back to when
``allow_pickle`` is on) can run arbitrary code while loading, so a checkpoint
downloaded from somewhere would be a program, not data.  This format is
only bytes and JSON: loading it never executes anything, and every field is
checked before use.

File layout (all integers little-endian)::

    offset  size  content
    0       8     magic  b"MINITXCK"
    8       4     format version, uint32 (currently 1)
    12      8     header length H, uint64
    20      H     header: UTF-8 JSON  {"meta": {...}, "tensors": [entry, ...]}
    20+H    D     tensor data: the raw bytes of every tensor, back to back
    20+H+D  32    SHA-256 of all bytes before it

Each tensor entry is ``{"name", "dtype", "shape", "offset", "nbytes"}``;
``offset`` counts from the start of the data section, and the tensors are
stored in order with no gaps, so D is the sum of all ``nbytes``.  Only plain
numeric dtypes are allowed (see ``DTYPES``); the data is C-ordered.

Saving is atomic: we write a temporary file next to the target, flush and
fsync it, and only then ``os.replace`` it over the target.  A crash at any
point leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile

import numpy as np

MAGIC = b"MINITXCK"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST_SIZE = 32  # bytes in a SHA-256 digest
# Stored dtype name -> exact little-endian NumPy dtype.
DTYPES = {name: np.dtype(name).newbyteorder("<") for name in
          ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")}


class CheckpointError(ValueError):
    """The file is not a valid minitx checkpoint (corrupted, truncated, ...)."""

    def __init__(self, path, problem: str):
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = path


def _write(file, data: bytes) -> None:
    # One place for every write, so a test can simulate a crash mid-save.
    file.write(data)


def save(path, tensors: dict[str, np.ndarray], meta: dict, overwrite: bool = False) -> None:
    """Write ``tensors`` and ``meta`` to ``path`` atomically.

    ``meta`` must be plain JSON (dict/list/str/int/float/bool/None, string
    keys, finite floats) so that it loads back exactly equal.  Refuses to
    replace an existing file unless ``overwrite=True``.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict, got {type(tensors).__name__}")
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    meta_json = json.dumps(meta, allow_nan=False)  # raises on non-JSON values
    if json.loads(meta_json) != meta:  # e.g. tuples would come back as lists
        raise ValueError("meta must be plain JSON (dicts with str keys, lists, "
                         "str, int, float, bool, None) to round-trip exactly")

    entries, blobs, offset = [], [], 0
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        array = np.asarray(value)
        if array.dtype.name not in DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {array.dtype}; "
                             f"allowed: {', '.join(DTYPES)}")
        blob = np.ascontiguousarray(array, dtype=DTYPES[array.dtype.name]).tobytes()
        entries.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                        "offset": offset, "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)
    header = json.dumps({"meta": meta, "tensors": entries}).encode("utf-8")

    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".minitx-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            digest = hashlib.sha256()
            for chunk in [_PREFIX.pack(MAGIC, VERSION, len(header)), header, *blobs]:
                digest.update(chunk)
                _write(file, chunk)
            _write(file, digest.digest())
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename
        os.chmod(temp_path, 0o644)  # mkstemp makes it owner-only; use the usual mode
        os.replace(temp_path, path)  # atomic: readers see old or new, never half
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def load(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by ``save``; return ``(tensors, meta)``.

    Any problem with the file's contents raises ``CheckpointError``.
    """
    with open(path, "rb") as file:
        data = file.read()

    def check(condition, problem):
        if not condition:
            raise CheckpointError(path, problem)

    check(len(data) > 0, "file is empty")
    check(data[:len(MAGIC)] == MAGIC,
          f"not a minitx checkpoint (starts with {data[:len(MAGIC)]!r}, not {MAGIC!r})")
    check(len(data) >= _PREFIX.size + _DIGEST_SIZE, f"file is truncated ({len(data)} bytes)")
    _, version, header_length = _PREFIX.unpack_from(data)
    check(version == VERSION, f"unsupported format version {version} (this code reads {VERSION})")
    header_end = _PREFIX.size + header_length
    check(header_end + _DIGEST_SIZE <= len(data), "file is truncated (header runs past the end)")
    try:
        header = json.loads(data[_PREFIX.size:header_end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(path, f"header is not valid JSON ({error})") from None

    check(isinstance(header, dict) and isinstance(header.get("meta"), dict)
          and isinstance(header.get("tensors"), list), "header lacks 'meta' or 'tensors'")
    expected_offset = 0
    for entry in header["tensors"]:
        check(isinstance(entry, dict) and isinstance(entry.get("name"), str),
              f"bad tensor entry {entry!r}")
        name, dtype, shape = entry["name"], entry.get("dtype"), entry.get("shape")
        check(dtype in DTYPES, f"tensor {name!r}: unsupported dtype {dtype!r}")
        check(isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape),
              f"tensor {name!r}: bad shape {shape!r}")
        check(entry.get("offset") == expected_offset
              and entry.get("nbytes") == DTYPES[dtype].itemsize * math.prod(shape),
              f"tensor {name!r}: offset/size do not match dtype and shape")
        expected_offset += entry["nbytes"]
    expected_size = header_end + expected_offset + _DIGEST_SIZE
    check(len(data) >= expected_size, f"file is truncated ({len(data)} of {expected_size} bytes)")
    check(len(data) == expected_size, f"unexpected {len(data) - expected_size} trailing bytes")
    check(hashlib.sha256(data[:-_DIGEST_SIZE]).digest() == data[-_DIGEST_SIZE:],
          "checksum mismatch: the file is corrupted")

    tensors = {}
    for entry in header["tensors"]:
        check(entry["name"] not in tensors, f"duplicate tensor name {entry['name']!r}")
        start = header_end + entry["offset"]
        raw = data[start:start + entry["nbytes"]]
        # .copy() makes the array writable and independent of the file buffer;
        # astype with the native name turns '<f4' into the platform's own order.
        array = np.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
        tensors[entry["name"]] = array.astype(entry["dtype"], copy=True)
    return tensors, header["meta"]


# ---- whole models: parameters, optional AdamW state, and everything needed to rebuild them -------------------

MODEL_FORMAT = "minitx-model"
_RESERVED_META = ("format", "config", "dtype", "adam")


def save_model(path, model, optimizer=None, meta: dict | None = None, overwrite: bool = False) -> None:
    """Save a Transformer (and its AdamW state, if given) so that `load_model` rebuilds it exactly.

    Tensors: "params" (model.flat), and with an optimizer "adam_m", "adam_v" (its moment buffers, same layout).
    Meta: {"format": "minitx-model", "config": cfg.to_dict(), "dtype": "float32"|"float64",
    "tokenizer": "bytes", "adam": {"lr", "betas", "eps", "weight_decay", "t"} (with an optimizer)}, plus the
    caller's `meta` (step, seed, losses, ...: plain JSON). The caller may set "tokenizer"; the other four keys
    describe the tensors and are reserved. Refuses to replace an existing file unless overwrite=True.
    """
    from ..core.model import Transformer
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a minitx Transformer, got {type(model).__name__}")
    extra = {} if meta is None else meta
    if not isinstance(extra, dict):
        raise TypeError(f"meta must be a dict, got {type(extra).__name__}")
    clash = sorted(k for k in extra if k in _RESERVED_META)
    if clash:
        raise ValueError(f"meta keys {clash} are reserved (they describe the saved tensors)")
    tensors = {"params": model.flat}
    full = {"format": MODEL_FORMAT, "config": model.cfg.to_dict(), "dtype": model.dtype.name, "tokenizer": "bytes"}
    if optimizer is not None:
        if getattr(optimizer, "model", None) is not model:
            raise ValueError("optimizer does not belong to this model (optimizer.model is another object)")
        tensors["adam_m"], tensors["adam_v"] = optimizer.m, optimizer.v
        full["adam"] = {"lr": optimizer.lr, "betas": list(optimizer.betas), "eps": optimizer.eps,
                        "weight_decay": optimizer.weight_decay, "t": int(optimizer.t)}
    full.update(extra)
    save(path, tensors, full, overwrite=overwrite)


def load_model(path):
    """Read a file written by `save_model`: returns (model, optimizer or None, meta).

    The model is rebuilt from the stored config and dtype, and its parameters are the stored ones, bit for bit;
    the AdamW state (m, v, step count and hyperparameters) is restored when the file has it. Anything wrong
    with the file (not a model checkpoint, a config minitx cannot build, tensors of the wrong size or dtype,
    NaN or inf values) raises CheckpointError before a model is returned.
    """
    from ..core.config import Config
    from ..core.model import Transformer
    from ..core.optim import AdamW
    from ..core.params import param_table
    from ..dtypes import RUNNABLE as MODEL_DTYPES

    tensors, meta = load(path)

    def check(condition, problem):
        if not condition:
            raise CheckpointError(path, problem)

    check(meta.get("format") == MODEL_FORMAT,
          f"not a model checkpoint (meta format {meta.get('format')!r}, expected {MODEL_FORMAT!r})")
    dtype = meta.get("dtype")
    check(dtype in MODEL_DTYPES, f"unsupported model dtype {dtype!r} (minitx runs {', '.join(MODEL_DTYPES)})")
    check(isinstance(meta.get("config"), dict), "meta lacks the model config")
    try:
        cfg = Config.from_dict(meta["config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(path, f"bad model config: {error}") from None
    has_adam = "adam" in meta
    expected = {"params", "adam_m", "adam_v"} if has_adam else {"params"}
    check(set(tensors) == expected, f"tensors {sorted(tensors)} do not match the meta (expected {sorted(expected)})")
    n = sum(spec.size for spec in param_table(cfg))     # checked before allocating a model of that size
    if cfg.position == "rope":                           # the RoPE tables grow with n_ctx, not with n
        check(cfg.n_ctx * cfg.head_dim <= 2**31, f"config n_ctx={cfg.n_ctx} is implausibly large")
    for name in sorted(expected):
        t = tensors[name]
        check(t.dtype.name == dtype and t.shape == (n,),
              f"tensor {name!r} is {t.dtype.name} {t.shape}; config {cfg.name!r} needs {dtype} ({n},)")
        check(bool(np.all(np.isfinite(t))), f"tensor {name!r} holds NaN or inf")

    model = Transformer(cfg, dtype=dtype)
    model.flat[...] = tensors["params"]
    optimizer = None
    if has_adam:
        adam = meta["adam"]
        check(isinstance(adam, dict), "meta 'adam' is not a dict")
        t = adam.get("t")
        check(type(t) is int and t >= 0, f"bad Adam step count {t!r}")
        betas = adam.get("betas")
        check(isinstance(betas, list) and len(betas) == 2, f"bad Adam betas {betas!r}")
        check(bool(np.all(tensors["adam_v"] >= 0)), "Adam's second moment has negative entries")
        try:
            optimizer = AdamW(model, lr=adam.get("lr"), betas=tuple(betas), eps=adam.get("eps"),
                              weight_decay=adam.get("weight_decay"))
        except (ValueError, TypeError) as error:
            raise CheckpointError(path, f"bad Adam hyperparameters: {error}") from None
        optimizer.m[...] = tensors["adam_m"]
        optimizer.v[...] = tensors["adam_v"]
        optimizer.t = t
    return model, optimizer, meta
