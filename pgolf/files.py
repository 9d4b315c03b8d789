"""Files: the one atomic writer, content hashes, and the exclusive lock a run holds on its directory.

Everything pgolf writes that a reader may see half-done (artifacts, checkpoints, shards, JSON) goes through
``atomic_write``: a temporary file in the same folder, then a rename, so a crash or a full disk never leaves a
truncated file in place of a good one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .config import InputError


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], None]) -> int:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes to a binary file) to ``path`` through a
    temporary name and a rename; returns the bytes written. On any failure the previous file is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            n = f.tell()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def write_json(path: str | os.PathLike, obj: Any) -> int:
    return atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


LOCK_NAME = ".lock"


class DirLock:
    """An exclusive, non-blocking lock on a folder (``fcntl.flock`` on ``DIR/.lock``), released when the process
    ends however it ends. A second holder gets a clear ``InputError`` naming the folder and the holder's pid."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._f: IO[str] | None = None

    def acquire(self) -> "DirLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise InputError(f"{self.folder}: in use by another run (pid {holder}); pick another --name") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the descriptor drops the flock
            self._f = None
