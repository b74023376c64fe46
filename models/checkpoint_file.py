"""Checkpoint files verified on the way in and out: every error names the file, damage is never loaded.

torch's zip reader does not check the CRC of memory-mapped records, so a checkpoint with overwritten bytes
used to load silently with other weights; empty, truncated or text files failed with raw torch errors; a
full disk surfaced as ``RuntimeError: unexpected pos``. Here the zip records are CRC-checked, our compact
format carries a SHA256 per tensor, non-finite weights are refused and a write first checks free space.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write, require_free_space

logger = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"  # torch's legacy (pre-1.6) format starts with a pickle protocol marker


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, damaged or holds unusable weights (the message names the file)."""


def _check_container(path: Path) -> None:
    """The file is a complete torch zip whose records match their CRCs, or a legacy pickle file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), e.g. a write that never happened; use another checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or damaged ({size} bytes, the zip directory at its end is missing)")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(f"{path}: damaged zip ({err})") from err
        if bad is not None:
            raise CheckpointError(f"{path}: damaged, the bytes of record {bad!r} do not match their CRC; use another copy")
    elif not head.startswith(PICKLE_MAGIC):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (starts with {head!r}, neither zip nor pickle)")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` of a verified file (memory-mapped when its format allows)."""
    path = Path(path)
    _check_container(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # mmap needs the zip format; files from old torch versions are not
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: not loadable with weights_only=True ({err}); checkpoints from before the trainer stored its "
            "RNG state as tensors hold pickled numpy objects: re-save them with a current trainer"
        ) from err
    except Exception as err:  # noqa: BLE001 - torch raises many types; re-raised with the file named
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err


def tensor_sha256(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def tensor_hashes(state: dict[str, torch.Tensor]) -> dict[str, str]:
    return {name: tensor_sha256(value) for name, value in state.items()}


def verify_tensor_hashes(state: dict[str, torch.Tensor], hashes: dict[str, str] | None, source: str) -> None:
    """Every tensor matches the SHA256 stored when it was saved; files written before hashes load with a warning."""
    if hashes is None:
        logger.warning("%s: written before checkpoints stored tensor hashes; its weights cannot be verified", source)
        return
    bad = sorted(name for name, value in state.items() if hashes.get(name) != tensor_sha256(value))
    if bad:
        raise CheckpointError(f"{source}: tensors {bad} do not match their stored SHA256 (damaged file); use another copy")


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuses NaN or infinite weights, naming the tensors (they would poison every feature)."""
    bad = sorted(name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all())
    if bad:
        raise CheckpointError(f"{source}: non-finite (NaN or inf) values in {bad}; use an earlier checkpoint")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` serialised in memory, free space checked, then written beside ``path`` and renamed over
    it: a failed or interrupted write leaves the previous file intact."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    # The view is released on the way out, also when an error keeps this frame alive: otherwise the garbage
    # collector may close the buffer while it is still exported (an ignored BufferError on Python 3.13).
    with buffer.getbuffer() as data:
        size = len(data)
        require_free_space(path, size)
        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"No space left on device while writing {path} ({size} bytes); "
                              "the previous file, if any, is unchanged") from err
            raise
