"""Wall time of evaluating an MSR-VTT-1k-shaped test set end to end through ``main.py --do_eval 1``.

    python -m apps.bench.real_size_eval [--videos 1000 --sources videos,raw_cache,jpeg_cache --workdir DIR]

Writes (or reuses, in --workdir) a JSFusion-layout test CSV of one caption per video, the generated
MSR-VTT-shaped videos of apps/bench/loader_rows.py and a random OpenAI-format ViT-B/32 file, builds the raw
and JPEG caches of the T = 12 evaluation frames, then times one ``main.py --do_eval 1`` subprocess per
source (model build, loading, encoding and metrics; what a user evaluating a checkpoint waits for).
Each run saves its features, so the JPEG cache's change of the video features (cosine to the raw
cache's, which equal the decoded videos') is reported too. Beside each run the machine's matmul limit is
sampled (on the GPU main.py evaluates on, in its bf16, else on the CPU in fp32): the evaluation's FLOPs over the
best sample is the wall time no implementation could beat on this machine (the floor), and FLOPs over the wall time is the run's end-to-end efficiency.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from apps.bench.inputs import MODEL_PRESETS, random_clip_state_dict
from apps.bench.limit import LimitSampler, efficiency_cell
from apps.bench.loader import split_of_videos
from apps.bench.loader_rows import SOURCES, GalleryConfig, msrvtt_shaped_videos
from apps.bench.timing import matmul_limit
from dataloaders.config import DataConfig
from dataloaders.frame_cache import FrameCache
from models.backbones import get_tokenizer
from models.dgl import DGLConfig
from models.flops import Shapes, kept_words, text_flops, video_flops
from models.pretrained import CLIPConfig
from preprocess.cache_frames import build_cache
from utils import cli

ROOT = Path(__file__).resolve().parents[2]
WORDS = "a man woman dog car plays runs drives red blue small on in the street kitchen field with ball guitar".split()


@dataclass(frozen=True)
class EvalBenchConfig:
    gallery: GalleryConfig = GalleryConfig(videos=1000)
    model: str = "B/32"
    frames: int = 12
    batch_size_val: int = 16
    readers: int = 1  # --num_thread_reader: DataLoader workers beside the model's process
    sources: tuple[str, ...] = SOURCES


def write_test_csv(path: Path, video_ids: list[str], seed: int = 0) -> Path:
    """The JSFusion 1k-A layout: one row per (video, sentence), 8-14 random words per sentence."""
    gen = torch.Generator().manual_seed(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, video_id in enumerate(video_ids):
            count = int(torch.randint(8, 15, (1,), generator=gen))
            words = [WORDS[int(k)] for k in torch.randint(len(WORDS), (count,), generator=gen)]
            writer.writerow([f"ret{i}", f"msr{i}", video_id, " ".join(words)])
    return path


def clip_config(model: str) -> CLIPConfig:
    """The benchmark's shapes with the real tokenizer's vocabulary (captions go through it here)."""
    return dataclasses.replace(MODEL_PRESETS[model], vocab_size=49408)


def prompt_layers(cfg: EvalBenchConfig) -> int:
    """The official default of 12, or every layer of a shallower preset (--unified_transformer_layers)."""
    ccfg = clip_config(cfg.model)
    return min(12, ccfg.vision_layers, ccfg.text_layers)


def eval_flops(cfg: EvalBenchConfig, captions: list[str], max_words: int = DataConfig.max_words) -> tuple[int, Shapes]:
    """FLOPs of the evaluation's encoders (main.py's defaults): every video once, and the captions in
    ``batch_size_val`` batches, each trimmed after its last EOT as the loader does."""
    layers = prompt_layers(cfg)
    shapes = Shapes.of_configs(clip_config(cfg.model), DGLConfig(max_frames=cfg.frames, prompt_layers=layers), layers, cfg.frames)
    ids, _ = get_tokenizer()(captions, max_words)
    text = sum(text_flops(shapes, len(batch), kept_words(batch))[0] for batch in ids.split(cfg.batch_size_val))
    full, rest = divmod(cfg.gallery.videos, cfg.batch_size_val)  # the prompts' share is counted once per batch
    video = full * video_flops(shapes, cfg.batch_size_val)[0] + (video_flops(shapes, rest)[0] if rest else 0)
    return video + text, shapes


def prepare(workdir: Path, cfg: EvalBenchConfig, workers: int) -> dict[str, Any]:
    """Videos, test CSV, random CLIP file and both caches (each reused when present and fresh)."""
    paths = msrvtt_shaped_videos(workdir / "videos", cfg.gallery, workers)
    csv_path = write_test_csv(workdir / "MSRVTT_JSFUSION_test.csv", [p.stem for p in paths])
    clip = workdir / f"random_{cfg.model.replace('/', '-')}.pt"
    if not clip.is_file():
        torch.save(random_clip_state_dict(clip_config(cfg.model)), clip)
    split = split_of_videos(paths)
    caches, builds = {}, {}
    for source, fmt in (("raw_cache", "raw"), ("jpeg_cache", "jpeg")):
        caches[source] = workdir / f"{source}_{cfg.model.replace('/', '-')}"
        data = DataConfig(max_frames=cfg.frames, image_resolution=clip_config(cfg.model).image_resolution,
                          frame_cache=caches[source])
        report = build_cache([split], data, all_frames=False, workers=workers, fmt=fmt)
        stored = sum(entry.bytes for entry in FrameCache.open(caches[source]).entries.values())
        builds[source] = {"bytes": stored, "build_seconds": round(report.seconds, 1)}
    return {"features_path": paths[0].parent, "val_csv": csv_path, "clip": clip, "caches": caches, "builds": builds}


def read_captions(csv_path: Path) -> list[str]:
    with open(csv_path, newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f)]


def eval_command(data: dict[str, Any], cfg: EvalBenchConfig, source: str, out: Path) -> list[str]:
    command = [
        sys.executable, str(ROOT / "main.py"), "--do_eval", "1", "--datatype", "msrvtt", "--val_csv", str(data["val_csv"]),
        "--features_path", str(data["features_path"]), "--pretrained_clip_name", str(data["clip"]),
        "--max_frames", str(cfg.frames), "--batch_size_val", str(cfg.batch_size_val),
        "--num_thread_reader", str(cfg.readers), "--output_dir", str(out), "--save_features",
        "--unified_transformer_layers", str(prompt_layers(cfg)),
    ]
    if source != "videos":
        command += ["--frame_cache", str(data["caches"][source])]
    return command


def time_eval(data: dict[str, Any], cfg: EvalBenchConfig, source: str, workdir: Path, flops: int,
              limits: LimitSampler) -> dict[str, Any]:
    """One end-to-end evaluation in a fresh process: wall time, retrieval metrics, and the machine's matmul
    limit sampled right before and after it (floor = FLOPs / best sample; efficiency = floor / wall)."""
    out = workdir / f"eval_{source}"
    limits.before()
    started = time.perf_counter()
    proc = subprocess.run(eval_command(data, cfg, source, out), cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"error": f"main.py exited with {proc.returncode}: {proc.stderr[-1500:]}"}
    metrics = json.loads((out / "eval_metrics.json").read_text())
    label = next(iter(metrics))
    run = {"wall_seconds": round(seconds, 1), "t2v_R@1": metrics[label]["t2v"]["R@1"], "gflop_per_s": flops / seconds / 1e9}
    limits.finish(run)
    run["floor_seconds"] = flops / (run["matmul_gflop_per_s"] * 1e9)
    return run


def feature_change(workdir: Path, source: str, reference: str = "raw_cache") -> dict[str, float] | None:
    """Cosine of each video's feature from `source` to the one from `reference` (min and mean)."""
    files = [workdir / f"eval_{name}" / "eval_features.pt" for name in (source, reference)]
    if not all(f.is_file() for f in files):
        return None
    test, ref = (torch.load(f, weights_only=False)["video"].float() for f in files)
    cosine = F.cosine_similarity(test, ref, dim=-1)
    return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()), "max_abs": float((test - ref).abs().max())}


