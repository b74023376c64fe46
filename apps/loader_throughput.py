"""How fast a DataLoader delivers videos: per backend and with the frame cache.

    python -m apps.loader_throughput [--videos 20 --seconds 10 --workers 2]

`measure_loader` times any dataset; `main` generates a small 3 fps 224p H.264 gallery and compares
decord, PyAV and the frame cache (evaluation frames, and all frames) on VideoDataset.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from dataloaders.config import DataConfig
from dataloaders.datasets import VideoDataset
from dataloaders.splits import VideoTextSplit
from dataloaders.synthetic import write_video


def measure_loader(
    dataset: Dataset | None = None,
    *,
    config: DataConfig | None = None,
    subset: str = "train",
    num_workers: int = 2,
    batch_size: int = 4,
    passes: int = 3,
    max_batches: int | None = None,
) -> dict:
    """Videos per second delivered by a DataLoader, timed after its first batch (which pays for
    starting the workers). Without `dataset`, measures VideoDataset over `subset` of `config`
    (each video once, as evaluation and cache building read them). Stops after `passes` passes or
    `max_batches` timed batches."""
    if dataset is None:
        if config is None:
            raise ValueError("measure_loader needs a dataset or a DataConfig")
        from dataloaders import build_split

        dataset = VideoDataset(build_split(config, subset), config)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0)
    videos, batches, start = 0, 0, None
    for _ in range(passes):
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            videos += len(batch["video"])
            batches += 1
            if batches == max_batches:
                break
        if batches == max_batches:
            break
    if not videos:
        raise ValueError(f"too little data to time: {len(dataset)} videos at batch size {batch_size}")
    seconds = time.perf_counter() - start
    return {"videos": videos, "seconds": round(seconds, 3), "videos_per_s": round(videos / seconds, 2), "num_workers": num_workers}


def synthetic_gallery(root: Path, videos: int, seconds: float, fps: int = 3, size: tuple[int, int] = (398, 224)) -> VideoTextSplit:
    """A split of generated textured videos (short side 224, as after compress_video)."""
    paths = [write_video(root / f"video{i}.mp4", int(seconds * fps), *size, fps=fps, pattern="texture", seed=i) for i in range(videos)]
    return split_of_videos(paths)


def split_of_videos(paths: list[Path], name: str = "synthetic/test") -> VideoTextSplit:
    """A test split of the given files with one placeholder caption each (loaders need captions)."""
    return VideoTextSplit(
        name=name, video_ids=[p.stem for p in paths], video_paths=paths, windows=None,
        captions=[f"caption {i}" for i in range(len(paths))], caption_video=list(range(len(paths))), multi_sentence=False,
    )


def compare_sources(split: VideoTextSplit, cfg: DataConfig, workdir: Path, num_workers: int = 2) -> dict:
    """Throughput of VideoDataset for each backend and for both kinds of frame cache."""
    from preprocess.cache_frames import build_cache

    results = {}
    for backend in ("decord", "pyav"):
        results[backend] = measure_loader(VideoDataset(split, dataclasses.replace(cfg, video_backend=backend)), num_workers=num_workers)
    for name, all_frames in (("cache_eval_frames", False), ("cache_all_frames", True)):
        cached = dataclasses.replace(cfg, frame_cache=workdir / name)
        started = time.perf_counter()
        build_cache([split], cached, all_frames=all_frames, workers=num_workers)
        results[name] = measure_loader(VideoDataset(split, cached), num_workers=num_workers)
        results[name]["build_seconds"] = round(time.perf_counter() - started, 2)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max_frames", type=int, default=12)
    parser.add_argument("--image_resolution", type=int, default=224)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        split = synthetic_gallery(workdir / "videos", args.videos, args.seconds)
        cfg = DataConfig(max_frames=args.max_frames, image_resolution=args.image_resolution)
        results = compare_sources(split, cfg, workdir, args.workers)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
