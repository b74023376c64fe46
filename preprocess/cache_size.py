"""Up-front size of a frame-cache build, checked against the free disk space before any work.

Frames per video: T for an evaluation cache; for --all_frames the frames of each video's window,
counted from the container's packet table (demuxing only, no decoding). Bytes per frame: exact for
raw (3·S² plus the .npy header); for JPEG, measured by encoding one video of the build, times a
margin, since frames of other videos compress differently.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dataloaders.frame_cache import CacheSettings, FrameCacheError
from dataloaders.parallel import parallel_map
from dataloaders.splits import Window
from dataloaders.video_io import PyAVReader, window_frames

NPY_HEADER_BYTES = 128
JPEG_MARGIN = 1.5  # content varies across videos; a sample of one video is not the mean


class DiskSpaceError(FrameCacheError):
    """The build would not fit on the disk of the cache folder."""


@dataclass(frozen=True)
class SizeEstimate:
    videos: int
    frames: int
    bytes: int


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def window_frame_count(task: tuple[Path, Window]) -> int:
    """Frames of a video's window (0 when unreadable: the build reports it as a failure later)."""
    path, window = task
    try:
        reader = PyAVReader(path)
    except Exception:  # noqa: BLE001 - unreadable videos fail later, with their reason
        return 0
    try:
        first, last = window_frames(reader.num_frames, reader.fps, window)
        return last - first + 1
    except ValueError:
        return 0
    finally:
        reader.close()


def estimate_size(todo: list[tuple[Path, Window]], settings: CacheSettings, jpeg_bytes_per_frame: float | None,
                  workers: int = 1) -> SizeEstimate:
    """Frames and bytes the videos of `todo` will take in a cache with `settings`."""
    if settings.num_frames is None:
        frames = sum(parallel_map(window_frame_count, todo, workers))
    else:
        frames = settings.num_frames * len(todo)
    return sized(len(todo), frames, settings, jpeg_bytes_per_frame)


def sized(videos: int, frames: int, settings: CacheSettings, jpeg_bytes_per_frame: float | None) -> SizeEstimate:
    """The estimate for `frames` frames of `videos` videos: exact for raw, the JPEG sample times a margin."""
    if settings.format == "raw":
        size = frames * 3 * settings.resolution**2 + NPY_HEADER_BYTES * videos
    else:
        size = frames * (jpeg_bytes_per_frame or 0) * JPEG_MARGIN
    return SizeEstimate(videos, frames, int(size))


def check_free_space(root: Path, estimate: SizeEstimate) -> None:
    """Refuses (DiskSpaceError) a build whose estimate exceeds the free space of the cache's disk."""
    free = free_bytes(root)
    if estimate.bytes > free:
        raise DiskSpaceError(
            f"frame cache {root}: {estimate.videos} videos ({estimate.frames} frames) need about "
            f"{estimate.bytes / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free there; nothing was written. "
            "Fix: free space, choose a --frame_cache folder on a larger disk, or build with "
            "--frame_cache_format jpeg (about 1/15 of the raw bytes)."
        )
