"""Check a prepared dataset before an hours-long job: one report of what training and evaluation will read.

    python preprocess/check_dataset.py --datatype msrvtt --data_path D/MSRVTT_data.json \
        --features_path D/videos --train_csv D/MSRVTT_train.9k.csv --val_csv D/MSRVTT_JSFUSION_test.csv

Takes main.py's data flags and parses the splits with the loaders' own parsers, then opens every video and
decodes the first and last frame of its window (as start-up validation does). Prints, per split, captions,
videos, missing and unreadable files (each listed); the frame rate, frame size, file size and frame count
of the readable videos (min / median / max); how many are above preprocess/compress_video.py's defaults;
and the size and a rough build time of a frame cache (preprocess/cache_frames.py). Exit status: 0 when every
video is readable, 1 when any is missing or unreadable, 2 when the annotation files cannot be read.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders import DATASETS, DataConfig  # noqa: E402
from dataloaders.frame_cache import CacheSettings  # noqa: E402
from dataloaders.parallel import parallel_map  # noqa: E402
from dataloaders.splits import VideoTextSplit, Window  # noqa: E402
from dataloaders.video_io import VideoProbe, probe_video_file  # noqa: E402
from preprocess.cache_frames import decode_for_cache  # noqa: E402
from preprocess.cache_size import SizeEstimate, sized  # noqa: E402
from preprocess.compress_video import DEFAULT_FPS, DEFAULT_SHORT_SIDE  # noqa: E402
from utils.flags import add_data_flags  # noqa: E402

FPS_TOLERANCE = 1.01  # 3 fps stored as 2997/1000 or 3.003 needs no re-encoding
SUBSETS = ("train", "val", "test")
SAMPLE_FRAMES = 120  # decoded from one video to time the build and size JPEG frames


@dataclass
class VideoCheck:
    """One video file of the splits (listed once however many splits use it) and what probing it found."""

    path: Path
    window: Window
    used_by: list[str]  # "split id 'x'" of every row naming it
    probe: VideoProbe | None = None
    problem: str | None = None  # "missing" or the decoder's reason
    file_bytes: int = 0

    @property
    def missing(self) -> bool:
        return self.problem == "missing"


def _inspect(task: tuple[int, Path, Window, str]) -> tuple[int, VideoProbe | None, str | None, int]:
    """(index, probe, problem, file bytes) of one video: "missing", or the decoder's reason when unreadable."""
    index, path, window, backend = task
    if not path.is_file():
        return index, None, "missing", 0
    try:
        return index, probe_video_file(path, window, backend), None, path.stat().st_size
    except Exception as err:  # noqa: BLE001 - any failure makes the video unusable; reported with its reason
        return index, None, str(err), path.stat().st_size


def collect(splits: list[VideoTextSplit]) -> list[VideoCheck]:
    """The distinct (file, window) pairs of the splits, in split and gallery order."""
    videos: dict[tuple[Path, Window], VideoCheck] = {}
    for split in splits:
        for i, path in enumerate(split.video_paths):
            key = (path, split.window(i))
            check = videos.setdefault(key, VideoCheck(path, key[1], []))
            check.used_by.append(f"{split.name} id {split.video_ids[i]!r}")
    return list(videos.values())


def probe_all(videos: list[VideoCheck], backend: str, workers: int) -> None:
    tasks = [(i, v.path, v.window, backend) for i, v in enumerate(videos)]
    for index, probe, problem, size in parallel_map(_inspect, tasks, workers):
        videos[index].probe, videos[index].problem, videos[index].file_bytes = probe, problem, size


def spread(values: list[float], show=lambda x: f"{x:.4g}") -> str:
    """min / median / max of `values`, each written by `show`."""
    if not values:
        return "-"
    return " / ".join(f"{name} {show(value)}" for name, value in
                      (("min", np.min(values)), ("median", float(np.median(values))), ("max", np.max(values))))


