"""The benchmark's output: a fixed-width table for people, then the whole report as one JSON line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from apps.bench import loader_rows, real_size_eval
from apps.bench.limit import efficiency_cell, limit_note

_UNITS = {"train_step": "videos", "encode_video": "videos", "encode_text": "texts", "itm_rerank": "pairs"}  # _naive too


def _section_line(cfg: dict[str, Any], name: str, s: dict[str, Any]) -> str:
    peak = f"{s['peak_mem_mb']:.0f}" if "peak_mem_mb" in s else "-"
    note = limit_note(s)
    if "amp_deviation" in s:
        d = s["amp_deviation"]
        note += f"; amp vs fp32: max|d|={d['max_abs']:.2e} (rel {d['max_abs_rel']:.1e}) min cos={d['min_cosine']:.6f}"
    if "stage" in s:
        g = s["stage"]
        note += (f"; whole stage {g['texts']}x{g['videos']}, {g['pairs']} pairs: {g['tflop']:.1f} TFLOP, "
                 f"{g['scaled_from_sample_s']:.0f} s SCALED from the {s['batch']} timed pairs (floor {g['floor_s']:.0f} s)")
    return (f"{cfg['model']:<9} {cfg['variant']:<11} {'on' if cfg['grad_checkpointing'] else 'off':<4} {name:<18} "
            f"{s['batch']:>4} {s['median_s']:>8.3f} {s['cpu_s']:>7.2f} {s['items_per_s']:>7.2f} {_UNITS.get(name.removesuffix('_naive').split('_k')[0], 'items'):<6} "
            f"{s['gflop']:>8.1f} {s['gflop_per_s']:>8.1f} {s['matmul_gflop_per_s']:>7.1f} {efficiency_cell(s):>5} "
            f"{peak:>8}  {note}".rstrip())


def _data_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"data loading: skipped - {data['skipped']}"] if "skipped" in data else []
    return lines + [f"data loading [{row['source']}, {row['num_workers']} workers]: "
                    + (row.get("error") or f"{row['videos_per_s']:.2f} videos/s") for row in data.get("runs", [])]


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'model':<9} {'variant':<11} {'ckpt':<4} {'section':<18} {'B':>4} {'s/iter':>8} {'cpu_s':>7} {'items/s':>14} "
            f"{'GFLOP':>8} {'GFLOP/s':>8} {'limit':>7} {'eff':>5} {'peak+MB':>8}  notes")
    lines = [head, "-" * len(head)]
    for cfg in report["configs"]:
        if cfg.get("error"):
            lines.append(f"{cfg['model']:<9} {cfg['variant']:<11} {'on' if cfg['grad_checkpointing'] else 'off':<4} "
                         f"ERROR: {cfg['error']}")
        lines += [_section_line(cfg, name, s) for name, s in cfg["sections"].items()]
    lines += loader_rows.format_rows(report["loader"]) if "loader" in report else []
    lines += real_size_eval.format_rows(report["eval_real_size"]) if "eval_real_size" in report else []
    return "\n".join(lines + _data_lines(report.get("data", {})))


def print_report(report: dict[str, Any], json_out: str | None) -> None:
    """The table, then the report as one JSON line (also written to ``json_out`` when given)."""
    print(format_table(report))
    line = json.dumps(report, default=str)
    print(line, flush=True)
    if json_out:
        Path(json_out).write_text(line + "\n")
