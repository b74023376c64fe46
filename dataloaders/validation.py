"""Start-up checks of a split: every video file exists (and, when skipping, can be decoded)."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dataloaders.config import DataConfig
from dataloaders.splits import VideoTextSplit
from dataloaders.video_io import read_video

logger = logging.getLogger(__name__)

MISSING = "missing video file"
UNREADABLE = "unreadable video"
SHOWN = 5  # examples listed in an error message


def probe_video(path, window, backend: str) -> str | None:
    """None if the first and the last frame of the window decode, else the reason. Any sampled frame lies
    between them, and the readers refuse a file holding fewer frames than its index lists (truncated)."""
    try:
        read_video(path, lambda n: np.array([0, n - 1], dtype=np.int64), window, backend)
    except Exception as err:  # noqa: BLE001 - any failure makes the video unusable
        return str(err)
    return None


def validate_split(split: VideoTextSplit, cfg: DataConfig, probe_threads: int = 4) -> VideoTextSplit:
    """Reports the counts of a split and handles bad videos before any training starts.

    Missing files are an error naming them, unless `cfg.skip_bad_videos`: then every video is also
    test-decoded, and missing or unreadable ones are dropped with their captions, each logged.
    """
    missing = np.array([not path.is_file() for path in split.video_paths], dtype=bool)
    if missing.any() and not cfg.skip_bad_videos:
        rows = np.flatnonzero(missing)
        examples = "\n  ".join(split.describe_video(i) for i in rows[:SHOWN])
        raise FileNotFoundError(
            f"{split.name}: {len(rows)} of {split.num_videos} video files are missing, e.g.\n  {examples}\n"
            "Fix: check --features_path (the compressed videos must be there), or pass --skip_bad_videos to drop them."
        )
    reasons = {int(i): MISSING for i in np.flatnonzero(missing)}
    if cfg.skip_bad_videos:
        present = np.flatnonzero(~missing)
        with ThreadPoolExecutor(probe_threads) as pool:
            probes = pool.map(lambda i: probe_video(split.video_paths[i], split.window(i), cfg.video_backend), present)
            for i, reason in zip(present, probes):
                if reason is not None:
                    reasons[int(i)] = f"{UNREADABLE}: {reason}"
    if reasons:
        for i, reason in sorted(reasons.items()):
            logger.warning("skipping %s: %s", split.describe_video(i), reason)
        keep = np.ones(split.num_videos, dtype=bool)
        keep[list(reasons)] = False
        before = split.num_captions
        split = split.keep_videos(keep)
        unreadable = sum(r != MISSING for r in reasons.values())
        split.dropped.update({MISSING: int(missing.sum()), UNREADABLE: unreadable, "captions of dropped videos": before - split.num_captions})
        logger.warning("%s: skipped %d bad videos (%d missing, %d unreadable)", split.name, len(reasons), int(missing.sum()), unreadable)
        if split.num_videos == 0:
            raise FileNotFoundError(f"{split.name}: no usable video left after skipping bad ones. Fix: check --features_path.")
    logger.info(
        "%s: %d videos, %d captions, %d missing files; dropped %s",
        split.name, split.num_videos, split.num_captions, int(missing.sum()), split.dropped or "nothing",
    )
    return split
