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
fsync it, and only then move it into place, then fsync the directory so that
the new name survives a power cut too.  A crash at any point leaves either the
old file or the new one, never half of one.

* ``overwrite=True`` moves it with ``os.replace``, and the new file keeps the
  permission bits of the one it replaces (a private 0600 file stays 0600).
* ``overwrite=False`` is exclusive, not check-then-rename: the temporary file
  is hard-linked to the target (``os.link`` fails if the target exists, even
  when another process created it a moment ago), then unlinked.  Where the file
  system has no hard links, the target name is reserved with
  ``open(O_CREAT | O_EXCL)`` and the temporary file renamed over that
  placeholder (a reader may briefly see an empty file, which ``load`` refuses).
* A new file gets the mode any ordinary file would: 0666 less the umask
  (0644 under the usual umask 022); the temporary file is owner-only while it
  is being written.

Temporary files are named ``TEMP_PREFIX + random + TEMP_SUFFIX`` in the target's
directory.  One that is left behind (the saving process was killed) is removed
by a later ``save`` into the same directory once it is older than
``STALE_TEMP_SECONDS`` (one hour) and only if it is a regular file owned by the
current user.  A live save rewrites its file continuously, so only a save
stalled for an hour could lose its temporary file, and it then fails loudly
instead of writing anything.

Loading never trusts the header: before anything is allocated, every size it
claims is checked (with Python integers, which cannot overflow) against the
file's actual size from ``os.fstat``, and only regular files are read, so
``/dev/zero`` or a FIFO is refused rather than read forever.  Every problem with
a file's contents is a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
import stat
import struct
import time

import ml_dtypes
import numpy as np

MAGIC = b"MINITXCK"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST_SIZE = 32  # bytes in a SHA-256 digest
# Stored dtype name -> exact little-endian NumPy dtype. bfloat16 (ml_dtypes) is stored as its 16-bit patterns,
# little-endian like the rest, and viewed back as bfloat16 on loading.
DTYPES = {name: np.dtype(name).newbyteorder("<") for name in
          ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")}
DTYPES["bfloat16"] = np.dtype("<u2")
_VIEWS = {"bfloat16": np.dtype(ml_dtypes.bfloat16)}   # stored as DTYPES[name], handed out as this
MAX_DIMS = 32  # NumPy allows 64; no minitx tensor has more than a handful
TEMP_PREFIX = ".minitx-save-"  # temporary files of an unfinished save; see the module docstring
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 3600  # a temporary file untouched for this long is a crashed save's leftover
# errno values with which os.link says "this file system has no hard links" (not "the target exists").
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}


class CheckpointError(ValueError):
    """The file is not a valid minitx checkpoint (corrupted, truncated, ...)."""

    def __init__(self, path, problem: str):
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = path


def _write(file, data: bytes) -> None:
    # One place for every write, so a test can simulate a crash mid-save.
    file.write(data)


def _exists_message(path: str) -> str:
    return f"{path} already exists; pass overwrite=True to replace it"


