"""BLIP's retrieval losses for DGL-BLIP: ITC with the clamped learned temperature, ALBEF momentum distillation
with a feature queue, and ITM on hard negatives mined from the gathered batch.

The terms need more than ``models.losses``' interface (``loss(text, video, logit_scale)``): video ids (a video
has several captions, all positives), momentum features and a queue, and for ITM the video tokens and the
multimodal pass; nor do they share one interface among themselves. So they are not registered there, and no
name table stands here either: ``DGLBlipObjective`` (models/blip/objective.py) is the one door, and
``BlipLossConfig``'s weights (``alpha``, ``queue_size``, ``itm_weight``) choose the terms.

Conventions follow models/losses.py: each rank computes the loss of the *global* batch for ITC (features
gathered with ``gather_with_grad``); ITM is each rank's own mean over its ``3·B`` pairs, negatives drawn
from the whole gathered batch (BLIP's ``negative_all_rank``).

References: salesforce/BLIP ``models/blip_retrieval.py`` (temperature clamp, EMA, queue, hard negatives,
ITM labels) and its video port LiuRicky/video_language_model ``models/blip_video_retrieval.py`` (targets by
id over batch and queue, which BLIP's image code computes and then overwrites with the diagonal).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import gather_with_grad

TEMPERATURE_RANGE = (0.001, 0.5)  # BLIP clamps ``temp`` to this before every forward


@dataclass(frozen=True)
class BlipLossConfig:
    """The recipe's loss settings (tokenmix MSR-VTT: alpha 0.4, queue 57600, momentum 0.995, ITM weight 1)."""

    alpha: float = 0.4  # weight of the momentum teacher's soft targets in ITC (ALBEF's distillation)
    momentum: float = 0.995  # EMA factor of the momentum encoder
    queue_size: int = 57600  # momentum features kept as extra ITC keys; 0: none
    itm_weight: float = 1.0  # total = ITC + itm_weight * ITM; 0 skips ITM

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"--momentum must lie in [0, 1], got {self.momentum}")
        if self.queue_size < 0 or self.itm_weight < 0:
            raise ValueError(f"--queue_size and --itm_weight must be >= 0, got {self.queue_size}, {self.itm_weight}")

    @property
    def needs_momentum_encoder(self) -> bool:
        return self.alpha > 0 or self.queue_size > 0


class _GatherSummedGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_summed_grad(x: Tensor) -> Tensor:
    """All ranks' ``[B, ...]`` tensors in rank order, every slice differentiable: each rank's gradient with
    respect to its own slice is the sum over ranks (BLIP's ``all_gather_with_grad``). For a loss that differs
    per rank (ITM on this rank's pairs, negatives from anywhere): after DDP's average, the gradient of the
    mean over ranks. ``models.losses.gather_with_grad`` instead keeps other slices constant, right for a loss
    every rank computes whole (ITC). Every rank must run the backward. One process: ``x``."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return _GatherSummedGrad.apply(x)


def clamp_temperature_(temp: Tensor) -> Tensor:
    """BLIP's in-place clamp of the learned temperature to [0.001, 0.5] (the parameter itself, so it keeps
    training; a functional clamp would zero its gradient outside the range)."""
    with torch.no_grad():
        temp.clamp_(*TEMPERATURE_RANGE)
    return temp


def id_targets(query_ids: Tensor, key_ids: Tensor) -> Tensor:
    """``[n, m]`` targets: uniform over the keys that show the query's video (every caption of it)."""
    positive = (query_ids[:, None] == key_ids[None]).float()
    return positive / positive.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