def human_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def needs_compressing(probe: VideoProbe, fps: int = DEFAULT_FPS, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[bool, bool]:
    """(above the frame rate, above the short side) of compress_video's defaults."""
    return probe.fps > fps * FPS_TOLERANCE, min(probe.height, probe.width) > short_side


@dataclass(frozen=True)
class CacheForecast:
    evaluation: SizeEstimate  # T frames per video, raw
    all_frames: SizeEstimate  # every frame, raw
    all_frames_compressed: SizeEstimate  # every frame, raw, after compress_video brings the frame rate down
    all_frames_jpeg: SizeEstimate | None  # every frame, JPEG (sampled from one video)
    seconds_per_frame: float | None  # decode + resize of one video, one core


def forecast(readable: list[VideoCheck], resolution: int, max_frames: int, backend: str) -> CacheForecast:
    """Cache sizes from the probed frame counts; bytes per JPEG frame and decode time from one video."""
    frames = sum(v.probe.frames for v in readable)
    raw_all = CacheSettings.of(resolution, None)
    jpeg_all = CacheSettings.of(resolution, None, "jpeg")
    evaluation = sized(len(readable), max_frames * len(readable), CacheSettings.of(resolution, max_frames), None)
    jpeg, per_frame = None, None
    if readable:
        sample = sorted(readable, key=lambda v: v.probe.frames)[len(readable) // 2]  # a median-length video
        started = time.perf_counter()
        decoded, _ = decode_for_cache(raw_all, sample.path, sample_window(sample), backend)
        per_frame = (time.perf_counter() - started) / len(decoded)
        try:
            jpeg = sized(len(readable), frames, jpeg_all, len(jpeg_all.encode(decoded)) / len(decoded))
        except ImportError:  # simplejpeg absent: no JPEG estimate
            jpeg = None
    compressed = sum(compressed_frames(v.probe) for v in readable)
    return CacheForecast(evaluation, sized(len(readable), frames, raw_all, None),
                         sized(len(readable), compressed, raw_all, None), jpeg, per_frame)


def sample_window(video: VideoCheck) -> Window:
    """The video's window, cut to its first SAMPLE_FRAMES frames (memory stays bounded on long raw videos)."""
    if video.probe.frames <= SAMPLE_FRAMES or video.probe.fps <= 0:
        return video.window
    start = video.window[0] or 0.0
    return start, start + (SAMPLE_FRAMES - 0.5) / video.probe.fps


def compressed_frames(probe: VideoProbe, fps: int = DEFAULT_FPS) -> int:
    """Frames of the window after re-encoding at `fps` (unchanged for videos at or below it)."""
    if probe.fps <= fps * FPS_TOLERANCE:
        return probe.frames
    return max(1, math.ceil(probe.frames * fps / probe.fps))


def report(cfg: DataConfig, splits: list[VideoTextSplit], videos: list[VideoCheck], cache: CacheForecast, workers: int,
           show: int) -> list[str]:
    missing = [v for v in videos if v.missing]
    unreadable = [v for v in videos if v.problem is not None and not v.missing]
    readable = [v for v in videos if v.probe is not None]
    problem_of = {v.path: v.problem for v in videos if v.problem}
    lines = [f"dataset {cfg.datatype}: annotations {cfg.data_path}, videos {cfg.features_path}", "",
             f"{'split':<20} {'captions':>9} {'videos':>7} {'missing':>8} {'unreadable':>11}"]
    for split in splits:
        problems = [problem_of.get(p) for p in split.video_paths]
        n_missing = sum(p == "missing" for p in problems)
        n_bad = sum(p is not None and p != "missing" for p in problems)
        lines.append(f"{split.name:<20} {split.num_captions:>9} {split.num_videos:>7} {n_missing:>8} {n_bad:>11}")
    lines.append(f"distinct video files: {len(videos)}: {len(readable)} readable, {len(missing)} missing, "
                 f"{len(unreadable)} unreadable")
    for title, group in (("missing", missing), ("unreadable", unreadable)):
        if group:
            lines.append(f"{title} ({len(group)}):")
            for v in group[:show]:
                reason = "" if v.missing else f": {v.problem}"
                lines.append(f"  {v.path} ({'; '.join(v.used_by)}){reason}")
            if len(group) > show:
                lines.append(f"  ... and {len(group) - show} more (--show N lists more)")
    if readable:
        probes = [v.probe for v in readable]
        lines += [
            "",
            f"readable videos ({len(readable)}):",
            f"  frame rate (fps):      {spread([p.fps for p in probes])}",
            f"  short side (px):       {spread([min(p.height, p.width) for p in probes])}",
            f"  long side (px):        {spread([max(p.height, p.width) for p in probes])}",
            f"  file size:             {spread([v.file_bytes for v in readable], human_bytes)}",
            f"  frames in its window:  {spread([p.frames for p in probes])}; {sum(p.frames for p in probes)} in all",
        ]
        flags = [needs_compressing(p) for p in probes]
        fast, large = sum(f for f, _ in flags), sum(s for _, s in flags)
        lines.append(
            f"  need compressing:      {sum(f or s for f, s in flags)} of {len(readable)} ({fast} above {DEFAULT_FPS} fps, "
            f"{large} with a short side above {DEFAULT_SHORT_SIDE} px: preprocess/compress_video.py's defaults)"
        )
        lines += ["", f"frame cache at {cfg.image_resolution} px (preprocess/cache_frames.py; for the videos as they are now):",
                  f"  {cfg.max_frames} evaluation frames per video, raw: {_size(cache.evaluation)}",
                  f"  every frame (--all_frames), raw: {_size(cache.all_frames)}"]
        if cache.all_frames_compressed.frames != cache.all_frames.frames:
            lines.append(f"  every frame, raw, after compressing to {DEFAULT_FPS} fps: {_size(cache.all_frames_compressed)}")
        if cache.all_frames_jpeg is not None:
            lines.append(f"  every frame, --frame_cache_format jpeg: about {_size(cache.all_frames_jpeg)} "
                         "(frames of one video encoded, times 1.5)")
        if cache.seconds_per_frame is not None:
            total = cache.all_frames.frames * cache.seconds_per_frame / max(workers, 1)
            lines.append(f"  build time, every frame: about {_duration(total)} with --workers {workers} "
                         f"(frames of one video decoded and resized at {1 / cache.seconds_per_frame:.0f} frames/s on one core; rough)")
    lines.append("")
    if missing or unreadable:
        lines.append(f"FAIL: {len(missing)} missing and {len(unreadable)} unreadable video files. Fix: re-copy or re-compress "
                     "them, or train with --skip_bad_videos to drop them and their captions.")
    else:
        lines.append("OK: every video file is readable.")
    return lines


def _size(estimate: SizeEstimate) -> str:
    return f"{estimate.frames} frames, {human_bytes(estimate.bytes)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_flags(parser)
    parser.add_argument("--max_frames", type=int, default=DataConfig.max_frames, help="T of an evaluation frame cache")
    parser.add_argument("--subsets", nargs="+", default=["train", "test"], choices=SUBSETS, help="splits to check")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="videos probed in parallel")
    parser.add_argument("--show", type=int, default=50, help="missing or unreadable files listed by name")
    args = parser.parse_args(argv)
    if args.image_resolution is None:
        args.image_resolution = DataConfig.image_resolution
    cfg = DataConfig.from_args(args)
    if not Path(cfg.features_path).is_dir():
        print(f"error: --features_path {cfg.features_path} is not a folder. Fix: point it at the (compressed) videos.",
              file=sys.stderr)
        return 2
    try:
        splits = [DATASETS[cfg.datatype](cfg, subset) for subset in args.subsets]
    except (ValueError, OSError) as err:  # AnnotationError is a ValueError: one line naming the file and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    videos = collect(splits)
    probe_all(videos, cfg.video_backend, args.workers)
    readable = [v for v in videos if v.probe is not None]
    cache = forecast(readable, cfg.image_resolution, cfg.max_frames, cfg.video_backend)
    print("\n".join(report(cfg, splits, videos, cache, args.workers, args.show)))
    return 1 if len(readable) < len(videos) else 0


if __name__ == "__main__":
    sys.exit(main())