def run_section(cfg: EvalBenchConfig, workdir: Path, workers: int = 2) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = prepare(workdir, cfg, workers)
    flops, shapes = eval_flops(cfg, read_captions(data["val_csv"]))
    result: dict[str, Any] = {"videos": cfg.gallery.videos, "captions": cfg.gallery.videos, "model": cfg.model, "frames": cfg.frames,
                              "prepare_seconds": round(time.perf_counter() - started, 1), "caches": data["builds"],
                              "tflop": flops / 1e12, "runs": {}}
    gemm = (cfg.batch_size_val * shapes.video_tokens, shapes.vision_width, 4 * shapes.vision_width)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # main.py's default device and precision
    limit = lambda: matmul_limit(*gemm, device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)  # noqa: E731
    for source in cfg.sources:
        result["runs"][source] = time_eval(data, cfg, source, workdir, flops, LimitSampler(limit))
    for source in ("videos", "jpeg_cache"):
        change = feature_change(workdir, source)
        if change is not None:
            result[f"features_{source}_vs_raw_cache"] = change
    return result


def format_rows(result: dict[str, Any]) -> list[str]:
    if "skipped" in result or "error" in result:
        return [f"eval at real size: {result.get('skipped') or result.get('error')}"]
    lines = [f"eval through main.py --do_eval 1, {result['videos']} videos / {result['captions']} captions, random {result['model']}, "
             f"T={result['frames']}, {result['tflop']:.1f} TFLOP:"]
    for source, run in result["runs"].items():
        lines.append(f"  {source:<11} " + (run["error"][:200] if "error" in run else (
            f"{run['wall_seconds']:8.1f} s  floor {run['floor_seconds']:.1f} s at the matmul limit "
            f"{run['matmul_gflop_per_s']:.0f} GFLOP/s (spread {run['matmul_spread']:.0%}), efficiency "
            f"{efficiency_cell(run)}  (t2v R@1 {run['t2v_R@1']:.1f})")))
    for key in ("features_videos_vs_raw_cache", "features_jpeg_cache_vs_raw_cache"):
        if key in result:
            lines.append(f"  {key}: min cosine {result[key]['min_cosine']:.6f}, mean {result[key]['mean_cosine']:.6f}")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=1000, help="videos (= captions) in the evaluation")
    parser.add_argument("--model", default="B/32", choices=sorted(MODEL_PRESETS), help="backbone shape (random weights)")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma list of " + ",".join(SOURCES))
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_eval", help="kept and reused between runs")
    parser.add_argument("--workers", type=int, default=2, help="processes generating videos and building caches")
    args = parser.parse_args(argv)
    cfg = EvalBenchConfig(GalleryConfig(videos=args.videos), args.model, sources=tuple(args.sources.split(",")))
    result = run_section(cfg, args.workdir, args.workers)
    print("\n".join(format_rows(result)))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main))
