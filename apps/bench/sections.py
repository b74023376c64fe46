"""The timed sections of one configuration: a training step (the trainer's own), video and text encoding.

Each fills ``result["sections"][name]`` with :func:`apps.bench.timing.section_stats` rows. The training step is
``utils.step.TrainStep`` with the trainer's optimiser groups and loss; ``train_step_naive`` runs the same step
with the block-masked reference video encoder as its forward.
"""
from __future__ import annotations

import gc
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from apps.bench.inputs import random_captions
from apps.bench.memory import PeakMemory
from apps.bench.naive import NaiveNet, naive_encode_video
from apps.bench.spec import Bench
from apps.bench.timing import profile_table, section_stats, time_fn
from models.dgl import DGL
from models.backbones import get_backbone
from models.flops import kept_words
from models.step_flops import train_step_flops
from models.losses import create_loss
from models.prompts import Prompts
from utils.optim import build_optimizer, param_groups
from utils.step import TrainStep, autocast_context

# Optimiser settings of the timed step (the official recipe's AdamW; the values do not change the cost).
LR, COEF_LR, WEIGHT_DECAY = 1e-4, 1e-3, 0.2


def deviation(test: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """How far autocast features lie from fp32 ones."""
    test, ref = test.float(), ref.float()
    return {
        "max_abs": float((test - ref).abs().max()),
        "max_abs_rel": float((test - ref).abs().max() / ref.abs().max().clamp_min(1e-12)),
        "min_cosine": float(F.cosine_similarity(test, ref, dim=-1).min()),
    }


def trainer_step(model: DGL, precision: str, device: torch.device, net: nn.Module | None = None) -> TrainStep:
    """The trainer's step (optimiser groups, loss, clipping at 1.0) with ``net`` as its forward."""
    groups = param_groups(model, LR, COEF_LR, WEIGHT_DECAY)
    return TrainStep(model, create_loss(), build_optimizer(groups, LR), precision, device, net=net)


def _measure_train(b: Bench, step, flops: int, limit: float) -> dict[str, Any]:
    """Peak memory over the warm-up steps (at least one; the first also creates the AdamW state), then timing."""
    memory = PeakMemory(b.device, isolated=b.spec.isolated)
    memory.start()
    time_fn(step, b.device, max(b.spec.warmup, 1), 0)
    peak, base = memory.peak_increase()
    memory.stop()
    stats = section_stats(time_fn(step, b.device, 0, b.spec.repeats), b.spec.batch_size, flops, limit)
    stats.update(peak_mem_mb=peak, loaded_mem_mb=base, peak_mem_method=memory.method)
    b.finish(stats)
    return stats


def train_section(b: Bench, result: dict[str, Any]) -> None:
    """``train_step`` (and ``train_step_naive`` with --naive): one optimiser step on B random pairs."""
    model, spec = b.model, b.spec
    ids = random_captions(spec.batch_size, model.clip.config.vocab_size, seed=spec.seed).to(b.device)
    video = b.videos(spec.batch_size)
    flops = train_step_flops(b.shapes, spec.batch_size, kept_words(ids))
    result["train_flops"] = flops
    nets = {"train_step": torch.compile(model) if spec.compile else None}
    if spec.naive:
        nets["train_step_naive"] = NaiveNet(model)
    for name, net in nets.items():
        model.train()
        step = partial(trainer_step(model, spec.precision, b.device, net), ids, video)
        result["sections"][name] = _measure_train(b, step, flops["total"], b.limit_now())
        if name == "train_step" and spec.profile:
            result["profile"] = profile_table(step, b.device, spec.profile)
        del step  # frees the AdamW state before the next row
        model.zero_grad(set_to_none=True)
        gc.collect()


def _eval_stats(b: Bench, run, reference, items: int, flops: int) -> dict[str, Any]:
    """Timing of ``run`` under autocast, and its deviation from the fp32 ``reference`` when autocast is on."""
    def timed() -> torch.Tensor:
        with autocast_context(b.spec.precision, b.device):
            return run()

    limit = b.limit_now()
    stats = section_stats(time_fn(timed, b.device, b.spec.warmup, b.spec.repeats), items, flops, limit)
    b.finish(stats)
    if b.spec.amp != "none":
        stats["amp_deviation"] = deviation(timed(), reference())
    return stats


def video_section(b: Bench, result: dict[str, Any], prompts: Prompts, ref_prompts: Prompts) -> None:
    """``encode_video`` (and ``encode_video_naive``): evaluation encoding of a batch of random videos."""
    model, batch = b.model, b.spec.eval_video_batch
    video = b.videos(batch)
    flops = get_backbone(b.shapes.backbone).video_flops(b.shapes, batch)[0]
    encode = torch.compile(model.encode_video) if b.spec.compile else model.encode_video
    encoders = {"encode_video": encode}
    if b.spec.naive:
        encoders["encode_video_naive"] = lambda v, p: naive_encode_video(model, v, p)
    for name, enc in encoders.items():
        result["sections"][name] = _eval_stats(b, lambda: enc(video, prompts), lambda: enc(video, ref_prompts),
                                               batch, flops)


def text_section(b: Bench, result: dict[str, Any], prompts: Prompts, ref_prompts: Prompts) -> None:
    """``encode_text``: evaluation encoding of a batch of random captions."""
    model, batch = b.model, b.spec.eval_text_batch
    ids = random_captions(batch, model.clip.config.vocab_size, seed=b.spec.seed + 1).to(b.device)
    flops = get_backbone(b.shapes.backbone).text_flops(b.shapes, batch, kept_words(ids))[0]
    encode = torch.compile(model.encode_text) if b.spec.compile else model.encode_text
    stats = _eval_stats(b, lambda: encode(ids, prompts), lambda: model.encode_text(ids, ref_prompts), batch, flops)
    result["sections"]["encode_text"] = stats
