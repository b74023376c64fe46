"""Training losses on features, by name (``create_loss``), each gathering the global batch itself.

A loss takes this rank's ``[N, E]`` text and video features and CLIP's logit scale and returns one scalar:
the loss of the *global* batch (every rank computes the same value). Losses see features only, so the
trainer's gradient caching (chunked encoding) works for any of them. Adding one: a class here (or in its
own module) and a line in ``LOSSES``; tests/test_losses.py runs over the registry.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate the ``[B, ...]`` tensors of all ranks into ``[world·B, ...]`` in rank order.

    This rank's slice is ``x`` itself and keeps its autograd graph; the other slices are constants. If every
    rank computes the same global loss and DDP averages the gradients, the result is the gradient of that loss
    divided by the world size (spec §1.8). All ranks must pass the same shape; one process returns ``x``.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def replicated(param: Tensor, world_size: int) -> Tensor:
    """``param`` in value (exactly), its gradient divided by ``world_size``: for a parameter every rank uses in
    the same computation on the gathered batch, so that DDP's average of the world-size-scaled loss gives its
    gradient once, not ``world_size`` times."""
    if world_size == 1:
        return param
    frozen = param.detach()
    return frozen + (param - frozen) / world_size


def cosine_logits(logit_scale: Tensor, text_features: Tensor, video_features: Tensor) -> Tensor:
    """CLIP's temperature times the cosine similarity, in fp32: ``[N_text, N_video]``."""
    text_features = F.normalize(text_features.float(), dim=-1)
    video_features = F.normalize(video_features.float(), dim=-1)
    return logit_scale.float().exp() * text_features @ video_features.t()


def contrastive_loss(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE over a square [texts, videos] logit matrix whose diagonal holds the positives."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class SymmetricInfoNCE(nn.Module):
    """DGL's loss (as CLIP4Clip's): symmetric InfoNCE over the all-gathered batch at CLIP's frozen temperature."""

    def forward(self, text: Tensor, video: Tensor, logit_scale: Tensor) -> Tensor:
        return contrastive_loss(cosine_logits(logit_scale, gather_with_grad(text), gather_with_grad(video)))


class BatchObjective(nn.Module):
    """A training objective that runs the whole forward itself (a model whose loss needs more than features:
    video ids, video tokens, momentum copies; e.g. models/blip/objective.py). Called with a batch
    ``(input_ids, attention_mask, video, video_ids, **schedule(...))``, it returns ``{"loss": for logging,
    "backward": what to back-propagate unscaled, ...}``. State it keeps between steps beside the model goes into
    checkpoints: ``training_state`` (the same on every rank) and ``rank_state`` (this rank's, e.g. a sampling
    generator)."""

    def schedule(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> dict:
        """Keyword arguments of the forward that depend on the position in training (e.g. a warm-up)."""
        return {}

    def training_state(self) -> dict:
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state`."""

    def rank_state(self) -> dict:
        return {}

    def load_rank_state(self, state: dict) -> None:
        """Restore :meth:`rank_state`."""


LOSSES: dict[str, Callable[[], nn.Module]] = {"infonce": SymmetricInfoNCE}


def create_loss(name: str = "infonce") -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered: {sorted(LOSSES)}")
    return LOSSES[name]()
