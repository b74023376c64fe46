"""CLIP4Clip meanP zero-shot: the frozen backbone's frame embeddings averaged over time.

The reference point DGL is compared with; it has the same encode/logits interface as ``DGL`` so the
evaluation code runs it unchanged. It is blind to frame order by construction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .losses import cosine_logits


class MeanPoolCLIP(nn.Module):
    def __init__(self, clip: Backbone):
        super().__init__()
        self.clip = clip.requires_grad_(False)

    def prompts(self) -> None:
        return None

    def encode_text(self, input_ids: torch.Tensor, prompts: None = None) -> torch.Tensor:
        kept = int(self.clip.text_end(input_ids).max()) + 1  # padding after the longest caption changes nothing
        return self.clip.encode_text(input_ids[:, :kept])

    def encode_video(self, video: torch.Tensor, prompts: None = None) -> torch.Tensor:
        """Mean of the L2-normalised frame embeddings (CLIP4Clip's meanP; repeated last frames count)."""
        frames = self.clip.encode_image(video.flatten(0, 1)).unflatten(0, video.shape[:2])
        return F.normalize(frames.float(), dim=-1).mean(dim=1)

    def logits(self, text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(self.clip.logit_scale, text_features, video_features)
