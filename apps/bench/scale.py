"""The benchmark's data-at-scale sections: loader throughput per core (loader_rows.py) and the real-size
evaluation (real_size_eval.py). A failing section is reported, never loses the others."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from apps.bench import loader_rows, real_size_eval


def scale_sections(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "loader" in args.sections:
        out["loader"] = _guarded(lambda: loader_rows.run_section(loader_rows.GalleryConfig(videos=args.loader_videos),
                                                                 frames=args.frames))
    if "eval" in args.sections:
        cfg = real_size_eval.EvalBenchConfig(loader_rows.GalleryConfig(videos=args.eval_videos), args.models[0], args.frames)
        out["eval_real_size"] = _guarded(lambda: real_size_eval.run_section(cfg, Path(args.eval_workdir)))
    return out


def _guarded(section) -> dict[str, Any]:
    try:
        return section()
    except Exception as err:  # noqa: BLE001 - the model rows must survive a broken data section
        return {"error": f"{type(err).__name__}: {err}"}


def scale_rows(report: dict[str, Any]) -> list[str]:
    rows = loader_rows.format_rows(report["loader"]) if "loader" in report else []
    return rows + (real_size_eval.format_rows(report["eval_real_size"]) if "eval_real_size" in report else [])
