"""Decode each video once into a frame cache that the loaders then read instead of the video.

    python -m preprocess.cache_frames --datatype msrvtt --data_path ... --features_path ... \
        --val_csv ... --subsets test --frame_cache CACHE [--max_frames 12 --image_resolution 224]
    python -m preprocess.cache_frames ... --subsets train test --all_frames   # also serves TSN training
    python -m preprocess.cache_frames ... --frame_cache_format jpeg [--jpeg_quality 90]  # ~1/15 of the bytes

By default the T evaluation frames (segment centres) of every video are stored, already resized and
cropped (uint8); with --all_frames every frame of each video (at its 3 fps) is stored, which serves
evaluation for any T and random training sampling. Videos already cached and unchanged are skipped;
changed sources (size or mtime) are decoded again. Videos are decoded in parallel (--workers) and
every finished one is journaled, so an interrupted build resumes where it stopped. Before any work
the size of the build is estimated and checked against the free disk space; the end prints a
report (videos, frames, bytes, time, failures). Raw frames are bit-exact; the jpeg format stores
JPEG stacks (error: docs/benchmarks.md). Loaders read either (the format is in the manifest):
pass --frame_cache CACHE to training/evaluation. Layout and staleness: dataloaders/frame_cache.py.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders import DataConfig, build_split  # noqa: E402
from dataloaders.frame_cache import CacheEntry, CacheSettings, FrameCache, FrameCacheError, source_sha256, source_stamp  # noqa: E402
from dataloaders.frame_codec import DEFAULT_JPEG_QUALITY, DEFAULT_JPEG_SUBSAMPLING, FORMATS, JPEG_SUBSAMPLINGS  # noqa: E402
from dataloaders.parallel import parallel_map  # noqa: E402
from dataloaders.sampling import segment_centres  # noqa: E402
from dataloaders.splits import VideoTextSplit, Window  # noqa: E402
from dataloaders.transforms import resize_and_crop  # noqa: E402
from dataloaders.video_io import read_video  # noqa: E402
from preprocess.cache_size import SizeEstimate, check_free_space, estimate_size  # noqa: E402
from utils.flags import add_data_flags  # noqa: E402
from utils.progress import progress  # noqa: E402
from utils import cli  # noqa: E402

logger = logging.getLogger(__name__)

SAVE_EVERY = 200  # manifest rewrites (the journal keeps every finished video in between)


@dataclass
class BuildReport:
    """What a build did: videos listed, newly cached, already up to date, failed; frames and bytes written."""

    videos: int  # listed by the splits
    cached: int = 0  # decoded and written by this build
    up_to_date: int = 0  # already cached from unchanged sources (skipped)
    verified_changed: int = 0  # with --verify: size and mtime unchanged, content changed (or no hash stored)
    failed: int = 0
    frames: int = 0  # written by this build
    bytes: int = 0  # written by this build
    seconds: float = 0.0
    estimate: SizeEstimate | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, cache: FrameCache) -> str:
        total = sum(entry.bytes for entry in cache.entries.values())
        lines = [
            f"frame cache {cache.root} ({cache.settings.describe()}): {self.videos} videos, {self.cached} cached now, "
            f"{self.up_to_date} up to date{f' ({self.verified_changed} changed in content only)' if self.verified_changed else ''}, "
            f"{self.failed} failed; {self.frames} frames, {self.bytes / 1e6:.1f} MB written "
            f"in {self.seconds:.1f} s; the cache holds {len(cache.entries)} videos, {total / 1e6:.1f} MB",
        ]
        if self.estimate is not None and self.estimate.videos:
            lines.append(f"  estimated beforehand: {self.estimate.frames} frames, {self.estimate.bytes / 1e6:.1f} MB")
        lines += [f"  not cached: {path}: {error}" for path, error in self.failures]
        return "\n".join(lines)


def decode_for_cache(settings: CacheSettings, path: Path, window: Window, backend: str) -> tuple[np.ndarray, int]:
    """(uint8 frames [k, 3, S, S] as the cache stores them, n frames in the window)."""
    if settings.num_frames is None:
        pick = lambda n: np.arange(n)  # noqa: E731
    else:
        pick = lambda n: segment_centres(n, settings.num_frames)  # noqa: E731
    decoded, n = read_video(path, pick, window, backend)
    return resize_and_crop(decoded, settings.resolution).numpy(), n


def cache_video(cache: FrameCache, path: Path, window: Window, backend: str) -> tuple[str, CacheEntry]:
    """Decodes, resizes and crops one video's frames and writes them to the cache folder."""
    stamp, digest = source_stamp(path), source_sha256(path)  # before decoding: a file changed meanwhile reads as stale
    frames, n = decode_for_cache(cache.settings, path, window, backend)
    return cache.write_frames(path, window, frames, n, stamp, digest)


def _run(args: tuple) -> tuple[Path, tuple[str, CacheEntry] | None, str | None]:
    cache, path, window, backend = args
    try:
        return path, cache_video(cache, path, window, backend), None
    except Exception as err:  # noqa: BLE001 - reported per video
        return path, None, f"{type(err).__name__}: {err}"


