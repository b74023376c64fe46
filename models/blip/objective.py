"""One training forward of DGL-BLIP: ITC (momentum distillation, queue) plus weighted ITM on hard negatives.

``DGLBlipObjective`` holds the trained model, its momentum copy and the queue, so that a DDP wrapper around it
runs every trained parameter inside its forward (ITM included) and checkpoints carry the copy and the queue.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ..losses import BatchObjective, gather_with_grad, replicated
from .dgl_video import DGLBlip
from .formats import BlipLoadError, momentum_encoders
from .losses import (BlipLossConfig, FeatureQueue, MomentumEncoder, check_gradient_caching, clamp_temperature_,
                     gather_with_summed_grad, itc_loss, itm_loss, sample_hard_negatives)


MOMENTUM_LACKS = {"itm_head.weight", "itm_head.bias", "temp"}  # BLIP's momentum model has no ITM head, no temperature


def alpha_warmup(alpha: float, epoch: int, step: int, steps_per_epoch: int) -> float:
    """BLIP's distillation ramp: ``alpha · min(1, step / steps_per_epoch)`` in the first epoch, ``alpha`` after."""
    return alpha if epoch > 0 else alpha * min(1.0, step / steps_per_epoch)


class DGLBlipObjective(BatchObjective):
    """``generator`` draws the ITM negatives: on the model's device, seeded per rank (e.g. seed + rank) so that
    ranks draw independently; ``enc_id`` is the tokenizer's ``[ENC]`` id, which leads the ids ITM reads.

    The momentum copy starts as the model, except that in ``full`` training the momentum encoders of an original
    BLIP file (``model.blip.momentum_state``) replace its BLIP weights, as they do in tokenmix, which loads the
    whole COCO file. With a frozen backbone they do not: the EMA moves only what trains, so they would never
    reach the backbone. The file's state moves out of the model either way (its queue is not used: its ids
    are COCO image ids).
    """

    def __init__(self, model: DGLBlip, config: BlipLossConfig, enc_id: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.model, self.config, self.enc_id, self.generator = model, config, enc_id, generator
        file_momentum, model.blip.momentum_state = model.blip.momentum_state, {}
        self.momentum = MomentumEncoder(model, config.momentum) if config.needs_momentum_encoder else None
        if self.momentum is not None and model.config.training_mode == "full" and file_momentum:
            result = self.momentum.model.blip.load_state_dict(
                momentum_encoders(file_momentum, "the BLIP file's momentum encoders"), strict=False)
            if result.unexpected_keys or set(result.missing_keys) != MOMENTUM_LACKS:
                raise BlipLoadError(f"the BLIP file's momentum encoders do not cover the model: missing "
                                    f"{sorted(set(result.missing_keys) - MOMENTUM_LACKS)[:3]}, unknown "
                                    f"{result.unexpected_keys[:3]}")
        # On the model's device: the trainer and the benchmark build the objective around a placed model.
        self.queue = FeatureQueue(config.queue_size, model.blip.config.embed_dim).to(model.temp.device)

    def schedule(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> dict:
        return {"alpha": alpha_warmup(self.config.alpha, epoch, step_in_epoch, steps_per_epoch)}

    def training_state(self) -> dict:
        """The momentum copy of what trains (the rest equals the model's, bit for bit) and the queue."""
        momentum = {} if self.momentum is None else {
            name: p.detach().cpu().clone() for name, p in self.momentum.model.named_parameters()
            if name in set(self.momentum.names)}
        return {"momentum": momentum, "queue": {k: v.cpu().clone() for k, v in self.queue.state_dict().items()}}

    def load_training_state(self, state: dict) -> None:
        if self.momentum is not None:
            params = dict(self.momentum.model.named_parameters())
            if set(state["momentum"]) != set(self.momentum.names):
                raise ValueError("the checkpoint's momentum encoder covers other tensors than this run trains "
                                 f"({sorted(set(state['momentum']) ^ set(self.momentum.names))[:3]})")
            with torch.no_grad():
                for name, value in state["momentum"].items():
                    params[name].copy_(value)
        self.queue.load_state_dict(state["queue"])

    def rank_state(self) -> dict:
        return {} if self.generator is None else {"itm_generator": self.generator.get_state()}

    def load_rank_state(self, state: dict) -> None:
        if self.generator is not None and "itm_generator" in state:
            self.generator.set_state(state["itm_generator"])

    def forward(self, input_ids: Tensor, attention_mask: Tensor, video: Tensor, video_ids: Tensor | None,
                alpha: float | None = None, chunk: bool = False) -> dict[str, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """``{"itc", "itm" (if weighted), "loss", "backward"}`` of one batch; ``alpha`` overrides the config's
        (warm-up). ``loss`` = ITC of the global batch + weight · this rank's ITM, for logging. ``backward`` is what
        to back-propagate, without further scaling: ``world · ITC + weight · ITM``, whose gradient after DDP's
        average is that of the global ITC plus the weighted mean over ranks of ITM (models/losses.py's
        convention for the ITC, BLIP's for ITM). Updates the momentum copy before, and the queue after, the
        ITC (BLIP's order).

        ``chunk``: gradient caching's second pass (:meth:`cached_itc`) instead: one chunk's text and video
        features with their graph, and the temperature as the loss's gradient reaches it (``replicated``)."""
        cfg, model = self.config, self.model
        world = dist.get_world_size() if dist.is_initialized() else 1
        if chunk:
            return (model.encode_text(input_ids, attention_mask), model.encode_video(video),
                    replicated(model.temp, world))
        alpha = cfg.alpha if alpha is None else alpha
        temp = clamp_temperature_(model.temp)
        text = model.encode_text(input_ids, attention_mask)
        video_feat, tokens = model.encode_video_with_tokens(video)
        # Every rank computes the whole global ITC with the temperature: its gradient must count once.
        losses = {"itc": self._itc(text, video_feat, replicated(temp, world), input_ids, attention_mask, video,
                                   video_ids, alpha)}
        loss, backward = losses["itc"], world * losses["itc"]
        if cfg.itm_weight:
            losses["itm"] = self.itm(input_ids, attention_mask, text, video_feat, tokens, video_ids, temp)
            loss, backward = loss + cfg.itm_weight * losses["itm"], backward + cfg.itm_weight * losses["itm"]
        losses.update(loss=loss, backward=backward)
        return losses

    def cached_itc(self, input_ids: Tensor, attention_mask: Tensor, video: Tensor, video_ids: Tensor, chunks: int,
                   alpha: float | None = None) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """Gradient caching's first pass (utils/step.py): the batch encoded in ``chunks`` without a graph, the
        momentum update, keys and queue exactly as :meth:`forward` does them (the momentum keys are constants of
        the step), and the ITC on leaves. Returns the losses, whose ``backward`` reaches only the leaves, and the
        leaves ``(text, video, temperature)``; each chunk's ``forward(..., chunk=True)`` then back-propagates
        their gradients. ITM is refused (`check_gradient_caching`)."""
        check_gradient_caching(chunks, self.config.itm_weight)
        model, alpha = self.model, self.config.alpha if alpha is None else alpha
        temp = clamp_temperature_(model.temp)
        parts = list(zip(input_ids.chunk(chunks), attention_mask.chunk(chunks), video.chunk(chunks)))
        with torch.no_grad():
            feats = [(model.encode_text(i, m), model.encode_video(v)) for i, m, v in parts]
        text = torch.cat([t for t, _ in feats]).float().requires_grad_()
        video_feat = torch.cat([v for _, v in feats]).float().requires_grad_()
        temp_leaf = temp.detach().requires_grad_(temp.requires_grad)
        world = dist.get_world_size() if dist.is_initialized() else 1
        itc = self._itc(text, video_feat, temp_leaf, input_ids, attention_mask, video, video_ids, alpha, chunks)
        return {"itc": itc, "loss": itc, "backward": world * itc}, (text, video_feat, temp_leaf)

    def _itc(self, text: Tensor, video_feat: Tensor, temp: Tensor, input_ids: Tensor, attention_mask: Tensor,
             video: Tensor, video_ids: Tensor, alpha: float, chunks: int = 1) -> Tensor:
        """The EMA update, the momentum keys of the batch (encoded in ``chunks``), the ITC, then the queue."""
        keys = None
        if self.momentum is not None:
            self.momentum.update(self.model)
            momentum = self.momentum.model
            with torch.no_grad():
                keys = [(momentum.encode_text(i, m), momentum.encode_video(v)) for i, m, v in
                        zip(input_ids.chunk(chunks), attention_mask.chunk(chunks), video.chunk(chunks))]
                keys = (torch.cat([t for t, _ in keys]), torch.cat([v for _, v in keys]))
        itc = itc_loss(text, video_feat, temp, video_ids, keys, self.queue if keys else None, alpha)
        if keys is not None:
            self.queue.enqueue(gather_with_grad(keys[0]), gather_with_grad(keys[1]), gather_with_grad(video_ids))
        return itc

    def itm(self, input_ids: Tensor, attention_mask: Tensor, text: Tensor, video: Tensor, tokens: Tensor,
            video_ids: Tensor, temp: Tensor) -> Tensor:
        """ITM with one hard negative video per caption and one hard negative caption per video, mined from the
        gathered batch by the ITC similarity (BLIP's ``negative_all_rank``)."""
        itm_ids = input_ids.clone()
        itm_ids[:, 0] = self.enc_id
        with torch.no_grad():
            all_ids = gather_with_grad(video_ids)
            t2v = text @ gather_with_grad(video).t() / temp
            v2t = video @ gather_with_grad(text).t() / temp
            negative_video = sample_hard_negatives(t2v, video_ids, all_ids, self.generator)
            negative_text = sample_hard_negatives(v2t, video_ids, all_ids, self.generator)
            all_itm_ids, all_mask = gather_with_grad(itm_ids), gather_with_grad(attention_mask)
        all_tokens = gather_with_summed_grad(tokens)  # negatives' gradients go back to the rank that encoded them
        return itm_loss(self.model.itm_logits, itm_ids, attention_mask, tokens, all_tokens[negative_video],
                        all_itm_ids[negative_text], all_mask[negative_text])
