"""Resuming: the flags that define a run must match the checkpoint's, or be changed on purpose.

Resuming with another ``--epochs``, ``--batch_size`` or ``--lr`` used to keep the checkpoint's schedule
silently. Now every difference is listed and refused, unless ``--resume_with_new_settings`` is given; then
the data position is carried over in samples and the schedule restarts from there with the new values.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from models.checkpoint import is_compact_checkpoint
from utils.config import RunConfig

logger = logging.getLogger(__name__)

# Flags that shape the schedule, the optimiser, the sampled data or the objective. The global batch is compared
# separately, as batch_size x world size (the same global batch on other ranks is the same run); the prompt
# sizes and the variant are fixed by the checkpoint's tensors (models.checkpoint.load_compact_state).
RUN_FLAGS = (
    "epochs", "lr", "coef_lr", "wd", "beta1", "beta2", "eps", "warmup_proportion", "clip_grad_norm",
    "max_frames", "visual_output_type", "freeze_clip", "seed", "train_group_size", "loss",
    "itm_weight", "momentum", "queue_size", "alpha",
)


@dataclass(frozen=True)
class Position:
    """Where training stands: the epoch being trained, batches of it done, optimiser steps done."""

    epoch: int
    batch_in_epoch: int
    global_step: int


def global_batch(flags: dict[str, Any], world_size: int) -> int:
    return int(flags["batch_size"]) * world_size


def setting_differences(ckpt: dict, flags: dict[str, Any], world_size: int) -> list[str]:
    """``flag: checkpoint value -> current value`` for every run-defining flag that differs."""
    saved = ckpt.get("args") or {}
    diffs = [f"--{k}: {saved[k]!r} -> {flags.get(k)!r}" for k in RUN_FLAGS if k in saved and saved[k] != flags.get(k)]
    saved_world = int(ckpt.get("world_size", world_size))
    if "batch_size" in saved and global_batch(saved, saved_world) != global_batch(flags, world_size):
        diffs.append(
            f"global batch (--batch_size x ranks): {saved['batch_size']} x {saved_world} -> {flags['batch_size']} x {world_size}"
        )
    return diffs


def check_resume(ckpt: dict, cfg: RunConfig, world_size: int) -> list[str]:
    """Refuses a resume that has nothing left to train or silently changes the run; returns the accepted
    differences (empty for an exact resume)."""
    epochs, source = cfg.train.epochs, cfg.resume
    if epochs <= ckpt["epoch"]:
        raise SystemExit(
            f"--epochs {epochs}: {source} has already finished {ckpt['epoch']} epochs, nothing is left to train. "
            f"Fix: pass --epochs above {ckpt['epoch']}, or evaluate it with --do_eval 1 --do_train 0."
        )
    diffs = setting_differences(ckpt, cfg.flags, world_size)
    if diffs and not cfg.resume_with_new_settings:
        listing = "\n  ".join(diffs)
        raise SystemExit(
            f"--resume {source}: these settings differ from the checkpoint's:\n  {listing}\n"
            "Fix: pass the checkpoint's values for an exact resume, or add --resume_with_new_settings to continue "
            "with the new values (the learning-rate schedule is then recomputed from the current position)."
        )
    return diffs


def accepted_resume_changes(cfg: RunConfig, ckpt: Any, world_size: int) -> list[str]:
    """`check_resume` when ``ckpt`` (``--resume``) is continued exactly (our format, training, not
    ``--load_from_pretrained``); nothing to check otherwise."""
    if ckpt is None or not cfg.do_train or cfg.load_from_pretrained or not is_compact_checkpoint(ckpt):
        return []
    return check_resume(ckpt, cfg, world_size)


def carried_position(ckpt: dict, batches_per_epoch: int, new_global_batch: int, world_size: int) -> Position:
    """The checkpoint's place in its epoch, in samples, expressed in batches of the new global batch
    (rounded down: at most one batch of samples is seen twice, none is skipped)."""
    saved = ckpt.get("args") or {}
    old_global = global_batch(saved, int(ckpt.get("world_size", world_size))) if "batch_size" in saved else new_global_batch
    batch = min(ckpt["batch_in_epoch"] * old_global // new_global_batch, batches_per_epoch)
    return Position(ckpt["epoch"], batch, ckpt["epoch"] * batches_per_epoch + batch)