def jpeg_sample_bytes(settings: CacheSettings, todo: list[tuple[Path, Window]], backend: str) -> float | None:
    """Bytes per frame of the first readable video of `todo` in the jpeg format (None for raw)."""
    if settings.format != "jpeg":
        return None
    for path, window in todo[:5]:
        try:
            frames, _ = decode_for_cache(settings, path, window, backend)
        except Exception:  # noqa: BLE001 - the build reports unreadable videos
            continue
        return len(settings.encode(frames)) / len(frames)
    return 3 * settings.resolution**2  # nothing readable to sample: assume raw size


def build_cache(
    splits: list[VideoTextSplit], cfg: DataConfig, all_frames: bool, workers: int = 1, rebuild: bool = False,
    fmt: str = "raw", jpeg_quality: int | None = None, jpeg_subsampling: str | None = None, verify: bool = False,
) -> BuildReport:
    """Fills cfg.frame_cache with the videos of `splits` (at cfg.max_frames / cfg.image_resolution, stored
    in `fmt`). Refuses before any work when the estimated size exceeds the free disk space. ``verify``: a cached
    video is up to date only if its source also has the SHA256 it had (reads every source once)."""
    started = time.perf_counter()
    settings = CacheSettings.of(cfg.image_resolution, None if all_frames else cfg.max_frames, fmt, jpeg_quality, jpeg_subsampling)
    cache = FrameCache.open_or_create(cfg.frame_cache, settings, rebuild=rebuild)
    videos = {(path, split.window(i)): None for split in splits for i, path in enumerate(split.video_paths)}
    todo = [(path, window) for path, window in videos if not cache.is_fresh(path, window, verify)]
    report = BuildReport(len(videos), up_to_date=len(videos) - len(todo))
    if verify:
        changed = [path for path, window in todo if cache.is_fresh(path, window)]  # same size and mtime, other bytes
        for path in changed:
            logger.warning("%s: same size and mtime as when cached, but other content (or no hash stored); decoding again", path)
        report.verified_changed = len(changed)
    report.estimate = estimate_size(todo, settings, jpeg_sample_bytes(settings, todo, cfg.video_backend), workers)
    check_free_space(cache.root, report.estimate)
    cache.save()  # settings on disk from the start, so that the journal of an interrupted build applies
    writer = FrameCache(cache.root, cache.settings)  # without the entries: cheap to send to workers
    tasks = [(writer, path, window, cfg.video_backend) for path, window in todo]
    for done, (path, result, error) in enumerate(progress(parallel_map(_run, tasks, workers), total=len(tasks), unit="video"), 1):
        if error is not None:
            report.failures.append((str(path), error))
            tqdm.write(f"FAILED {path}: {error}", file=sys.stderr)
        else:
            cache.record(*result)
            report.frames += result[1].valid_frames if all_frames else settings.num_frames
            report.bytes += result[1].bytes
        if done % SAVE_EVERY == 0:
            cache.save()
    cache.save()
    report.cached, report.failed = len(todo) - len(report.failures), len(report.failures)
    report.seconds = time.perf_counter() - started
    print(report.summary(cache), file=sys.stderr)
    return report


def build(argv: list[str]) -> int:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(parser)
    parser.add_argument("--max_frames", type=int, default=DataConfig.max_frames, help="T of the evaluation frames")
    parser.add_argument("--subsets", nargs="+", default=["test"], choices=["train", "val", "test"],
                        help="splits whose videos are cached")
    parser.add_argument("--all_frames", action="store_true", help="store every frame (serves training too)")
    parser.add_argument("--frame_cache_format", choices=FORMATS, default="raw",
                        help="raw: uint8, bit-exact; jpeg: JPEG stacks, ~1/15 of the bytes, decoded ~10x faster than video")
    parser.add_argument("--jpeg_quality", type=int, default=None, help=f"jpeg format only (default {DEFAULT_JPEG_QUALITY})")
    parser.add_argument("--jpeg_subsampling", choices=JPEG_SUBSAMPLINGS, default=None,
                        help=f"jpeg format only (default {DEFAULT_JPEG_SUBSAMPLING}); 444 keeps full chroma: for small frames, "
                             "where 4:2:0 smears colour edges (docs/benchmarks.md, JPEG on the demo)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    parser.add_argument("--rebuild", action="store_true", help="replace a cache built with other settings")
    parser.add_argument("--verify", action="store_true",
                        help="also compare each cached source's SHA256 (reads every video once): finds files replaced "
                             "by others of the same size and mtime, and decodes them again")
    args = parser.parse_args(argv)
    if args.frame_cache is None:
        parser.error("--frame_cache (the folder to fill) is required")
    for flag in ("jpeg_quality", "jpeg_subsampling"):
        if getattr(args, flag) is not None and args.frame_cache_format != "jpeg":
            parser.error(f"--{flag} applies to --frame_cache_format jpeg only")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.image_resolution is None:
        args.image_resolution = DataConfig.image_resolution
    cfg = DataConfig.from_args(args)
    splits = [build_split(cfg, subset) for subset in args.subsets]
    try:
        report = build_cache(splits, cfg, args.all_frames, args.workers, args.rebuild, args.frame_cache_format, args.jpeg_quality,
                             args.jpeg_subsampling, args.verify)
    except FrameCacheError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    """The exit code: 1 if some videos could not be cached; a user error (a cache of other settings, a full disk)
    is one line and 2 (utils/cli.py)."""
    return cli.run(build, argv)


if __name__ == "__main__":
    sys.exit(main())
