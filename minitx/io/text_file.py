"""Reading a text file a user names (a requests file, a workload trace), safely: one place for the rules.

    text = read_text_file("reqs.jsonl", limit=16 << 20, what="--requests reqs.jsonl")

Why not just open(). A path can name something that is not a file: a FIFO (opening it for reading waits for a
writer, forever), a device (/dev/zero never ends), a directory. The file is opened with O_NONBLOCK, so opening a
FIFO returns at once, and refused unless fstat says it is a regular file; then at most `limit` + 1 bytes are read,
so a file larger than the limit is refused without being read whole. The bytes must be UTF-8.

Errors: a missing or unreadable path raises the OSError open() gives (FileNotFoundError, PermissionError,
IsADirectoryError for a directory); anything else (not a regular file, too large, not UTF-8) a ValueError that
starts with `what`.
"""
from __future__ import annotations

import errno
import os
import stat


def read_text_file(path: "str | os.PathLike[str]", limit: int, what: str) -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes of it (see the module docstring)."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{what}: not a regular file (a FIFO, a device or a socket is not read)")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what}: larger than {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: not UTF-8 text ({e.reason} at byte {e.start})") from None


__all__ = ["read_text_file"]
