"""Section 3, ``data``: DataLoader throughput via ``apps.loader_throughput.measure_loader``.

Runs when that module exists and data paths are given; otherwise the section is skipped with a line saying why
(a broken data set never loses the model numbers).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
from typing import Any


def data_section(args: argparse.Namespace) -> dict[str, Any]:
    """DataLoader throughput through the data pipeline's own ``measure_loader``; skipped when unavailable."""
    try:
        module = importlib.import_module("apps.loader_throughput")
    except ImportError as err:
        missing = getattr(err, "name", None)
        why = ("apps.loader_throughput not found (data pipeline missing)" if missing in ("dataloaders", "apps.loader_throughput")
               else f"apps.loader_throughput failed to import: {err}")
        return {"skipped": why}
    measure = getattr(module, "measure_loader", None)
    if measure is None:
        return {"skipped": "apps.loader_throughput has no measure_loader()"}
    sources = [(name, path) for name, path in (("videos", args.features_path), ("frame_cache", args.frame_cache)) if path]
    if not sources:
        return {"skipped": "no data given: pass --features_path (compressed videos) and/or --frame_cache, with "
                           "--datatype/--data_path/--train_csv (python -m apps.loader_throughput times a synthetic gallery)"}
    params = inspect.signature(measure).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    runs = []
    for source, path in sources:
        for workers in args.num_workers:
            candidates: dict[str, Any] = {
                "num_workers": workers, "batch_size": args.batch_size or 2, "max_frames": args.frames,
                "frames": args.frames, "num_batches": args.loader_batches, "max_batches": args.loader_batches,
                "source": source, "subset": args.data_subset, "features_path": args.features_path, "data_path": args.data_path,
                "train_csv": args.train_csv, "frame_cache": path if source == "frame_cache" else None,
                "use_frame_cache": source == "frame_cache",
            }
            try:
                config = _data_config(args, source)
            except (TypeError, ValueError) as err:
                return {"skipped": f"data settings rejected by DataConfig: {err}"}
            if config is not None:
                candidates.update(config=config, data_config=config, cfg=config)
            kwargs = {k: v for k, v in candidates.items() if accepts_any or k in params}
            required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
            if required:
                return {"skipped": f"measure_loader needs arguments this benchmark cannot supply: {required}"}
            try:
                out = measure(**kwargs)
            except Exception as err:  # a broken data set must not lose the model numbers
                runs.append({"source": source, "num_workers": workers, "error": f"{type(err).__name__}: {err}"})
                continue
            row = dict(out) if isinstance(out, dict) else {"videos_per_s": float(out)}
            row.update(source=source, num_workers=workers)
            runs.append(row)
    return {"runs": runs}


def _data_config(args: argparse.Namespace, source: str):
    try:
        from dataloaders.config import DataConfig
    except ImportError:
        return None
    fields = {"max_frames": args.frames, "frame_cache": args.frame_cache if source == "frame_cache" else None}
    for name in ("datatype", "data_path", "features_path", "train_csv", "val_csv", "video_backend"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    return DataConfig(**fields)
