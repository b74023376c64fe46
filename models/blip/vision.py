"""BLIP's ViT (timm's layout: fused qkv, pre-LN blocks, CLS at position 0, learned positions, one final norm).

The blocks expose ``ln_1, attn, ln_2, mlp`` with the attention of models/clip.py (same fused q|k|v layout as
BLIP's ``attn.qkv``), so DGL's global-local attention drives them exactly as it drives CLIP's blocks.
Unlike CLIP there is no norm before the blocks, and the final norm applies to every token (the ITM
cross-attention reads all of them), not only to the pooled one.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..clip import CLIP_MEAN, CLIP_STD, LayerNorm, MultiheadAttention, QuickGELU

# BLIP normalises pixels with CLIP's statistics (its transforms and Hugging Face's BlipImageProcessor alike).
BLIP_MEAN, BLIP_STD = CLIP_MEAN, CLIP_STD


def activation(name: str) -> nn.Module:
    return {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "quick_gelu": QuickGELU}[name]()


class VisionBlock(nn.Module):
    """Pre-LN block: ``x += attn(ln_1(x)); x += mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_width: int, eps: float, act: str):
        super().__init__()
        self.ln_1 = LayerNorm(width, eps=eps)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(width, mlp_width), act=activation(act),
                                             fc2=nn.Linear(mlp_width, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class BlipVisionTransformer(nn.Module):
    def __init__(self, resolution: int, patch: int, width: int, layers: int, heads: int, mlp_width: int,
                 eps: float, act: str = "gelu"):
        super().__init__()
        grid = resolution // patch
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(width))
        self.pos_embed = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.blocks = nn.ModuleList(VisionBlock(width, heads, mlp_width, eps, act) for _ in range(layers))
        self.norm = LayerNorm(width, eps=eps)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.register_buffer("pixel_mean", 255 * torch.tensor(BLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", 255 * torch.tensor(BLIP_STD).view(3, 1, 1), persistent=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, 1 + grid², width]``: CLS + patches with positions added (no norm: BLIP has
        none before its blocks). uint8 images are normalised here; float images are taken as normalised."""
        if images.dtype == torch.uint8:
            images = (images.float() - self.pixel_mean) / self.pixel_std
        patches = self.patch_embed(images.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.cls_token.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed.to(patches.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Every output token, normed: ``[N, 1 + grid², width]`` (what ITM cross-attends to)."""
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
