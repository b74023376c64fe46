"""Frame geometry and normalisation, in torch on uint8 until the final float conversion.

Deviation from the reference: the official loader only centre-crops (zero-padding frames smaller
than the crop), which is right only for videos pre-compressed to the model's short side. Here the
short side is first resized to the model resolution when it differs, so raw and portrait videos
and tiny test models (resolution 32/64) work too; for pre-compressed videos nothing is resized and
the result equals the reference.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.backbones import DEFAULT_BACKBONE, get_backbone


def resize_and_crop(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """RGB uint8 [k, H, W, 3] -> uint8 [k, 3, size, size]: short side resized to `size` (bicubic,
    antialiased, only when it differs), then the centre square cropped as torchvision's CenterCrop."""
    video = torch.as_tensor(frames).permute(0, 3, 1, 2)
    height, width = video.shape[-2:]
    if min(height, width) != size:
        if height <= width:
            height, width = size, int(size * width / height)
        else:
            height, width = int(size * height / width), size
        video = F.interpolate(video.contiguous(), size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return video[:, :, top : top + size, left : left + size].contiguous()


def normalize(frames: torch.Tensor, backbone_name: str = DEFAULT_BACKBONE) -> torch.Tensor:
    """uint8 [k, 3, H, W] -> float32 with the backbone's mean and std."""
    backbone = get_backbone(backbone_name)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    return (frames.float() / 255.0 - mean) / std
