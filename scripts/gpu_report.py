"""Merges the parts one ``scripts/gpu_check.sh`` run writes into one JSON file (``OUT_DIR/gpu_check.json``).

    python scripts/gpu_report.py PARTS_DIR OUT_JSON [--tiny]

Parts read from PARTS_DIR (a missing or broken part becomes an ``error`` entry; the others survive):
``machine.json`` (written by gpu_check.sh), ``tests.rc`` / ``tests.txt``, ``bench_train.json`` and
``bench_encode.json``, ``bench_blip_train.json``, ``bench_blip_encode.json`` (``python -m apps.bench --json_out``), ``eval.txt`` (``python -m apps.bench.real_size_eval``,
its last line is its JSON) or ``eval_skipped.txt``.

Fields of gpu_check.json:
- ``schema`` "gpu_check/1"; ``tiny`` (true: the --tiny / --dry-run shapes, not figures to report); ``machine``;
- ``tests``: ``exit_code`` and pytest's last ``summary`` line;
- ``train``: one row per (variant, activation checkpointing): ``step_s`` (median), ``items_per_s``,
  ``tflop`` per step (models/flops.py), ``tflop_per_s``, ``matmul_tflop_per_s`` (the in-run limit: a plain GEMM
  of the model's main shape in the autocast dtype), ``mfu`` = tflop_per_s / matmul_tflop_per_s, ``peak_mem_mb``
  (allocator peak over the loaded model);
- ``encode``: the same per section (``encode_video``, ``encode_text``) without memory;
- ``blip``: DGL-BLIP's rows the same way (``train_step`` of the full fine-tuning recipe with and without
  checkpointing, ``encode_video``, ``encode_text``, ``itm_rerank_k16`` / ``_k128``); a re-rank row adds ``stage``:
  the 1,000 x 1,000 stage's ``pairs``, exact ``tflop`` and ``scaled_from_sample_s`` (its time scaled by pairs from
  the K timed ones);
- ``eval_real_size``: ``main.py --do_eval 1`` on a generated 1k-video test set, per source ``wall_seconds``,
  ``floor_seconds`` (FLOPs at the matmul limit), ``efficiency``; or ``skipped`` / ``error`` with the reason.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA = "gpu_check/1"
BLIP_ENCODE = ("encode_video", "encode_text", "itm_rerank_k16", "itm_rerank_k128")


def _section_row(config: dict[str, Any], name: str, stats: dict[str, Any]) -> dict[str, Any]:
    row = {
        "model": config["model"], "variant": config["variant"], "grad_checkpointing": config["grad_checkpointing"],
        "section": name, "batch": stats["batch"], "step_s": stats["median_s"], "items_per_s": stats["items_per_s"],
        "tflop": stats["gflop"] / 1e3, "tflop_per_s": stats["gflop_per_s"] / 1e3,
        "matmul_tflop_per_s": stats["matmul_gflop_per_s"] / 1e3, "mfu": stats["efficiency"],
    }
    row.update({key: stats[key] for key in ("peak_mem_mb", "stage") if key in stats})
    return row


def bench_rows(path: Path, sections: tuple[str, ...]) -> list[dict[str, Any]] | dict[str, str]:
    """The rows of ``sections`` in one benchmark JSON, or ``{"error": ...}``."""
    if not path.is_file():
        return {"error": f"{path.name} missing: the step failed or timed out (see gpu_check.log)"}
    report = json.loads(path.read_text())
    rows: list[dict[str, Any]] = []
    for config in report["configs"]:
        if config.get("error"):
            rows.append({key: config[key] for key in ("model", "variant", "grad_checkpointing")} | {"error": config["error"]})
        rows += [_section_row(config, name, stats) for name, stats in config["sections"].items() if name in sections]
    return rows


def _joined(*parts: list[dict[str, Any]] | dict[str, str]) -> list[dict[str, Any]]:
    """Rows of several benchmark files; a missing file becomes an ``error`` row."""
    return [row for part in parts for row in (part if isinstance(part, list) else [part])]


def eval_part(out: Path) -> dict[str, Any]:
    if (out / "eval_skipped.txt").is_file():
        return {"skipped": (out / "eval_skipped.txt").read_text().strip()}
    lines = (out / "eval.txt").read_text().strip().splitlines() if (out / "eval.txt").is_file() else []
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": "no result line in eval.txt: " + " | ".join(lines[-3:])[-500:]}
    runs = {source: {key: run.get(key) for key in ("wall_seconds", "floor_seconds", "efficiency", "error") if key in run}
            for source, run in result.get("runs", {}).items()}
    return {key: result[key] for key in ("videos", "model", "frames", "tflop", "prepare_seconds") if key in result} | {"runs": runs}


def tests_part(out: Path) -> dict[str, Any]:
    rc = (out / "tests.rc").read_text().strip() if (out / "tests.rc").is_file() else ""
    lines = (out / "tests.txt").read_text().strip().splitlines() if (out / "tests.txt").is_file() else []
    return {"exit_code": int(rc) if rc.lstrip("-").isdigit() else None, "summary": lines[-1] if lines else ""}


def merge(out: Path, tiny: bool) -> dict[str, Any]:
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").is_file() else {}
    return {
        "schema": SCHEMA, "tiny": tiny, "machine": machine, "tests": tests_part(out),
        "train": bench_rows(out / "bench_train.json", ("train_step",)),
        "encode": bench_rows(out / "bench_encode.json", ("encode_video", "encode_text")),
        "blip": _joined(bench_rows(out / "bench_blip_train.json", ("train_step",)),
                        bench_rows(out / "bench_blip_encode.json", BLIP_ENCODE)),
        "eval_real_size": eval_part(out),
    }


def main(argv: list[str]) -> int:
    report = merge(Path(argv[0]), "--tiny" in argv[2:])
    Path(argv[1]).write_text(json.dumps(report, indent=1) + "\n")
    failed = [name for name in ("train", "encode", "blip", "eval_real_size") if _errors(report[name])]
    print(f"gpu_check.json: {', '.join(failed) + ' failed' if failed else 'every part came back'}")
    return 1 if failed else 0


def _errors(part: list[dict[str, Any]] | dict[str, Any]) -> bool:
    return "error" in part if isinstance(part, dict) else any("error" in row for row in part)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
