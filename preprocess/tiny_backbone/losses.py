"""The two contrastive terms of the tiny-backbone pretraining: stills against captions (models.losses' symmetric
InfoNCE, as DGL trains with), and caption rewordings (soft targets: equal clips are all positives)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import losses
from preprocess.tiny_backbone.recipe import MAX_LOGIT_SCALE


def _scale(model: nn.Module) -> torch.Tensor:
    """The backbone's learnable log scale (CLIP's ``logit_scale``, BLIP's ``-log temp``), capped at log 100."""
    return model.logit_scale.clamp(max=MAX_LOGIT_SCALE)


def contrastive_loss(model: nn.Module, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (image i pairs caption i) with the backbone's learnable temperature."""
    return losses.contrastive_loss(losses.cosine_logits(_scale(model), model.encode_image(images),
                                                        model.encode_text(ids)))


def paraphrase_loss(model: nn.Module, first: torch.Tensor, second: torch.Tensor, keys: list[tuple]) -> torch.Tensor:
    """Symmetric InfoNCE between two wordings of the same clips; clips with equal attributes share the target."""
    logits = losses.cosine_logits(_scale(model), model.encode_text(first), model.encode_text(second))
    index: dict[tuple, int] = {}
    codes = torch.tensor([index.setdefault(key, len(index)) for key in keys])
    same = (codes[:, None] == codes[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target.t())) / 2
