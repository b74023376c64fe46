"""Decode each video once into a frame cache that the loaders then read instead of the video.

    python -m preprocess.cache_frames --datatype msrvtt --data_path ... --features_path ... \
        --val_csv ... --subsets test --frame_cache CACHE [--max_frames 12 --image_resolution 224]
    python -m preprocess.cache_frames ... --subsets train test --all_frames   # also serves TSN training

By default the T evaluation frames (segment centres) of every video are stored, already resized and
cropped (uint8); with --all_frames every frame of each video (at its 3 fps) is stored, which serves
evaluation for any T and random training sampling. Videos already cached and unchanged are skipped;
changed sources (size or mtime) are decoded again. Pass the cache to training/evaluation with
--frame_cache CACHE. Layout and staleness rules: dataloaders/frame_cache.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders import DataConfig, build_split  # noqa: E402
from dataloaders.frame_cache import CacheEntry, CacheSettings, FrameCache, source_stamp  # noqa: E402
from dataloaders.parallel import parallel_map  # noqa: E402
from dataloaders.sampling import segment_centres  # noqa: E402
from dataloaders.splits import VideoTextSplit, Window  # noqa: E402
from dataloaders.transforms import resize_and_crop  # noqa: E402
from dataloaders.video_io import read_video  # noqa: E402
from utils.flags import add_data_flags  # noqa: E402

SAVE_EVERY = 200  # manifest checkpoints, so an interrupted build keeps most of its work


def cache_video(
    cache: FrameCache, path: Path, window: Window, backend: str
) -> tuple[str, CacheEntry]:
    """Decodes, resizes and crops one video's frames and writes them to the cache folder."""
    settings = cache.settings
    stamp = source_stamp(path)  # taken before decoding: a file changed meanwhile reads as stale
    if settings.num_frames is None:
        pick = lambda n: np.arange(n)  # noqa: E731
    else:
        pick = lambda n: segment_centres(n, settings.num_frames)  # noqa: E731
    decoded, n = read_video(path, pick, window, backend)
    frames = resize_and_crop(decoded, settings.resolution).numpy()
    return cache.write_frames(path, window, frames, n, stamp)


def _run(args: tuple) -> tuple[Path, tuple[str, CacheEntry] | None, str | None]:
    cache, path, window, backend = args
    try:
        return path, cache_video(cache, path, window, backend), None
    except Exception as err:  # noqa: BLE001 - reported per video
        return path, None, f"{type(err).__name__}: {err}"


def build_cache(
    splits: list[VideoTextSplit], cfg: DataConfig, all_frames: bool, workers: int = 1, rebuild: bool = False
) -> dict:
    """Fills cfg.frame_cache with the videos of `splits` (at cfg.max_frames / cfg.image_resolution);
    returns counts of videos, newly cached, already up to date and failed."""
    settings = CacheSettings(cfg.image_resolution, None if all_frames else cfg.max_frames)
    cache = FrameCache.open_or_create(cfg.frame_cache, settings, rebuild=rebuild)
    videos = {(path, split.window(i)): None for split in splits for i, path in enumerate(split.video_paths)}
    todo = [(path, window) for path, window in videos if not cache.is_fresh(path, window)]
    failures = []
    writer = FrameCache(cache.root, cache.settings)  # without the entries: cheap to send to workers
    tasks = [(writer, path, window, cfg.video_backend) for path, window in todo]
    for done, (path, result, error) in enumerate(tqdm(parallel_map(_run, tasks, workers), total=len(tasks), unit="video"), 1):
        if error is not None:
            failures.append((path, error))
            tqdm.write(f"FAILED {path}: {error}", file=sys.stderr)
        else:
            cache.add(*result)
        if done % SAVE_EVERY == 0:
            cache.save()
    cache.save()
    for path, error in failures:
        print(f"  not cached: {path}: {error}", file=sys.stderr)
    return {"videos": len(videos), "cached": len(todo) - len(failures), "up_to_date": len(videos) - len(todo), "failed": len(failures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(parser)
    parser.add_argument("--max_frames", type=int, default=DataConfig.max_frames, help="T of the evaluation frames")
    parser.add_argument("--subsets", nargs="+", default=["test"], choices=["train", "val", "test"])
    parser.add_argument("--all_frames", action="store_true", help="store every frame (serves training too)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rebuild", action="store_true", help="replace a cache built with other settings")
    args = parser.parse_args(argv)
    if args.frame_cache is None:
        parser.error("--frame_cache (the folder to fill) is required")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.image_resolution is None:
        args.image_resolution = DataConfig.image_resolution
    cfg = DataConfig.from_args(args)
    splits = [build_split(cfg, subset) for subset in args.subsets]
    counts = build_cache(splits, cfg, args.all_frames, args.workers, args.rebuild)
    print(f"frame cache {args.frame_cache}: {counts}", file=sys.stderr)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
