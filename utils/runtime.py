"""What a run actually uses (devices, world, batches, precision, backbone file, library versions), and how a
bare ``python main.py`` on a multi-GPU machine becomes one process per GPU, as the official code did."""
from __future__ import annotations

import importlib.metadata
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dataloaders.config import DataConfig
from utils.distributed import DistInfo, launch_env

LIBRARIES = ("torch", "numpy", "av", "decord", "torchcodec", "ftfy", "regex", "safetensors")


def library_versions() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in LIBRARIES}


def runtime_facts(dist: DistInfo, cfg, precision: str, data: DataConfig, backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in effect, as opposed to the flags: e.g. ``--precision amp`` runs fp32 on a CPU."""
    device = dist.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": f"{device} ({name})",
        "world_size": dist.world_size,
        "batch_per_rank": cfg.train.batch_size,
        "global_batch": cfg.train.batch_size * dist.world_size,
        "precision": precision,
        "eval_precision": cfg.eval.precision,
        "tf32": {"train": cfg.train.tf32, "eval": cfg.eval.tf32, "similarities": False},
        "frames": data.max_frames,
        "image_resolution": data.image_resolution,
        "model": None if cfg.baseline else cfg.model.model,
        "variant": None if cfg.baseline or cfg.model.model != "dgl" else cfg.model.shared_latent_space,
        "backbone": dict(backbone),
        "versions": library_versions(),
    }


def launch_command(argv: Sequence[str], gpus: int, script: str | os.PathLike) -> list[str]:
    """The ``torchrun`` command that runs ``script argv`` on ``gpus`` local GPUs."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", str(script), *argv]


def relaunch_on_all_gpus(argv: Sequence[str], script: str | os.PathLike, environ: Mapping[str, str] = os.environ,
                         gpus: int | None = None) -> list[str] | None:
    """The command to run instead when several GPUs are to be used and no launcher started us; None otherwise.

    A bare ``python main.py`` on a 4-GPU machine would otherwise train on one GPU with a quarter of the official
    global batch, silently. Like the official code (one process per visible GPU), we run on all of them;
    ``CUDA_VISIBLE_DEVICES`` picks which, e.g. ``CUDA_VISIBLE_DEVICES=0`` for one. ``DGL_GPUS`` (set by the
    scripts from their ``GPUS``) asks for that many instead: 1 runs this process alone, more than are visible is
    an error (on a machine without GPUs they are CPU processes). ``gpus``: the visible count (default: CUDA's).
    """
    if launch_env(environ).launcher != "none":
        return None
    visible = torch.cuda.device_count() if gpus is None else gpus
    wanted = visible
    if environ.get("DGL_GPUS"):
        if not environ["DGL_GPUS"].isdigit():
            raise SystemExit(f"GPUS={environ['DGL_GPUS']}: give a whole number of processes per machine, e.g. GPUS=1")
        wanted = int(environ["DGL_GPUS"])
        if 0 < visible < wanted:  # without GPUs, GPUS processes share the CPU (gloo), as before
            shown = environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
            raise SystemExit(f"GPUS={wanted}, but {visible} GPU(s) are visible (CUDA_VISIBLE_DEVICES={shown}): "
                             f"set GPUS to at most {visible}, or make more GPUs visible")
    return launch_command(argv, wanted, Path(script).resolve()) if wanted > 1 else None


def describe(command: Sequence[str]) -> str:
    return shlex.join(command)