def save(path, tensors: dict[str, np.ndarray], meta: dict, overwrite: bool = False) -> None:
    """Write ``tensors`` and ``meta`` to ``path`` atomically.

    ``meta`` must be plain JSON (dict/list/str/int/float/bool/None, string
    keys, finite floats) so that it loads back exactly equal.  Refuses to
    replace an existing file unless ``overwrite=True``; the refusal is
    atomic (FileExistsError even if another process creates ``path`` while
    this one is writing).
    """
    path = os.fspath(path)
    if not isinstance(overwrite, (bool, np.bool_)):     # overwrite="no" is truthy: it must not replace a file
        raise TypeError(f"overwrite must be True or False, got {overwrite!r:.40}")
    if not overwrite and os.path.lexists(path):  # early, cheap; the exclusive link below decides
        raise FileExistsError(_exists_message(path))
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
        if array.ndim > MAX_DIMS:
            raise ValueError(f"tensor {name!r} has {array.ndim} dimensions; at most {MAX_DIMS} are stored")
        raw = array.view(np.uint16) if array.dtype.name in _VIEWS else array
        blob = np.ascontiguousarray(raw, dtype=DTYPES[array.dtype.name]).tobytes()
        entries.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                        "offset": offset, "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)
    header = json.dumps({"meta": meta, "tensors": entries}).encode("utf-8")

    directory = os.path.dirname(os.path.abspath(path))
    kept_mode = None
    if overwrite:
        try:
            kept_mode = stat.S_IMODE(os.stat(path).st_mode) & 0o777  # the replaced file's permissions stay
        except FileNotFoundError:
            pass
    _remove_stale_temp_files(directory)
    fd, temp_path, new_file_mode = _create_temp(directory)
    mode = new_file_mode if kept_mode is None else kept_mode
    try:
        with os.fdopen(fd, "wb") as file:
            digest = hashlib.sha256()
            for chunk in [_PREFIX.pack(MAGIC, VERSION, len(header)), header, *blobs]:
                digest.update(chunk)
                _write(file, chunk)
            _write(file, digest.digest())
            file.flush()
            _chmod(file.fileno(), temp_path, mode)
            os.fsync(file.fileno())  # the bytes are on disk before the rename
        if overwrite:
            os.replace(temp_path, path)  # atomic: readers see old or new, never half
        else:
            _move_exclusive(temp_path, path)
        _fsync_directory(directory)  # the new directory entry is on disk too
    except BaseException:
        try:
            os.remove(temp_path)
        except FileNotFoundError:
            pass
        raise


def _create_temp(directory: str) -> tuple[int, str, int]:
    """A new, empty, owner-only temporary file in `directory`: (fd, path, the mode a new file gets here).

    It is created with 0o666 so that the kernel applies the umask (and any default ACL) exactly as for an
    ordinary new file; that mode is read back, then the file is made owner-only while it is being written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temp_path = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            fd = os.open(temp_path, flags, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            _chmod(fd, temp_path, 0o600)
        except BaseException:
            os.close(fd)
            os.remove(temp_path)
            raise
        return fd, temp_path, mode
    raise FileExistsError(errno.EEXIST, "no free temporary file name", directory)


def _chmod(fd: int, path: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # Windows before Python 3.13: only the read-only bit exists
        os.chmod(path, mode)


def _move_exclusive(temp_path: str, path: str) -> None:
    """Give the finished `temp_path` the name `path` only if `path` does not exist, atomically."""
    link = getattr(os, "link", None)
    try:
        if link is None:
            raise OSError(errno.ENOSYS, "no hard links on this platform")
        link(temp_path, path)  # fails with FileExistsError if path exists, however recently it appeared
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        # No hard links here (FAT, some network file systems): reserve the name exclusively, then rename the
        # finished file over our own placeholder.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise FileExistsError(_exists_message(path)) from None
        try:
            os.replace(temp_path, path)
        except BaseException:
            os.remove(path)  # still our empty placeholder
            raise
    else:
        try:
            os.remove(temp_path)  # the checkpoint now lives under `path`
        except OSError:
            pass  # a leftover link is removed by a later save (stale temp files)


def _fsync_directory(directory: str) -> None:
    """Make a rename or link in `directory` durable. Not possible everywhere (Windows): best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temp_files(directory: str) -> None:
    """Remove leftovers of killed saves in `directory`: regular files named TEMP_PREFIX...TEMP_SUFFIX, owned by
    this user, untouched for STALE_TEMP_SECONDS. Best effort: a file that vanishes or resists is left alone."""
    now = time.time()
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        entries = os.scandir(directory)
    except OSError:
        return
    with entries:
        for entry in entries:
            if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX)):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if (stat.S_ISREG(info.st_mode) and (uid is None or info.st_uid == uid)
                        and now - info.st_mtime > STALE_TEMP_SECONDS):
                    os.remove(entry.path)
            except OSError:
                continue


# ---- loading ---------------------------------------------------------------------------------------------------

