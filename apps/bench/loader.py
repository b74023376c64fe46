"""How fast a DataLoader delivers videos (videos/s after its first batch), for the benchmark's data rows; and the
``data`` section: that throughput on the user's own data."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from dataloaders import build_split
from dataloaders.config import DataConfig
from dataloaders.datasets import VideoDataset
from dataloaders.splits import VideoTextSplit
from dataloaders.workers import worker_loader


def measure_loader(dataset: Dataset | None = None, *, config: DataConfig | None = None, subset: str = "train",
                  num_workers: int = 2, batch_size: int = 4, passes: int = 3, max_batches: int | None = None) -> dict:
    """Videos per second delivered by a DataLoader, timed after its first batch (which pays for
    starting the workers). Without `dataset`, measures VideoDataset over `subset` of `config`
    (each video once, as evaluation and cache building read them). Stops after `passes` passes or
    `max_batches` timed batches."""
    if dataset is None:
        if config is None:
            raise ValueError("measure_loader needs a dataset or a DataConfig")
        dataset = VideoDataset(build_split(config, subset), config)
    loader = worker_loader(dataset, num_workers, batch_size=batch_size, persistent_workers=num_workers > 0)
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


def split_of_videos(paths: list[Path], name: str = "msrvtt-shaped/test") -> VideoTextSplit:
    """A test split of the given files with one placeholder caption each (loaders need captions)."""
    return VideoTextSplit(
        name=name, video_ids=[p.stem for p in paths], video_paths=paths, windows=None,
        captions=[f"caption {i}" for i in range(len(paths))], caption_video=list(range(len(paths))), multi_sentence=False,
    )


def data_section(args: argparse.Namespace) -> dict[str, Any]:
    """``--features_path`` and/or ``--frame_cache`` with the dataset flags; skipped with a line saying why when none
    is given. A broken data set is reported and never loses the model numbers."""
    sources = [(name, path) for name, path in (("videos", args.features_path), ("frame_cache", args.frame_cache)) if path]
    if not sources:
        return {"skipped": "no data given: pass --features_path (compressed videos) and/or --frame_cache, with "
                           "--datatype/--data_path/--train_csv (the loader section times generated videos)"}
    runs = []
    for source, path in sources:
        config = _data_config(args, path if source == "frame_cache" else None)
        for workers in args.num_workers:
            try:
                row = measure_loader(config=config, subset=args.data_subset, num_workers=workers,
                                     batch_size=args.batch_size or 2, max_batches=args.loader_batches)
            except Exception as err:  # noqa: BLE001 - a broken data set must not lose the model numbers
                row = {"error": f"{type(err).__name__}: {err}"}
            runs.append({**row, "source": source, "num_workers": workers})
    return {"runs": runs}


def _data_config(args: argparse.Namespace, frame_cache: str | None) -> DataConfig:
    fields = {name: getattr(args, name) for name in ("datatype", "data_path", "features_path", "train_csv", "val_csv",
                                                     "video_backend") if getattr(args, name)}
    return DataConfig(max_frames=args.frames, frame_cache=frame_cache, **fields)
