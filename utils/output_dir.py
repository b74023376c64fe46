"""The training run's ``--output_dir``: never silently taken over, logs kept per run, crash leftovers cleared.

A new run used to replace another run's ``checkpoint_latest.pt`` without a word and append to its
``train_log.jsonl``; temporary files of crashed writes stayed forever.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from utils.config import RunConfig

logger = logging.getLogger(__name__)

RUN_CHECKPOINTS = ("checkpoint_latest.pt", "checkpoint_best.pt")
# atomic_write's temporary files: ".<target name>.<random>.tmp" beside the target.
STALE_TEMP_PATTERN = ".*.tmp"


def refuse_foreign_checkpoint(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """SystemExit when ``output_dir`` holds a checkpoint of another run: training would replace it.

    Continuing that run (``--resume`` of a file in this folder) or ``--overwrite`` is allowed."""
    held = [output_dir / name for name in RUN_CHECKPOINTS if (output_dir / name).is_file()]
    if not held or overwrite:
        return
    if resume and Path(resume).resolve().parent == output_dir.resolve():
        return
    raise SystemExit(
        f"--output_dir {output_dir} already holds another run's checkpoint ({held[0].name}); a new run would replace it. "
        f"Fix: continue that run with --resume {held[0]}, choose another --output_dir, or pass --overwrite."
    )


def remove_stale_temp_files(output_dir: Path) -> list[Path]:
    """Deletes the half-written temporary files that killed or failed writes left in ``output_dir``.

    Call it before this run writes anything there; returns the removed paths (to be logged)."""
    removed = []
    for path in sorted(output_dir.glob(STALE_TEMP_PATTERN)):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def start_run_logs(output_dir: Path, resumed_from: str | None) -> None:
    """Marks where this run starts in the appended logs (``log.txt`` through logging, ``train_log.jsonl``
    with a record holding no ``loss``)."""
    header = {"run_start": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv, "resume": resumed_from}
    logger.info("==== run started %s: %s", header["run_start"], " ".join(sys.argv))
    with (output_dir / "train_log.jsonl").open("a") as log:
        log.write(json.dumps(header) + "\n")


def prepare_training_dir(cfg: RunConfig, is_main: bool) -> None:
    """Everything above, before the run writes anything to its output folder (logging already set up): the
    refusal on every rank (so that all of them stop), the clean-up and run headers on the main rank."""
    refuse_foreign_checkpoint(cfg.output_dir, cfg.resume, cfg.overwrite)
    if not is_main:
        return
    for path in remove_stale_temp_files(cfg.output_dir):
        logger.warning("removed %s, a temporary file left by an interrupted write", path)
    start_run_logs(cfg.output_dir, cfg.resume)
