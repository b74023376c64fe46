"""Writing files so that readers never see half of one."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


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
