"""DGL-BLIP (``--model dgl_blip``) behind the interface the training and evaluation engine drives (that of
``models.dgl.DGL``): built from a ``DGLConfig`` by ``models.factory.create_model``, saved in our compact
checkpoints, trained through ``models.objectives`` (BLIP's ITC + ITM) and re-ranked with ITM in evaluation.

The model itself is ``DGLBlip`` (models/blip/dgl_video.py); this adapter maps the run's settings onto it:
``global_prompt_length`` -> G, ``visual_output_type`` ``global_prompt0`` (DGL's) or ``average_frame_cls_token``
(tokenmix's frame mean), ``train_backbone`` (``--freeze_clip 0``) -> full fine-tuning, else prompts only.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..backbone import backbone_fingerprint
from ..dgl import DGLConfig
from ..losses import cosine_logits
from .dgl_video import DGLBlip, DGLBlipConfig
from .model import BlipRetrieval

POOLING = {"global_prompt0": "global_prompt0", "average_frame_cls_token": "frame_mean"}


class DGLBlipModel(nn.Module):
    """``net`` is the ``DGLBlip``; ``clip`` its BLIP (the engine's name for the backbone)."""

    objective = "blip_itc_itm"  # models.objectives.OBJECTIVES
    prompt_layers = None  # no per-layer prompts: only the G global prompts at the input

    def __init__(self, blip: BlipRetrieval, config: DGLConfig):
        super().__init__()
        if config.model != "dgl_blip":
            raise ValueError(f"DGLBlipModel needs a config of --model dgl_blip, got {config.model!r}")
        # Taken before training moves the weights (full fine-tuning): a checkpoint names the BLIP it started from.
        self.backbone_fingerprint = backbone_fingerprint(blip)
        self.config = config
        self.net = DGLBlip(blip, DGLBlipConfig(config.global_prompt_length, POOLING[config.visual_output_type],
                                               "full" if config.train_backbone else "prompts"))

    @property
    def clip(self) -> BlipRetrieval:
        return self.net.blip

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.net.set_grad_checkpointing(enable)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def param_groups(self, lr: float, coef_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """BLIP's groups (every parameter decayed, as BLIP and tokenmix): the backbone at ``lr · coef_lr``, the
        prompts at ``lr``."""
        return self.net.param_groups(lr * coef_lr, lr, weight_decay)

    def prompts(self) -> None:
        """No prompt generator: the global prompts are parameters (the engine's ``prompts`` argument is unused)."""
        return None

    def encode_text(self, input_ids: Tensor, prompts: None = None, attention_mask: Tensor | None = None) -> Tensor:
        """Normalised ``[N, 256]``; without ``attention_mask`` the padding after each caption is hidden."""
        return self.net.encode_text(input_ids, attention_mask)

    def encode_video(self, video: Tensor, prompts: None = None) -> Tensor:
        return self.net.encode_video(video)

    def encode_video_with_tokens(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """The video feature and the tokens ITM cross-attends to (``DGLBlip.video_tokens``)."""
        return self.net.encode_video_with_tokens(video)

    def itm_logits(self, input_ids: Tensor, attention_mask: Tensor | None, video_tokens: Tensor) -> Tensor:
        return self.net.itm_logits(input_ids, attention_mask, video_tokens)

    def logits(self, text_features: Tensor, video_features: Tensor) -> Tensor:
        """BLIP's temperature times the cosine (rankings depend on the cosine alone)."""
        return cosine_logits(self.clip.logit_scale.detach(), text_features, video_features)

    def forward(self, input_ids: Tensor, video: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_text(input_ids), self.encode_video(video)

