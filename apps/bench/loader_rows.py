"""Loader throughput per worker core from videos, the raw frame cache and the JPEG frame cache.

    python -m apps.bench.loader_rows [--videos 24]        (also a section of bash scripts/bench.sh)

The gallery is MSR-VTT-shaped: H.264 at 3 fps, 398x224 (what preprocess/compress_video.py makes of
16:9 sources), durations drawn from 10-30 s, textured frames (moving gradients plus noise). Both
caches hold every frame (--all_frames, the size that serves training); evaluation reads T = 12
segment centres at 224 px. Each source is timed with the DataLoader in the main process (no
workers: one core, torch at one thread), several rounds alternating the sources, best round kept.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apps.bench.loader import measure_loader, split_of_videos
from dataloaders.config import DataConfig
from dataloaders.datasets import VideoDataset
from dataloaders.parallel import parallel_map
from dataloaders.splits import VideoTextSplit
from dataloaders.synthetic import write_video
from preprocess.cache_frames import build_cache
from utils import cli

SOURCES = ("videos", "raw_cache", "jpeg_cache")


@dataclass(frozen=True)
class GalleryConfig:
    videos: int = 24
    unique: int = 100  # distinct generated files; further videos are hard links to them (same decoding work)
    min_seconds: float = 10.0
    max_seconds: float = 30.0
    fps: int = 3
    size: tuple[int, int] = (398, 224)
    seed: int = 0


def _write_one(job: tuple[Path, int, tuple[int, int], int, int]) -> Path:
    """One generated video, renamed into place when complete (a reused folder never holds half a file)."""
    path, frames, size, fps, seed = job
    partial = write_video(path.with_suffix(".partial.mp4"), frames, *size, fps=fps, pattern="texture", seed=seed)
    return partial.replace(path)


def msrvtt_shaped_videos(folder: Path, cfg: GalleryConfig, workers: int = 1) -> list[Path]:
    """Writes video0.mp4 .. video{n-1}.mp4; returns their paths (generation is the slow part, hence `unique`)."""
    rng = np.random.default_rng(cfg.seed)
    seconds = rng.uniform(cfg.min_seconds, cfg.max_seconds, min(cfg.videos, cfg.unique))
    jobs = [(folder / f"video{i}.mp4", int(s * cfg.fps), cfg.size, cfg.fps, cfg.seed + i) for i, s in enumerate(seconds)]
    for _ in parallel_map(_write_one, [job for job in jobs if not job[0].is_file()], workers):
        pass
    originals = [job[0] for job in jobs]
    paths = list(originals)
    for i in range(len(originals), cfg.videos):
        link = folder / f"video{i}.mp4"
        if not link.exists():
            try:
                os.link(originals[i % len(originals)], link)
            except OSError:
                shutil.copy2(originals[i % len(originals)], link)
        paths.append(link)
    return paths


def build_caches(split: VideoTextSplit, cfg: DataConfig, workdir: Path, workers: int) -> dict[str, Any]:
    """Raw and JPEG all-frames caches of `split` -> {source: DataConfig}, and their build reports."""
    configs: dict[str, Any] = {"videos": cfg}
    reports = {}
    for source, fmt in (("raw_cache", "raw"), ("jpeg_cache", "jpeg")):
        configs[source] = dataclasses.replace(cfg, frame_cache=workdir / source)
        report = build_cache([split], configs[source], all_frames=True, workers=workers, fmt=fmt)
        reports[source] = {"bytes": report.bytes, "frames": report.frames, "build_seconds": round(report.seconds, 2)}
    return {"configs": configs, "reports": reports}


def measure_sources(split: VideoTextSplit, configs: dict[str, DataConfig], rounds: int = 3, batch_size: int = 4) -> dict[str, list[float]]:
    """Videos/s of each source on one core, `rounds` alternating rounds (A, B, C, A, B, C, ...)."""
    rates: dict[str, list[float]] = {source: [] for source in configs}
    for _ in range(rounds):
        for source, cfg in configs.items():
            row = measure_loader(VideoDataset(split, cfg), num_workers=0, batch_size=batch_size, passes=2)
            rates[source].append(row["videos_per_s"])
    return rates


def summarise(rates: dict[str, list[float]], reports: dict[str, dict], video_bytes: int, videos: int) -> dict[str, Any]:
    best = {source: max(values) for source, values in rates.items()}
    raw, jpeg = reports["raw_cache"]["bytes"], reports["jpeg_cache"]["bytes"]
    frames = reports["raw_cache"]["frames"]
    return {
        "videos": videos, "frames": frames,
        "videos_per_s_per_core": best, "rounds": rates,
        "speedup_vs_videos": {source: round(rate / best["videos"], 2) for source, rate in best.items()},
        "bytes": {"videos": video_bytes, "raw_cache": raw, "jpeg_cache": jpeg},
        "bytes_per_frame": {"raw_cache": round(raw / frames), "jpeg_cache": round(jpeg / frames)},
        "jpeg_to_raw_bytes": round(jpeg / raw, 4),
        "build_seconds": {source: report["build_seconds"] for source, report in reports.items()},
        "goal_met": best["jpeg_cache"] >= 10 * best["videos"] and jpeg <= raw / 8,
    }


def run_section(gallery: GalleryConfig, frames: int = 12, resolution: int = 224, rounds: int = 3,
                workers: int = 2, workdir: Path | None = None) -> dict[str, Any]:
    """The whole measurement in a temporary folder (or `workdir`, kept)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        paths = msrvtt_shaped_videos(root / "videos", gallery, workers)
        split = split_of_videos(paths)
        cfg = DataConfig(max_frames=frames, image_resolution=resolution)
        caches = build_caches(split, cfg, root, workers)
        rates = measure_sources(split, caches["configs"], rounds)
        result = summarise(rates, caches["reports"], sum(p.stat().st_size for p in paths), len(paths))
        return {"frames_per_video": frames, "resolution": resolution, **result}


def format_rows(result: dict[str, Any]) -> list[str]:
    """Table lines of the section for scripts/bench.sh."""
    if "skipped" in result or "error" in result:
        return [f"loader per core: {result.get('skipped') or result.get('error')}"]
    rate, speed, size = result["videos_per_s_per_core"], result["speedup_vs_videos"], result["bytes_per_frame"]
    return [
        f"loader per core, T={result['frames_per_video']} {result['resolution']} px, {result['videos']} MSR-VTT-shaped videos "
        f"({result['frames']} frames at 3 fps):",
        *(f"  {source:<11} {rate[source]:8.1f} videos/s  {speed[source]:6.2f}x videos" for source in SOURCES),
        f"  bytes per frame: raw {size['raw_cache']}, jpeg {size['jpeg_cache']} (jpeg/raw {result['jpeg_to_raw_bytes']:.3f}); "
        f"goal (jpeg >= 10x videos at <= 1/8 raw bytes) {'met' if result['goal_met'] else 'NOT met'}",
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24, help="MSR-VTT-shaped videos generated")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the videos")
    parser.add_argument("--workers", type=int, default=2, help="processes generating videos and building caches")
    args = parser.parse_args(argv)
    result = run_section(GalleryConfig(videos=args.videos), rounds=args.rounds, workers=args.workers)
    print("\n".join(format_rows(result)))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main))
