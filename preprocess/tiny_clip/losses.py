"""The two contrastive terms of the tiny-CLIP pretraining: stills against captions, and caption rewordings."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.clip import CLIP
from preprocess.tiny_clip.recipe import MAX_LOGIT_SCALE


def _symmetric_infonce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target.t())) / 2


def contrastive_loss(model: CLIP, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch with CLIP's learnable temperature (capped at 100)."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(ids), dim=-1)
    logits = model.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * img @ txt.t()
    return _symmetric_infonce(logits, torch.eye(len(ids)))


def paraphrase_loss(model: CLIP, first: torch.Tensor, second: torch.Tensor, keys: list[tuple]) -> torch.Tensor:
    """Symmetric InfoNCE between two wordings of the same clips; clips with equal attributes share the target."""
    a = F.normalize(model.encode_text(first), dim=-1)
    b = F.normalize(model.encode_text(second), dim=-1)
    logits = model.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * a @ b.t()
    index: dict[tuple, int] = {}
    codes = torch.tensor([index.setdefault(key, len(index)) for key in keys])
    same = (codes[:, None] == codes[None, :]).float()
    return _symmetric_infonce(logits, same / same.sum(dim=1, keepdim=True))