class FeatureQueue(nn.Module):
    """A ring buffer of momentum text and video features and their video ids (ALBEF/BLIP's ITC queue).

    Only written entries take part (``filled``): the queue starts empty, where BLIP's starts with random
    vectors under id -100 that act as negatives until overwritten. The global batch is written at ``ptr``
    and wraps around, so ``size`` need not be a multiple of the batch (BLIP asserts it is).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("text", torch.zeros(size, dim))
        self.register_buffer("video", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        # A host copy of ``filled`` so that a step never waits on the device to read it; reread after loading.
        self._filled: int | None = 0
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_filled", None))

    def entries(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._filled is None:
            self._filled = int(self.filled)
        n = self._filled
        return self.text[:n], self.video[:n], self.ids[:n]

    @torch.no_grad()
    def enqueue(self, text: Tensor, video: Tensor, ids: Tensor) -> None:
        """Write a (gathered) batch; the oldest entries go first."""
        n = len(ids)
        if self.size == 0:
            return
        if n > self.size:
            raise ValueError(f"--queue_size {self.size} is smaller than the global batch ({n}): give a queue "
                             "of at least one global batch, or 0 for none")
        filled = len(self.entries()[2])
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.text[slots], self.video[slots], self.ids[slots] = text.to(self.text.dtype), video.to(self.video.dtype), ids
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))
        self._filled = min(filled + n, self.size)


class MomentumEncoder(nn.Module):
    """An EMA copy of the trained encoders: ``p_m <- momentum · p_m + (1 - momentum) · p`` (BLIP's update),
    over the parameters that train in ``online`` when the copy is made (frozen ones stay equal, bit for bit)."""

    def __init__(self, online: nn.Module, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.model = copy.deepcopy(online).requires_grad_(False)
        self.names = [name for name, p in online.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        mine, theirs = dict(self.model.named_parameters()), dict(online.named_parameters())
        ema, live = [mine[n] for n in self.names], [theirs[n].detach() for n in self.names]
        torch._foreach_mul_(ema, self.momentum)
        torch._foreach_add_(ema, live, alpha=1.0 - self.momentum)


def itc_loss(text: Tensor, video: Tensor, temp: Tensor, video_ids: Tensor,
             keys: tuple[Tensor, Tensor] | None = None, queue: FeatureQueue | None = None,
             alpha: float = 0.0) -> Tensor:
    """Symmetric InfoNCE of the global batch over BLIP's temperature, positives by video id.

    ``text``, ``video``: this rank's normalised ``[B, E]`` online features (gathered here with their graph);
    ``video_ids``: ``[B]``. ``keys``: the momentum encoder's ``(text, video)`` features of the same batch; the
    other side of each similarity is then the gathered momentum features plus the ``queue`` (no gradient),
    and ``alpha`` mixes the momentum teacher's softmax into the targets (ALBEF). Without ``keys`` the online
    features are the keys (the plain ITC; no queue, no teacher).
    """
    text_q, video_q = gather_with_grad(text).float(), gather_with_grad(video).float()
    ids = gather_with_grad(video_ids)
    if keys is None:
        if alpha or (queue is not None and queue.size):
            raise ValueError("momentum distillation (--alpha > 0) and the queue need the momentum encoder's "
                             "features as keys")
        text_k, video_k, key_ids = text_q, video_q, ids
    else:
        with torch.no_grad():
            text_k, video_k = (gather_with_grad(k).float() for k in keys)
            key_ids = ids
            if queue is not None:
                queued_text, queued_video, queued_ids = queue.entries()
                text_k, video_k = torch.cat([text_k, queued_text]), torch.cat([video_k, queued_video])
                key_ids = torch.cat([ids, queued_ids])
    targets = id_targets(ids, key_ids)
    t2v_targets = v2t_targets = targets
    if alpha:
        with torch.no_grad():
            t2v_targets = alpha * F.softmax(text_k[: len(ids)] @ video_k.t() / temp, dim=1) + (1 - alpha) * targets
            v2t_targets = alpha * F.softmax(video_k[: len(ids)] @ text_k.t() / temp, dim=1) + (1 - alpha) * targets
    t2v = soft_cross_entropy(text_q @ video_k.t() / temp, t2v_targets)
    v2t = soft_cross_entropy(video_q @ text_k.t() / temp, v2t_targets)
    return (t2v + v2t) / 2


def sample_hard_negatives(logits: Tensor, query_ids: Tensor, key_ids: Tensor,
                          generator: torch.Generator | None = None) -> Tensor:
    """One negative key per query, drawn with probability ``softmax(logits)`` over the keys that show another
    video (BLIP's ITM mining: softmax, positives zeroed, ``multinomial``). The softmax runs over the
    negatives alone, the same distribution without BLIP's underflow to an all-zero row at small temperatures."""
    positive = query_ids[:, None] == key_ids[None]
    lonely = positive.all(dim=1)
    if lonely.any():
        raise ValueError(f"ITM has no negative for video id {int(query_ids[lonely][0])}: every pair of the "
                         "gathered batch shows it; sample batches of distinct videos, or set --itm_weight 0")
    weights = F.softmax(logits.float().masked_fill(positive, float("-inf")), dim=1)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_loss(itm_logits: Callable[[Tensor, Tensor, Tensor], Tensor], ids: Tensor, mask: Tensor, tokens: Tensor,
             negative_tokens: Tensor, negative_ids: Tensor, negative_mask: Tensor) -> Tensor:
    """BLIP's ITM: cross-entropy over (match, no match) of B positive pairs, B (text, hard negative video) and
    B (hard negative text, video) pairs, in one multimodal pass. ``ids`` are ``[ENC]``-led."""
    batch = len(ids)
    logits = itm_logits(torch.cat([ids, ids, negative_ids]), torch.cat([mask, mask, negative_mask]),
                        torch.cat([tokens, negative_tokens, tokens]))
    labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
    return F.cross_entropy(logits.float(), labels)


def check_gradient_caching(accumulation_steps: int, itm_weight: float) -> None:
    """Gradient caching (``DGLBlipObjective.cached_itc``: features without a graph, the loss on the whole batch,
    then each chunk re-encoded and back-propagated) is exact for a loss of the features alone: the ITC, with or
    without the momentum keys, queue and teacher (constants of the step). ITM is a loss of the video tokens
    through the multimodal pass, with negatives paired across chunks and ranks; caching it would need the
    tokens' gradients, which is not built. Refused, in one line."""
    if accumulation_steps > 1 and itm_weight > 0:
        raise ValueError(f"--gradient_accumulation_steps {accumulation_steps} (chunked encoding) is exact for the "
                         "ITC only: gradient caching of ITM's multimodal pass on video tokens is not built; set "
                         "--itm_weight 0, or --gradient_accumulation_steps 1")
