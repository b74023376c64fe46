"""The tiny-backbone training loop: AdamW (plus SparseAdam for a large token table), warmup then cosine decay."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from utils.progress import progress as progress_bar

from models.backbone import DEFAULT_BACKBONE
from preprocess.tiny_backbone.backbones import TinyBackbone, tiny_backbone
from preprocess.tiny_backbone.data import CaptionTokens, MotionCaptions, StillBatches, words_of
from preprocess.tiny_backbone.losses import contrastive_loss, paraphrase_loss
from preprocess.tiny_backbone.recipe import Recipe


class _Optimizers:
    """AdamW (CLIP's betas) for everything but a large token table, which gets sparse gradients and SparseAdam.

    CLIP's table has 49,408 rows of which the stills use about a hundred; dense gradients and AdamW over the
    whole table would dominate the step time. Rows never used get no update either way (Adam's moments
    stay zero and the table is not weight-decayed). Weight decay only on weight matrices, not on gains,
    biases, embeddings or the temperature.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, entry: TinyBackbone):
        table = entry.sparse_table(model)
        if table is not None:
            table.sparse = True
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if table is None or param is not table.weight:
                (no_decay if param.ndim < 2 or name in entry.no_decay else decay).append(param)
        groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        kwargs = {"lr": recipe.lr, "betas": (0.9, 0.98), "eps": 1e-6}
        self.optimizers = [torch.optim.AdamW(groups, **kwargs)]
        if table is not None:
            self.optimizers.append(torch.optim.SparseAdam([table.weight], **kwargs))
        factor = _schedule(recipe)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in self.optimizers]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()


def _schedule(recipe: Recipe):
    warmup = max(1, round(recipe.warmup * recipe.steps))

    def factor(step: int) -> float:  # step counts finished optimiser steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train(recipe: Recipe, progress: bool = True,
          backbone: str = DEFAULT_BACKBONE) -> tuple[nn.Module, list[float], dict[str, set[str]]]:
    """-> (trained model in eval mode, per-step losses, caption words seen {"with_images", "text_only"})."""
    recipe.validate()
    entry = tiny_backbone(backbone)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng([recipe.seed, 1])
    data = StillBatches(recipe, backbone)
    captions = MotionCaptions(CaptionTokens(recipe.context, backbone))
    caption_rng = np.random.default_rng([recipe.seed, 3])
    model = entry.build(recipe, data.tokens.tokenizer)
    model.train()
    optimizer = _Optimizers(model, recipe, entry)
    losses: list[float] = []
    bar = progress_bar(range(recipe.steps), desc=f"pretrain tiny {backbone}", enabled=progress, dynamic_ncols=True)
    for _ in bar:
        images, ids, _ = data.sample(recipe.batch_size, rng)
        loss = contrastive_loss(model, images, ids)
        if recipe.caption_batch:
            loss = loss + paraphrase_loss(model, *captions.sample(recipe.caption_batch, caption_rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        entry.clamp_temperature(model)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}", refresh=False)
    table = entry.sparse_table(model)
    if table is not None:
        table.sparse = False
    model.eval()
    with_images = words_of(data.tokens.seen)
    return model, losses, {"with_images": with_images, "text_only": words_of(captions.tokens.seen) - with_images}
