"""DGL on BLIP: BLIP's ViT with DGL's global prompts and global-local attention over the frames of a video.

Only the global-local video attention is adapted (no local or text prompts, no shared latent space): ``G``
learned global prompts lead the ``T`` frames' tokens; in every block the frame tokens attend to the globals
and to their own frame, the globals to the whole video (``models.dgl.global_local_block``, the same fused
attention DGL runs on CLIP). Text goes through BLIP's unimodal BERT unchanged.

Video feature: DGL's rule, the first global prompt through the final norm and ``vision_proj``
(``video_pooling="global_prompt0"``), or tokenmix's ``"frame_mean"``: the mean over frames of the projected
frame CLS tokens, normalised after the mean (LiuRicky/video_language_model ``blip_video_retrieval.py``).
ITM cross-attends to every normed output token of the video, globals included (tokenmix feeds the
frames' tokens, concatenated).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..dgl import global_local_block
from ..prompts import uniform_prompt_init_
from .model import BlipRetrieval

VIDEO_POOLINGS = ("global_prompt0", "frame_mean")
TRAINING_MODES = ("full", "prompts")  # full fine-tuning (the tokenmix recipe), or prompts only (backbone frozen)


@dataclass(frozen=True)
class DGLBlipConfig:
    global_prompt_length: int = 4  # G (DGL's --global_visual_prompt_length); 0 runs the frames independently
    video_pooling: str = "global_prompt0"
    training_mode: str = "full"

    def __post_init__(self):
        if self.video_pooling not in VIDEO_POOLINGS:
            raise ValueError(f"video_pooling must be one of {VIDEO_POOLINGS}, got {self.video_pooling!r}")
        if self.training_mode not in TRAINING_MODES:
            raise ValueError(f"training_mode must be one of {TRAINING_MODES}, got {self.training_mode!r}")
        if self.global_prompt_length < 0:
            raise ValueError(f"global_prompt_length must be >= 0, got {self.global_prompt_length}")
        if self.video_pooling == "global_prompt0" and self.global_prompt_length == 0:
            raise ValueError("video_pooling 'global_prompt0' reads the first global prompt: give "
                             "global_prompt_length >= 1, or pool with 'frame_mean'")


class DGLBlip(nn.Module):
    """BLIP retrieval with DGL's global-local video attention. ``training_mode`` decides what trains:
    ``full`` the whole BLIP and the prompts, ``prompts`` the global prompts alone."""

    def __init__(self, blip: BlipRetrieval, config: DGLBlipConfig = DGLBlipConfig()):
        super().__init__()
        self.blip, self.config = blip, config
        cfg = blip.config
        self.global_prompts = nn.Parameter(uniform_prompt_init_(
            torch.empty(config.global_prompt_length, cfg.vision_width), cfg.vision_patch_size, cfg.vision_width))
        self.blip.requires_grad_(config.training_mode == "full")
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in backward instead of storing its activations: the vision blocks here, the
        BERT layers of the text and ITM passes in BLIP's text encoder."""
        self.grad_checkpointing = enable
        self.blip.text_encoder.grad_checkpointing = enable

    @property
    def temp(self) -> nn.Parameter:
        """BLIP's learned temperature (ITC logits are cosine / temp); trains with the backbone."""
        return self.blip.temp

    # ----------------------------------------------------------------------------------------- video
    def video_tokens(self, video: Tensor) -> Tensor:
        """``[B, T, 3, H, W]`` -> ``[B, G + T·S, vision width]``: the globals, then each frame's ``S = 1 + grid²``
        tokens (CLS first), after the last block and the final norm; what ITM cross-attends to."""
        batch, frames = video.shape[:2]
        tokens = self.blip.embed_frames(video.flatten(0, 1)).unflatten(0, (batch, frames)).flatten(1, 2)
        num_global = self.config.global_prompt_length
        x = torch.cat([self.global_prompts.to(tokens.dtype).expand(batch, -1, -1), tokens], dim=1)
        for block in self.blip.vision_blocks:
            x = self._block(global_local_block, block, x, num_global, frames)
        return self.blip.vision_norm(x)

    def pool(self, tokens: Tensor, frames: int) -> Tensor:
        """:meth:`video_tokens` -> the normalised ``[B, embed]`` video feature."""
        num_global = self.config.global_prompt_length
        if self.config.video_pooling == "global_prompt0":
            projected = self.blip.vision_proj(tokens[:, 0])
        else:
            per_frame = (tokens.shape[1] - num_global) // frames
            projected = self.blip.vision_proj(tokens[:, num_global::per_frame]).mean(dim=1)
        return F.normalize(projected, dim=-1)

    def encode_video_with_tokens(self, video: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.video_tokens(video)
        return self.pool(tokens, video.shape[1]), tokens

    def encode_video(self, video: Tensor) -> Tensor:
        return self.encode_video_with_tokens(video)[0]

    # ------------------------------------------------------------------------------------------ text
    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """BLIP's unimodal text feature: ``F.normalize(text_proj(CLS))`` of ``[CLS]``-led ids."""
        return self.blip.text_features(input_ids, attention_mask)

    def itm_logits(self, input_ids: Tensor, attention_mask: Tensor | None, video_tokens: Tensor) -> Tensor:
        """``[N, 2]`` (no match, match) of N (caption, video) pairs; ids ``[ENC]``-led (``BlipTokenizer.for_itm``)."""
        return self.blip.itm_logits(input_ids, attention_mask, video_tokens)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, video: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_text(input_ids, attention_mask), self.encode_video(video)

    def _block(self, fn: Callable, *args) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    # ------------------------------------------------------------------------------------- optimiser
    def param_groups(self, backbone_lr: float, prompt_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups over the trainable parameters: ``backbone`` (BLIP, temperature included, at
        ``backbone_lr``; present in ``full`` mode only) and ``prompts`` (at ``prompt_lr``). Every parameter is
        decayed, as BLIP's and tokenmix's ``AdamW(model.parameters(), weight_decay=...)``. ``lr_mult`` is each
        group's lr over ``prompt_lr``, for a scheduler that scales one base lr (utils/optim.py's)."""
        groups = []
        for name, lr, params in (("backbone", backbone_lr, [p for p in self.blip.parameters() if p.requires_grad]),
                                 ("prompts", prompt_lr, [self.global_prompts] if self.global_prompts.numel() else [])):
            if params:
                groups.append({"name": name, "params": params, "lr": lr, "lr_mult": lr / prompt_lr,
                               "weight_decay": weight_decay})
        return groups
