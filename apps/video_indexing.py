"""The indexing pipeline: videos decoded in DataLoader workers, encoded in batches, written as shards.

A file that cannot be decoded, or whose feature is degenerate, is recorded as failed rather than stopping the
run; shards are written every ``shard_size`` videos and when the run ends (also by an error or Ctrl-C).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from utils.progress import progress as progress_bar

from apps.video_index import FileStamp, write_shard
from dataloaders.frames import read_eval_frames
from dataloaders.workers import worker_loader

logger = logging.getLogger(__name__)


class VideoFiles(Dataset):
    """Decodes in DataLoader workers; a file that fails yields its error instead of frames."""

    def __init__(self, paths: list[Path], frames: int, size: int, backend: str) -> None:
        self.paths, self.frames, self.size, self.backend = paths, frames, size, backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, read_eval_frames(self.paths[i], self.frames, self.size, self.backend)[0], None
        except Exception as err:  # noqa: BLE001 - any decoder/IO failure skips the file, reported by the caller
            return i, None, f"{type(err).__name__}: {err}"


def collate_videos(items: list[tuple[int, torch.Tensor | None, str | None]]):
    """(positions of the decoded videos, their stacked frames or None, [(position, error)] of the others)."""
    good = [(i, v) for i, v, _ in items if v is not None]
    videos = torch.stack([v for _, v in good]) if good else None
    return [i for i, _ in good], videos, [(i, e) for i, _, e in items if e is not None]


@dataclass
class IndexReport:
    """What one `Retriever.index` call did."""

    found: int  # video files found
    already_indexed: int  # unchanged since they were encoded: not re-encoded
    encoded: int  # encoded by this call
    failed: list[tuple[str, str]]  # (relative path, error) of files this call could not decode
    known_failures: int  # failed in an earlier run and unchanged: not retried
    remaining: int  # left for a later call by max_videos
    total: int  # videos in the index now

    def summary(self) -> str:
        lines = [
            f"{self.found} video files: {self.encoded} encoded now, {self.already_indexed} already indexed, "
            f"{len(self.failed)} failed, {self.known_failures} known failures skipped, {self.remaining} left for later; "
            f"the index holds {self.total} videos"
        ]
        lines += [f"  failed: {rel}: {error}" for rel, error in self.failed]
        return "\n".join(lines)




@dataclass(frozen=True)
class DecodeOptions:
    """How the DataLoader workers read the videos: ``frames`` frames at ``size`` px with ``backend``."""

    frames: int
    size: int
    backend: str
    batch_size: int
    workers: int


def encode_into_shards(
    encode: Callable[[torch.Tensor], torch.Tensor],
    folder: Path,
    root: Path,
    stamps: list[FileStamp],
    decode: DecodeOptions,
    shard_size: int,
    progress: bool,
) -> tuple[int, list[tuple[str, str]]]:
    """Decode and ``encode`` the files ``stamps`` (relative to ``root``) into new shards of ``folder``.
    Returns how many were encoded and the (relative path, error) of those that failed."""
    if not stamps:
        return 0, []
    dataset = VideoFiles([root / s.rel for s in stamps], decode.frames, decode.size, decode.backend)
    loader = worker_loader(dataset, decode.workers, batch_size=decode.batch_size, collate_fn=collate_videos)
    done: list[tuple[FileStamp, torch.Tensor]] = []
    failed: list[tuple[FileStamp, str]] = []
    encoded, all_failed = 0, []

    def flush() -> None:
        if done or failed:
            write_shard(folder, done, failed)
            done.clear()
            failed.clear()

    with progress_bar(total=len(stamps), unit="video", desc="index", enabled=progress) as bar:
        try:
            for positions, batch, errors in loader:
                if batch is not None:
                    features = encode(batch)
                    valid = torch.isfinite(features).all(dim=-1) & (features.norm(dim=-1) > 0)
                    encoded += int(valid.sum())
                    for i, feature, ok in zip(positions, features, valid.tolist()):
                        if ok:
                            done.append((stamps[i], feature))
                        else:  # never index a degenerate feature: it would match nothing or everything
                            errors.append((i, "the model gave a zero or non-finite feature"))
                for i, error in errors:
                    failed.append((stamps[i], error))
                    all_failed.append((stamps[i].rel, error))
                    logger.warning("skipped %s: %s", stamps[i].rel, error)
                bar.set_postfix(failed=len(all_failed), refresh=False)
                bar.update(len(positions) + len(errors))
                if len(done) + len(failed) >= shard_size:
                    flush()
        finally:
            flush()
    return encoded, all_failed
