"""The training objective of each model, by the name the model gives (``model.objective``).

``contrastive`` (DGL): a features loss of models/losses.py's ``LOSSES`` (``--loss``), which the trainer's step
applies to the encoders' features (gradient caching works for it). ``blip_itc_itm`` (DGL-BLIP): BLIP's ITC with
momentum distillation and a queue plus ITM on hard negatives, a ``BatchObjective`` that runs the forward itself.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .backbones import get_tokenizer
from .blip.losses import BlipLossConfig
from .blip.objective import DGLBlipObjective
from .losses import create_loss


@dataclass(frozen=True)
class ObjectiveSettings:
    loss: str = "infonce"  # --loss (contrastive)
    blip: BlipLossConfig = BlipLossConfig()  # --alpha, --momentum, --queue_size, --itm_weight (blip_itc_itm)
    seed: int = 0  # of this rank's sampling (ITM's hard negatives): the run's seed plus the rank


def _contrastive(model: nn.Module, settings: ObjectiveSettings) -> nn.Module:
    return create_loss(settings.loss)


def _blip_itc_itm(model: nn.Module, settings: ObjectiveSettings) -> DGLBlipObjective:
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    enc_id = get_tokenizer("blip", model.clip).enc_id
    return DGLBlipObjective(model.net, settings.blip, enc_id, generator)


OBJECTIVES: dict[str, Callable[[nn.Module, ObjectiveSettings], nn.Module]] = {
    "contrastive": _contrastive,
    "blip_itc_itm": _blip_itc_itm,
}


def create_objective(model: nn.Module, settings: ObjectiveSettings) -> nn.Module:
    """``model``'s objective (``OBJECTIVES[model.objective]``) with the run's settings."""
    return OBJECTIVES[model.objective](model, settings)
