"""The timed sections of one configuration: a training step (the trainer's own), video and text encoding, and
for DGL-BLIP the ITM re-rank stage.

Each fills ``result["sections"][name]`` with :func:`apps.bench.timing.section_stats` rows. The training step is
``utils.step.TrainStep`` with the trainer's optimiser groups and objective; ``train_step_naive`` runs the same
step with the block-masked reference video encoder as its forward. DGL-BLIP's step is the recipe's: ITC with the
teacher at alpha 0.4 against a full queue (random features), ITM on hard negatives, the EMA update.
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
from models.blip.losses import BlipLossConfig
from models.blip.objective import DGLBlipObjective
from models.dgl import DGL
from models.losses import create_loss
from models.prompts import Prompts
from utils.itm_rerank import blip_pair_scorer, rerank_rows
from utils.optim import build_optimizer, model_param_groups
from utils.step import TrainStep, autocast_context, forward_module

# Optimiser settings of the timed step (the official recipe's AdamW; the values do not change the cost).
LR, COEF_LR, WEIGHT_DECAY = 1e-4, 1e-3, 0.2
RERANK_GALLERY = 1000  # texts = videos of the re-ranked stage (MSR-VTT 1k-A)


def deviation(test: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """How far autocast features lie from fp32 ones."""
    test, ref = test.float(), ref.float()
    diff = (test - ref).abs().max()
    return {"max_abs": float(diff), "max_abs_rel": float(diff / ref.abs().max().clamp_min(1e-12)),
            "min_cosine": float(F.cosine_similarity(test, ref, dim=-1).min())}


def blip_objective(model: nn.Module) -> DGLBlipObjective:
    """The recipe's objective with its queue full of random unit features, as in every step after the first
    57,600 pairs; ``[ENC]`` is the last id of BLIP's vocabulary."""
    device = next(model.parameters()).device
    objective = DGLBlipObjective(model.net, BlipLossConfig(), model.clip.config.vocab_size - 1,
                                 torch.Generator(device).manual_seed(0))
    size, dim = objective.queue.size, objective.queue.text.shape[1]
    features = F.normalize(torch.randn(size, dim, generator=torch.Generator().manual_seed(0)), dim=-1).to(device)
    objective.queue.enqueue(features, features, torch.arange(size, device=device) + 10**9)  # no batch's video ids
    return objective


def trainer_step(model: DGL, precision: str, device: torch.device, net: nn.Module | None = None,
                 compile: bool = False) -> TrainStep:
    """The trainer's step (optimiser groups, loss or objective, clipping at 1.0) with ``net`` as its forward."""
    loss = create_loss() if model.objective == "contrastive" else blip_objective(model)
    net = torch.compile(forward_module(model, loss)) if compile else net
    groups = model_param_groups(model, LR, COEF_LR, WEIGHT_DECAY)
    return TrainStep(model, loss, build_optimizer(groups, LR), precision, device, net=net)


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
    inputs = [ids, b.videos(spec.batch_size)]
    if model.objective != "contrastive":  # mask, distinct video ids, a step after the first epoch (alpha's ramp)
        inputs += [(ids != 0).long(), torch.arange(spec.batch_size, device=b.device), (1, 0, 1)]
    result["train_flops"] = flops = b.counts.train(spec.batch_size, ids)
    nets = {"train_step": None}
    if spec.naive and isinstance(model, DGL):
        nets["train_step_naive"] = NaiveNet(model)
    for name, net in nets.items():
        model.train()
        step = partial(trainer_step(model, spec.precision, b.device, net, spec.compile and net is None), *inputs)
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
    if b.spec.amp != "none" and reference is not None:
        stats["amp_deviation"] = deviation(timed(), reference())
    return stats


def video_section(b: Bench, result: dict[str, Any], prompts: Prompts, ref_prompts: Prompts) -> None:
    """``encode_video`` (and ``encode_video_naive``): evaluation encoding of a batch of random videos."""
    model, batch = b.model, b.spec.eval_video_batch
    video = b.videos(batch)
    flops = b.counts.video(batch)
    encode = torch.compile(model.encode_video) if b.spec.compile else model.encode_video
    encoders = {"encode_video": encode}
    if b.spec.naive and isinstance(model, DGL):
        encoders["encode_video_naive"] = lambda v, p: naive_encode_video(model, v, p)
    for name, enc in encoders.items():
        result["sections"][name] = _eval_stats(b, lambda: enc(video, prompts), lambda: enc(video, ref_prompts),
                                               batch, flops)


def text_section(b: Bench, result: dict[str, Any], prompts: Prompts, ref_prompts: Prompts) -> None:
    """``encode_text``: evaluation encoding of a batch of random captions."""
    model, batch = b.model, b.spec.eval_text_batch
    ids = random_captions(batch, model.clip.config.vocab_size, seed=b.spec.seed + 1).to(b.device)
    flops = b.counts.text(batch, ids)
    encode = torch.compile(model.encode_text) if b.spec.compile else model.encode_text
    result["sections"]["encode_text"] = _eval_stats(b, lambda: encode(ids, prompts),
                                                    lambda: model.encode_text(ids, ref_prompts), batch, flops)


def rerank_section(b: Bench, result: dict[str, Any]) -> None:
    """``itm_rerank_k{K}`` (DGL-BLIP): ITM re-ranking of the top K both ways on 1,000 x 1,000. Every pair costs the
    same, so one text query is timed as the evaluation runs it (utils/itm_rerank.py: one ITM call of K pairs, on a
    pool of 8 random videos' tokens) and ``stage`` holds the whole stage's exact FLOPs and its time scaled by pairs."""
    model, cfg, n = b.model, b.model.clip.config, RERANK_GALLERY
    ids = random_captions(1, cfg.vocab_size, seed=b.spec.seed + 2).to(b.device)
    pool = torch.randn(8, b.counts.video_tokens, cfg.vision_width, generator=b.generator).to(b.device)
    score = blip_pair_scorer(model.itm_logits, ids, (ids != 0).long(), pool)
    for k in b.spec.rerank_k:
        sim, k = torch.rand(1, n, generator=b.generator).to(b.device), min(k, n)
        run = lambda: rerank_rows(sim, torch.zeros(1, dtype=torch.long), k, lambda t, v: score(t, v % 8), True, 1)  # noqa: E731
        stats = _eval_stats(b, run, None, k, b.counts.itm(k, ids.shape[1]))
        stage = b.counts.rerank(n, n, k, ids.shape[1])
        stats["stage"] = {"texts": n, "videos": n, "k": k, "pairs": 2 * n * k, "tflop": stage / 1e12,
                          "scaled_from_sample_s": stats["median_s"] * 2 * n, "floor_s": stage / stats["matmul_gflop_per_s"] / 1e9}
        result["sections"][f"itm_rerank_k{k}"] = stats
