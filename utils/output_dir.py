"""The training run's ``--output_dir``: never silently taken over, logs kept per run, crash leftovers cleared.

A new run used to replace another run's ``checkpoint_latest.pt`` without a word and append to its
``train_log.jsonl``; temporary files of crashed writes stayed forever. With ``--overwrite`` the previous
run's ``checkpoint_best.pt`` and ``eval_metrics*.json`` stayed beside the new run's files, to be taken for
its own: a new run now moves every such file into ``previous_runs/<date-time>/`` first (nothing is deleted).
An evaluation-only run does the same with the files it would replace (its metrics, features and config).
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from utils.config import RunConfig

logger = logging.getLogger(__name__)

RUN_CHECKPOINTS = ("checkpoint_latest.pt", "checkpoint_best.pt")
# atomic_write's temporary files: ".<target name>.<random>.tmp" beside the target.
STALE_TEMP_PATTERN = ".*.tmp"
# What a run writes that a later run into the same folder could be taken for (train_log.jsonl and log.txt
# are appended to, each run starting with a header, so they stay).
RUN_OUTPUT_PATTERNS = (*RUN_CHECKPOINTS, "ckpt.best.pth.tar", "config.json", "eval_config*.json", "eval_metrics*.json",
                       "eval_features*.pt", "train_state.json", "tensorboard")
PREVIOUS_RUNS = "previous_runs"


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


def previous_run_outputs(output_dir: Path) -> list[Path]:
    """The files (and the tensorboard folder) of `RUN_OUTPUT_PATTERNS` that ``output_dir`` holds."""
    return sorted({path for pattern in RUN_OUTPUT_PATTERNS for path in output_dir.glob(pattern)})


def move_aside(output_dir: Path, paths: list[Path]) -> Path | None:
    """Moves ``paths`` (those that exist) into a new ``previous_runs/<YYYYmmdd-HHMMSS>[-N]/`` folder so that a
    new run's folder holds only its own; returns that folder (None when there was nothing to move)."""
    paths = [path for path in paths if path.exists()]
    if not paths:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = output_dir / PREVIOUS_RUNS / stamp, 1
    while target.exists():
        n += 1
        target = output_dir / PREVIOUS_RUNS / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for path in paths:
        shutil.move(path, target / path.name)
    logger.warning("moved the previous run's %s into %s (a new run starts here)", ", ".join(p.name for p in paths), target)
    return target


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
    refusal on every rank (so that all of them stop), then on the main rank the clean-up, the previous run's
    outputs moved aside (unless this run continues it: ``--resume`` of a file in this folder) and run headers."""
    refuse_foreign_checkpoint(cfg.output_dir, cfg.resume, cfg.overwrite)
    if not is_main:
        return
    for path in remove_stale_temp_files(cfg.output_dir):
        logger.warning("removed %s, a temporary file left by an interrupted write", path)
    continuing = cfg.resume and Path(cfg.resume).resolve().parent == cfg.output_dir.resolve()
    if not continuing:
        move_aside(cfg.output_dir, previous_run_outputs(cfg.output_dir))
    start_run_logs(cfg.output_dir, cfg.resume)
