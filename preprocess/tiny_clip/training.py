"""The tiny-CLIP training loop: AdamW plus SparseAdam for the token table, warmup then cosine decay."""
from __future__ import annotations

import math

import numpy as np
import torch
from utils.progress import progress as progress_bar

from models.clip import CLIP
from preprocess.tiny_clip.data import CaptionTokens, MotionCaptions, StillBatches, words_of
from preprocess.tiny_clip.losses import contrastive_loss, paraphrase_loss
from preprocess.tiny_clip.recipe import MAX_LOGIT_SCALE, Recipe


class _Optimizers:
    """AdamW (CLIP's betas) for everything but the token table, which gets sparse gradients and SparseAdam.

    The table has 49,408 rows of which the stills use about a hundred; dense gradients and AdamW over the
    whole table would dominate the step time. Rows never used get no update either way (Adam's moments
    stay zero and the table is not weight-decayed). Weight decay only on weight matrices, not on gains,
    biases, embeddings or the temperature.
    """

    NO_DECAY = {"positional_embedding", "visual.positional_embedding", "visual.class_embedding", "logit_scale"}

    def __init__(self, model: CLIP, recipe: Recipe):
        model.token_embedding.sparse = True
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if name != "token_embedding.weight":
                (no_decay if param.ndim < 2 or name in self.NO_DECAY else decay).append(param)
        groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        kwargs = {"lr": recipe.lr, "betas": (0.9, 0.98), "eps": 1e-6}
        self.dense = torch.optim.AdamW(groups, **kwargs)
        self.sparse = torch.optim.SparseAdam([model.token_embedding.weight], **kwargs)
        factor = _schedule(recipe)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (self.dense, self.sparse)]

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)
        self.sparse.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()
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


def train(recipe: Recipe, progress: bool = True) -> tuple[CLIP, list[float], dict[str, set[str]]]:
    """-> (trained model in eval mode, per-step losses, caption words seen {"with_images", "text_only"})."""
    recipe.validate()
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng([recipe.seed, 1])
    data = StillBatches(recipe)
    captions = MotionCaptions(CaptionTokens(recipe.context))
    caption_rng = np.random.default_rng([recipe.seed, 3])
    model = CLIP(recipe.clip_config())
    model.train()
    optimizer = _Optimizers(model, recipe)
    losses: list[float] = []
    bar = progress_bar(range(recipe.steps), desc="pretrain tiny CLIP", enabled=progress, dynamic_ncols=True)
    for _ in bar:
        images, ids, _ = data.sample(recipe.batch_size, rng)
        loss = contrastive_loss(model, images, ids)
        if recipe.caption_batch:
            loss = loss + paraphrase_loss(model, *captions.sample(recipe.caption_batch, caption_rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}", refresh=False)
    model.token_embedding.sparse = False
    model.eval()
    with_images = words_of(data.tokens.seen)
    return model, losses, {"with_images": with_images, "text_only": words_of(captions.tokens.seen) - with_images}
