"""The benchmark's data-at-scale sections: loader throughput per core (apps/bench_data.py) and the
real-size evaluation (apps/bench_eval.py). A failing section is reported, never loses the others."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def scale_sections(args: argparse.Namespace) -> dict[str, Any]:
    from apps import bench_data, bench_eval  # here: bench_eval uses apps.benchmark's model shapes, which imports us

    out: dict[str, Any] = {}
    if "loader" in args.sections:
        out["loader"] = _guarded(lambda: bench_data.run_section(bench_data.GalleryConfig(videos=args.loader_videos),
                                                                 frames=args.frames))
    if "eval" in args.sections:
        cfg = bench_eval.EvalBenchConfig(bench_data.GalleryConfig(videos=args.eval_videos), frames=args.frames)
        out["eval_real_size"] = _guarded(lambda: bench_eval.run_section(cfg, Path(args.eval_workdir)))
    return out


def _guarded(section) -> dict[str, Any]:
    try:
        return section()
    except Exception as err:  # noqa: BLE001 - the model rows must survive a broken data section
        return {"error": f"{type(err).__name__}: {err}"}


def scale_rows(report: dict[str, Any]) -> list[str]:
    from apps import bench_data, bench_eval

    rows = bench_data.format_rows(report["loader"]) if "loader" in report else []
    return rows + (bench_eval.format_rows(report["eval_real_size"]) if "eval_real_size" in report else [])
