"""Section 3, ``data``: DataLoader throughput on the user's own data (``--features_path`` and/or ``--frame_cache``
with the dataset flags); skipped with a line saying why when none is given. A broken data set is reported and
never loses the model numbers."""
from __future__ import annotations

import argparse
from typing import Any

from apps.bench.loader import measure_loader
from dataloaders.config import DataConfig


def data_section(args: argparse.Namespace) -> dict[str, Any]:
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
