"""Console + ``log.txt`` logging on rank 0; other ranks only report warnings and errors."""
from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(output_dir: Path | None, rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if output_dir is not None and rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(output_dir / "log.txt"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)
