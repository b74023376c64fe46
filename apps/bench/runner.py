"""One configuration end to end (:func:`run_config`), in this process or in a fresh worker interpreter.

A fresh interpreter per configuration keeps each memory high-water mark its own.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from apps.bench.inputs import build_model
from apps.bench.sections import rerank_section, text_section, train_section, video_section
from apps.bench.spec import Bench, RunSpec
from models.step_flops import model_flops
from utils.step import autocast_context

ROOT = Path(__file__).resolve().parents[2]


def _build(spec: RunSpec) -> tuple[Bench, dict[str, Any]]:
    """The model on its device, and the result's header (sizes, build time)."""
    torch.manual_seed(spec.seed)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    t0 = time.perf_counter()
    model = build_model(spec.model, spec.variant, spec.frames, spec.seed).to(spec.device)
    model.set_grad_checkpointing(spec.grad_checkpointing)
    gc.collect()
    bench = Bench(spec, model, model_flops(model, spec.frames))
    result: dict[str, Any] = {
        "model": spec.model, "variant": spec.variant, "grad_checkpointing": spec.grad_checkpointing,
        "compile": spec.compile, "amp": spec.amp, "frames": spec.frames, "threads": torch.get_num_threads(),
        "build_s": time.perf_counter() - t0, "video_tokens": bench.counts.video_tokens,
        "trainable_params": sum(p.numel() for p in model.trainable_parameters().values()), "sections": {},
        "matmul_shape": list(bench.gemm),
    }
    return bench, result


def run_config(spec: RunSpec) -> dict[str, Any]:
    """Measure one (model, latent space, checkpointing) configuration; returns a JSON-able dict."""
    bench, result = _build(spec)
    if "train" in spec.sections:
        train_section(bench, result)
    bench.model.eval()
    with torch.inference_mode():  # prompts do not depend on the input: computed once, outside the timing
        with autocast_context(spec.precision, bench.device):
            prompts = bench.model.prompts()
        ref_prompts = bench.model.prompts() if spec.amp != "none" else prompts
        if "video" in spec.sections:
            video_section(bench, result, prompts, ref_prompts)
        if "text" in spec.sections:
            text_section(bench, result, prompts, ref_prompts)
        if "rerank" in spec.sections and hasattr(bench.model, "itm_logits"):
            rerank_section(bench, result)
    result["matmul_gflop_per_s_samples"] = [x / 1e9 for x in bench.limits.all_samples]
    return result


def run_isolated(spec: RunSpec) -> dict[str, Any]:
    """One configuration in a fresh interpreter (``python -m apps.bench --_worker``)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if spec.device == "cpu":
            # Big buffers mmapped (returned on free) from the start: no freed heap from loading stays resident in the
            # memory measurement; the worker raises the thresholds to glibc's steady state before timing (memory.py).
            env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
            env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
        proc = subprocess.run([sys.executable, "-m", "apps.bench", "--_worker", str(spec_path), str(out_path)],
                              cwd=ROOT, env=env)
        if proc.returncode != 0 or not out_path.is_file():
            return {"model": spec.model, "variant": spec.variant, "grad_checkpointing": spec.grad_checkpointing,
                    "error": f"worker exited with status {proc.returncode}", "sections": {}}
        return json.loads(out_path.read_text())


def worker(spec_path: str, out_path: str) -> None:
    """The worker side of :func:`run_isolated`."""
    spec = RunSpec(**json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(run_config(spec)))
