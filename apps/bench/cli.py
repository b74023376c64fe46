"""Speed, memory and efficiency benchmark of DGL on random ViT-B/32- and ViT-B/16-shaped CLIP weights, and of
DGL-BLIP on a random BLIP base.

The command line (``python -m apps.bench``, ``python -m apps.benchmark`` or ``bash scripts/bench.sh``):
flags, the configurations they expand to, and the report.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from apps.bench import loader_rows, real_size_eval
from apps.bench.inputs import BLIP_PRESETS, MODEL_PRESETS, variants
from apps.bench.loader import data_section
from apps.bench.report import print_report
from apps.bench.runner import run_config, run_isolated, worker
from apps.bench.spec import RunSpec
from utils import cli

ROOT = Path(__file__).resolve().parents[2]


def _model_name(name: str) -> str:
    key = name.strip().removeprefix("ViT-")
    if key not in {**MODEL_PRESETS, **BLIP_PRESETS}:
        raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose from {', '.join([*MODEL_PRESETS, *BLIP_PRESETS])}")
    return key


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def _variant(name: str) -> str:
    if name not in variants("B/32") + variants("blip-base"):
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}; DGL: transformer, linear; DGL-BLIP: full, prompts")
    return name


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="bench.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=_csv(_model_name), default=None,
                   help="comma list of B/32,B/16 (DGL; default both), blip-base (DGL-BLIP)")
    p.add_argument("--variants", type=_csv(_variant), default=[],
                   help="comma list of transformer,linear (DGL) and full,prompts (DGL-BLIP's training modes); default all")
    p.add_argument("--frames", type=int, default=12, help="T (default 12)")
    p.add_argument("--batch_size", type=int, default=None, help="training batch (default 2 on CPU, 32 on GPU)")
    p.add_argument("--eval_video_batch", type=int, default=4, help="videos per batch in the video-encoding section")
    p.add_argument("--eval_text_batch", type=int, default=64, help="captions per batch in the text-encoding section")
    p.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"), default="auto",
                   help="autocast dtype (auto: bf16 on CUDA, none on CPU)")
    p.add_argument("--grad_checkpointing", nargs="?", const="on", choices=("off", "on", "both"), default="off",
                   help="activation checkpointing of the encoder blocks; 'both' measures with and without")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compilation not timed)")
    p.add_argument("--naive", action="store_true", help="also time the block-masked reference visual attention")
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per section (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2)")
    p.add_argument("--sections", type=_csv(str), default=None,
                   help="subset of train,video,text,rerank,data,loader,eval (default all; --quick: all but eval)")
    p.add_argument("--rerank_k", type=_csv(int), default=[16, 128], help="DGL-BLIP's ITM re-rank rows on 1000 x 1000: K")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each configuration (CPU)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="print the top ROWS ops (self time) of one training step")
    p.add_argument("--json_out", default=None, metavar="FILE", help="also write the JSON result here")
    p.add_argument("--quick", action="store_true", help="ViT-B/32 only, B=2, 2 repeats, 1 warm-up (measured times: docs/benchmarks.md)")
    p.add_argument("--in_process", action="store_true",
                   help="run every configuration in this process (faster start; CPU memory numbers less isolated)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    data = p.add_argument_group("data loading on your data (section 3; apps/bench/loader.py)")
    data.add_argument("--features_path", default=None, help="folder of compressed videos")
    data.add_argument("--frame_cache", default=None, help="frame cache folder")
    data.add_argument("--datatype", default=None, help="msrvtt, ... (DataConfig.datatype)")
    data.add_argument("--data_path", default=None, help="annotations (as main.py's --data_path)")
    data.add_argument("--train_csv", default=None, help="MSR-VTT training list")
    data.add_argument("--val_csv", default=None, help="MSR-VTT test list")
    data.add_argument("--video_backend", default=None, help="auto, decord, pyav, torchcodec")
    data.add_argument("--data_subset", default="train", help="split to read (train/val/test)")
    data.add_argument("--num_workers", type=_csv(int), default=[4], help="comma list of DataLoader worker counts to time")
    data.add_argument("--loader_batches", type=int, default=20, help="batches timed per worker count")
    scale = p.add_argument_group("data at scale (apps/bench/loader_rows.py, apps/bench/real_size_eval.py)")
    scale.add_argument("--loader_videos", type=int, default=24, help="MSR-VTT-shaped videos for the loader rows")
    scale.add_argument("--eval_videos", type=int, default=1000, help="videos (= captions) of the real-size evaluation")
    scale.add_argument("--eval_workdir", default=str(ROOT / "runs" / "bench_eval"), help="kept: videos and caches are reused")
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = args.device.startswith("cuda")
    if args.amp == "auto":
        args.amp = "bf16" if on_gpu else "none"
    if args.quick:
        args.models = args.models or ["B/32"]
        args.batch_size = args.batch_size or 2
        args.repeats = args.repeats or 2
        args.warmup = args.warmup if args.warmup is not None else 1
    args.sections = args.sections or ["train", "video", "text", "rerank", "data", "loader"] + ([] if args.quick else ["eval"])
    args.models = args.models or ["B/32", "B/16"]
    for m in args.models:
        if args.variants and not set(args.variants) & set(variants(m)):
            raise ValueError(f"--variants {','.join(args.variants)} names none of {m}'s: {','.join(variants(m))}")
    args.batch_size = args.batch_size or (32 if on_gpu else 2)
    args.repeats = args.repeats or 5
    args.warmup = args.warmup if args.warmup is not None else 2
    return args


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    ckpt = {"off": [False], "on": [True], "both": [False, True]}[args.grad_checkpointing]
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunSpec) if hasattr(args, f.name)}
    return [RunSpec(**{**shared, "model": m, "variant": v, "grad_checkpointing": c, "isolated": not args.in_process})
            for m in args.models for v in variants(m) if v in args.variants or not args.variants for c in ckpt]


def scale_sections(args: argparse.Namespace) -> dict[str, Any]:
    """Loader throughput per core and the real-size evaluation; a failing one is reported, never loses the rest."""
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


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args._worker:
        worker(*args._worker)
        return {}
    args = _resolve(args)
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(), "amp": args.amp,
        "frames": args.frames, "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
        "loadavg_start": _loadavg(), "configs": [],
    }
    print(f"# DGL benchmark: device={report['device']} threads={report['threads']} amp={args.amp} T={args.frames} "
          f"B={args.batch_size} repeats={args.repeats} warmup={args.warmup} loadavg={report['loadavg_start']}",
          flush=True)
    if any(s in ("train", "video", "text", "rerank") for s in args.sections):
        for spec in _specs(args):
            print(f"# running {spec.model} {spec.variant} grad_checkpointing={spec.grad_checkpointing} ...", flush=True)
            result = run_config(spec) if args.in_process else run_isolated(spec)
            report["configs"].append(result)
            if result.get("profile"):
                print(f"# profile of one training step ({spec.model} {spec.variant}):\n{result.pop('profile')}")
    if "data" in args.sections:
        report["data"] = data_section(args)
    report.update(scale_sections(args))
    report["loadavg_end"] = _loadavg()
    print_report(report, args.json_out)
    return report
