"""Writing files so that readers never see half of one, and hashing them."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def sha256_of_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA256 of a file's bytes, read in chunks (``hashlib.file_digest`` needs Python 3.11; we support 3.10)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(target: str | os.PathLike, write: Callable[[IO[Any]], object], mode: str = "wb") -> None:
    """``write(f)`` into a temporary file beside ``target``, then rename it over ``target``: an interrupted
    write leaves the old file (or none), never a truncated one. Parent folders are created."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.chmod(temp, 0o644)  # mkstemp creates owner-only files
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise


def require_free_space(target: str | os.PathLike, size: int) -> None:
    """OSError(ENOSPC) naming ``target`` when its folder cannot take ``size`` more bytes, before anything is written."""
    folder = Path(target).parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < size:
        raise OSError(errno.ENOSPC, f"No space left on device for {target}: it needs {size} bytes, {free} are free")