def _short(value, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: a hostile header may hold megabytes where a name should be."""
    return _clip(repr(value), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} (save never writes one)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} overflows a float (save never writes one)")
    return value


_FILE_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"))


def _open_regular_file(path):
    """(binary file, size) of `path` if it is a regular file. O_NONBLOCK so that opening a FIFO cannot block;
    a directory raises IsADirectoryError (as open() would), any other non-regular file CheckpointError."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(info.st_mode):
            kind = next((what for test, what in _FILE_KINDS if test(info.st_mode)), "a special file")
            raise CheckpointError(path, f"not a regular file (it is {kind}); a checkpoint is a file written by save")
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def load(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by ``save``; return ``(tensors, meta)``.

    Any problem with the file's contents raises ``CheckpointError`` naming the file; nothing is allocated
    beyond what the file's actual size justifies. A missing or unreadable file raises the usual OSError.
    """
    file, size = _open_regular_file(path)
    with file:
        try:
            return _load(path, file, size)
        except MemoryError:
            raise CheckpointError(path, f"its {size:,} bytes do not fit in memory") from None


def _load(path, file, size: int) -> tuple[dict[str, np.ndarray], dict]:
    def check(condition, problem):
        if not condition:
            raise CheckpointError(path, problem)

    def read(n: int) -> bytes:
        data = file.read(n)
        check(len(data) == n, f"file is truncated (it changed while being read: {size:,} bytes at first)")
        return data

    check(size > 0, "file is empty")
    prefix = file.read(_PREFIX.size)
    check(prefix[:len(MAGIC)] == MAGIC,
          f"not a minitx checkpoint (starts with {prefix[:len(MAGIC)]!r}, not {MAGIC!r})")
    check(size >= _PREFIX.size + _DIGEST_SIZE and len(prefix) == _PREFIX.size, f"file is truncated ({size} bytes)")
    _, version, header_length = _PREFIX.unpack(prefix)
    check(version == VERSION, f"unsupported format version {version} (this code reads {VERSION})")
    header_end = _PREFIX.size + header_length
    check(header_end + _DIGEST_SIZE <= size, "file is truncated (header runs past the end)")
    header_bytes = read(header_length)
    try:
        header = json.loads(header_bytes.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: JSONDecodeError, huge ints
        raise CheckpointError(path, f"header is not valid JSON ({_clip(str(error), 200)})") from None

    check(isinstance(header, dict) and isinstance(header.get("meta"), dict)
          and isinstance(header.get("tensors"), list), "header lacks 'meta' or 'tensors'")
    # Every size is checked, with Python ints (exact, no overflow), against the file's real size before
    # anything is allocated.
    plan, names, expected_offset = [], set(), 0
    for entry in header["tensors"]:
        check(isinstance(entry, dict) and isinstance(entry.get("name"), str), f"bad tensor entry {_short(entry)}")
        name, dtype, shape = entry["name"], entry.get("dtype"), entry.get("shape")
        check(isinstance(dtype, str) and dtype in DTYPES, f"tensor {name!r}: unsupported dtype {_short(dtype)}")
        check(isinstance(shape, list), f"tensor {name!r}: bad shape {_short(shape)}")
        check(len(shape) <= MAX_DIMS, f"tensor {name!r}: {len(shape)} dimensions (at most {MAX_DIMS})")
        check(all(type(n) is int and n >= 0 for n in shape), f"tensor {name!r}: bad shape {_short(shape)}")
        nbytes = DTYPES[dtype].itemsize * math.prod(shape)
        offset, stored_nbytes = entry.get("offset"), entry.get("nbytes")
        check(type(offset) is int and offset == expected_offset
              and type(stored_nbytes) is int and stored_nbytes == nbytes,
              f"tensor {name!r}: offset/size do not match dtype and shape")
        end = header_end + expected_offset + nbytes + _DIGEST_SIZE
        check(end <= size, f"file is truncated: tensor {name!r} ({dtype} {_short(shape)}, {nbytes:,} bytes) "
                           f"runs past the end of the file ({size:,} bytes)")
        check(name not in names, f"duplicate tensor name {name!r}")
        names.add(name)
        plan.append((name, dtype, shape, nbytes))
        expected_offset += nbytes
    expected_size = header_end + expected_offset + _DIGEST_SIZE
    check(size == expected_size, f"unexpected {size - expected_size} trailing bytes")

    digest = hashlib.sha256(prefix)
    digest.update(header_bytes)
    tensors = {}
    for name, dtype, shape, nbytes in plan:
        buffer = np.empty(nbytes, dtype=np.uint8)  # ours, so the array is writable and independent of the file
        view = memoryview(buffer)
        filled = 0
        while filled < nbytes:
            got = file.readinto(view[filled:])
            check(got, f"file is truncated (it changed while being read: {size:,} bytes at first)")
            filled += got
        digest.update(view)
        array = buffer.view(DTYPES[dtype]).reshape(shape)
        if not array.dtype.isnative:  # a big-endian machine: convert to its own byte order
            array = array.astype(array.dtype.newbyteorder("="))
        if dtype in _VIEWS:
            array = array.view(_VIEWS[dtype])
        tensors[name] = array
    check(digest.digest() == read(_DIGEST_SIZE), "checksum mismatch: the file is corrupted")
    for name, dtype, _, _ in plan:
        if dtype == "bool" and tensors[name].size:
            check(int(tensors[name].view(np.uint8).max()) <= 1,
                  f"tensor {name!r}: bool data holds bytes other than 0 and 1")
    return tensors, header["meta"]


# ---- whole models: parameters, optional AdamW state, and everything needed to rebuild them -------------------

MODEL_FORMAT = "minitx-model"
_RESERVED_META = ("format", "config", "dtype", "adam", "weights", "group_size")
QUANTIZED_PREFIX = "quantized/"   # "quantized/<parameter name>/values" and ".../scales" for each int8/int4 matrix


def save_model(path, model, optimizer=None, meta: dict | None = None, overwrite: bool = False) -> None:
    """Save a Transformer (and its AdamW state, if given) so that `load_model` rebuilds it exactly.

    Tensors: "params" (model.flat), and with an optimizer "adam_m", "adam_v" (its moment buffers, same layout).
    A quantized model (minitx.quantize) adds, per int8/int4 matrix, "quantized/<name>/values" (int8 (K, M) or
    packed int4 uint8 (K, ⌈M/2⌉), both stored as uint8 bytes) and "quantized/<name>/scales" (float16 (K/g, M)):
    the bytes it runs on, exactly.
    Meta: {"format": "minitx-model", "config": cfg.to_dict(), "dtype": "float32"|"float64"|"bfloat16"|"float16"
    (the activations' and every float parameter's format), "tokenizer": "bytes", "adam": {"lr", "betas", "eps",
    "weight_decay", "t"} (with an optimizer), "weights": "int8"|"int4" and "group_size": g (quantized)}, plus
    the caller's `meta` (step, seed, losses, ...: plain JSON). The caller may set "tokenizer"; the other keys
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
    if model.shape_only:
        raise ValueError("a shape-only model holds no weights to save (it was built with shape_only=True)")
    tensors = {"params": model.flat}
    full = {"format": MODEL_FORMAT, "config": model.cfg.to_dict(), "dtype": model.dtype.name, "tokenizer": "bytes"}
    if model.quantized:
        full["weights"], full["group_size"] = model.precision.weights, model.precision.group_size
        for name, qw in model.quantized.items():
            tensors[f"{QUANTIZED_PREFIX}{name}/values"] = qw.values.view(np.uint8)    # int8: its bytes
            tensors[f"{QUANTIZED_PREFIX}{name}/scales"] = qw.scales
    if optimizer is not None:
        if getattr(optimizer, "model", None) is not model:
            raise ValueError("optimizer does not belong to this model (optimizer.model is another object)")
        tensors["adam_m"], tensors["adam_v"] = optimizer.m, optimizer.v
        full["adam"] = {"lr": optimizer.lr, "betas": list(optimizer.betas), "eps": optimizer.eps,
                        "weight_decay": optimizer.weight_decay, "t": int(optimizer.t)}
    full.update(extra)
    save(path, tensors, full, overwrite=overwrite)


# Transformer(cfg) allocates, besides the parameters, RoPE cos/sin tables of n_ctx x head_dim/2 values each: n_ctx
# x head_dim values in all, set by n_ctx alone, which nothing stored in the file constrains (a learned position
# table is a parameter, so the file's size already bounds it). A file may therefore ask for tables as large as
# the parameters it actually stores (loading it at most doubles its own footprint), or up to this floor whatever
# its size, so that a small model with a long context (131072 positions of head_dim 64 in float32 is 32 MiB)
# still loads. A tiny file claiming n_ctx = 10^9 is refused before anything is built.
ROPE_TABLE_FLOOR_BYTES = 64 * 2**20


def load_model(path):
    """Read a file written by `save_model`: returns (model, optimizer or None, meta).

    The model is rebuilt from the stored config, dtype and (for a quantized model) weight format and group size,
    and its parameters are the stored ones, bit for bit; the AdamW state (m, v, step count and hyperparameters) is
    restored when the file has it. Anything wrong with the file (not a model checkpoint, a config minitx cannot
    build, tensors of the wrong size or dtype, NaN or inf values, quantized values outside their format's range,
    negative scales, a config asking for far more memory than the file justifies) raises CheckpointError before
    a model is built.
    """
    from ..accounting.formulas import num_params
    from ..core.config import Config
    from ..core.model import QUANTIZED_SUFFIXES, Transformer
    from ..core.optim import AdamW
    from ..core.params import param_table
    from ..core.quantize import QMAX, STORAGE, QuantizedWeight
    from ..dtypes import QUANTIZED_FORMATS, RUNNABLE as MODEL_DTYPES, TRAINABLE, Precision

    tensors, meta = load(path)

    def check(condition, problem):
        if not condition:
            raise CheckpointError(path, problem)

    check(meta.get("format") == MODEL_FORMAT,
          f"not a model checkpoint (meta format {_short(meta.get('format'))}, expected {MODEL_FORMAT!r})")
    dtype = meta.get("dtype")
    check(isinstance(dtype, str) and dtype in MODEL_DTYPES,
          f"unsupported model dtype {_short(dtype)} (minitx runs {', '.join(MODEL_DTYPES)})")
    weights, group_size = meta.get("weights"), meta.get("group_size")
    quantized = weights is not None
    check(not quantized or (isinstance(weights, str) and weights in QUANTIZED_FORMATS),
          f"unsupported weight format {_short(weights)} (quantized models store {', '.join(QUANTIZED_FORMATS)})")
    check(not quantized or (type(group_size) is int and group_size >= 1),
          f"bad quantization group size {_short(group_size)} (a positive integer)")
    check(isinstance(meta.get("config"), dict), "meta lacks the model config")
    try:
        cfg = Config.from_dict(meta["config"])
    except (ValueError, TypeError, OverflowError) as error:
        raise CheckpointError(path, f"bad model config: {_clip(str(error), 300)}") from None
    check(isinstance(cfg.name, str), f"bad model config: name {_short(cfg.name)} is not a string")
    has_adam = "adam" in meta
    check(not has_adam or (dtype in TRAINABLE and not quantized),
          f"an optimizer state with a {dtype}{' ' + weights if quantized else ''} model: only float32/float64 "
          "models train")
    # The closed-form count (Python ints) first: param_table would list every layer, and n_layers is only
    # bounded once the count has matched the stored tensor.
    n = num_params(cfg)
    matrices: dict[str, tuple[int, int]] = {}
    if quantized:
        # the quantized matrices' values (not bytes) come off the flat buffer; count them from the config alone
        C, F, L = cfg.d_model, cfg.d_ff, cfg.n_layers
        up = 2 * F if cfg.mlp == "gated" else F
        shapes = ((C, cfg.q_dim + 2 * cfg.kv_dim), (cfg.q_dim, C), (C, up), (F, C))
        n -= L * sum(K * M for K, M in shapes)
    expected = {"params", "adam_m", "adam_v"} if has_adam else {"params"}
    for name in sorted(expected):
        t = tensors.get(name)
        check(t is not None and t.dtype.name == dtype and t.shape == (n,),
              f"tensor {name!r} is {'missing' if t is None else f'{t.dtype.name} {t.shape}'}; config {cfg.name!r} "
              f"needs {dtype} ({n},)")
    table = param_table(cfg)
    if quantized:
        matrices = {spec.name: spec.shape for spec in table if spec.name.endswith(QUANTIZED_SUFFIXES)}
        try:
            for shape in set(matrices.values()):
                Precision(dtype, weights, group_size=group_size).matrix_bytes(*shape)
        except ValueError as error:
            raise CheckpointError(path, f"bad quantization: {_clip(str(error), 300)}") from None
        for name, shape in matrices.items():
            expected |= {f"{QUANTIZED_PREFIX}{name}/values", f"{QUANTIZED_PREFIX}{name}/scales"}
    check(set(tensors) == expected, f"tensors {_clip(str(sorted(tensors)), 300)} do not match the meta "
                                    f"(expected {_clip(str(sorted(expected)), 300)})")
    check(sum(spec.size for spec in table if spec.name not in matrices) == n, "parameter table and count disagree")
    for name, shape in matrices.items():
        vshape, sshape = QuantizedWeight.storage_shapes(shape, weights, group_size)
        values, scales = tensors[f"{QUANTIZED_PREFIX}{name}/values"], tensors[f"{QUANTIZED_PREFIX}{name}/scales"]
        check(values.dtype == np.uint8 and values.shape == vshape,
              f"quantized {name!r} values are {values.dtype.name} {values.shape}; {weights} needs uint8 {vshape}")
        values = values.view(STORAGE[weights])
        tensors[f"{QUANTIZED_PREFIX}{name}/values"] = values
        check(scales.dtype == np.float16 and scales.shape == sshape,
              f"quantized {name!r} scales are {scales.dtype.name} {scales.shape}; needs float16 {sshape}")
        qmax = QMAX[weights]
        if weights == "int8":
            ok = values.size == 0 or int(np.abs(values.astype(np.int16)).max()) <= qmax
        else:   # both nibbles within [-7, 7] (8 would be -8); an odd width's unused high nibble is 0
            lo, hi = values & 0xF, values >> 4
            ok = not ((lo == 8).any() or (hi == 8).any() or (shape[1] % 2 and (hi[:, -1] != 0).any()))
        check(ok, f"quantized {name!r} holds values outside [-{qmax}, {qmax}] (a corrupted or foreign file)")
        check(bool(np.all(np.isfinite(scales)) and np.all(scales >= 0)),
              f"quantized {name!r} scales hold NaN, inf or negative numbers")
    itemsize = np.dtype(tensors["params"].dtype).itemsize
    if cfg.position == "rope":
        table_bytes = cfg.n_ctx * cfg.head_dim * itemsize
        limit = max(ROPE_TABLE_FLOOR_BYTES, n * itemsize)
        check(table_bytes <= limit,
              f"config n_ctx={cfg.n_ctx} would need {table_bytes / 2**20:,.0f} MiB of RoPE tables for "
              f"{n * itemsize / 2**20:,.1f} MiB of stored parameters (at most the larger of the two, or "
              f"{ROPE_TABLE_FLOOR_BYTES // 2**20} MiB, is accepted)")
    for name in sorted(expected - {t for t in expected if t.startswith(QUANTIZED_PREFIX)}):
        check(bool(np.all(np.isfinite(tensors[name]))), f"tensor {name!r} holds NaN or inf")
    adam = meta.get("adam")
    if has_adam:
        check(isinstance(adam, dict), "meta 'adam' is not a dict")
        t = adam.get("t")
        check(type(t) is int and t >= 0, f"bad Adam step count {_short(t)}")
        betas = adam.get("betas")
        check(isinstance(betas, list) and len(betas) == 2, f"bad Adam betas {_short(betas)}")
        check(bool(np.all(tensors["adam_v"] >= 0)), "Adam's second moment has negative entries")

    try:
        model = Transformer(cfg, dtype=dtype, weight_dtype=weights, group_size=group_size or 128, init=False)
    except MemoryError:
        raise CheckpointError(path, f"config {cfg.name!r} does not fit in memory") from None
    model.flat[...] = tensors["params"]
    for name, qw in model.quantized.items():
        qw.values[...] = tensors[f"{QUANTIZED_PREFIX}{name}/values"]
        qw.scales[...] = tensors[f"{QUANTIZED_PREFIX}{name}/scales"]
    optimizer = None
    if has_adam:
        try:
            optimizer = AdamW(model, lr=adam.get("lr"), betas=tuple(betas), eps=adam.get("eps"),
                              weight_decay=adam.get("weight_decay"))
        except (ValueError, TypeError, OverflowError) as error:
            raise CheckpointError(path, f"bad Adam hyperparameters: {_clip(str(error), 300)}") from None
        optimizer.m[...] = tensors["adam_m"]
        optimizer.v[...] = tensors["adam_v"]
        optimizer.t = t
    return model, optimizer, meta
