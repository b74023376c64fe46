"""The frozen backbones DGL can prompt, by name, and the small interface ``models/dgl.py`` uses them through.

An entry brings what the rest of the project needs to know of a backbone: how to load it from a name or a
file, its tokenizer, the input normalisation its loaders apply, where its weights sit in an official DGL
checkpoint, and its FLOP count. Adding a backbone: a module with a class that has the ``Backbone`` attributes,
and one line in ``BACKBONES``; tests/test_registries.py runs over the registry.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .clip import CLIP, CLIP_MEAN, CLIP_STD
from .flops import text_flops, video_flops
from .pretrained import CLIPConfig
from .tokenizer import ClipTokenizer


class Backbone(Protocol):
    """What DGL uses of a frozen two-tower backbone."""

    config: CLIPConfig  # widths, depths, heads, patch size, input resolution, embedding size
    logit_scale: nn.Parameter  # the frozen temperature (log scale)
    text_blocks: nn.ModuleList  # text transformer blocks, ``block(x, is_causal=True)``
    vision_blocks: nn.ModuleList  # vision transformer blocks with ``ln_1, attn, ln_2, mlp``

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor: ...  # [N, L] -> [N, L, text width]

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor: ...  # [..., text width] -> [..., embed]

    def embed_frames(self, images: torch.Tensor) -> torch.Tensor: ...  # [N, 3, H, W] -> [N, 1 + grid², width]

    def project_frames(self, tokens: torch.Tensor) -> torch.Tensor: ...  # [..., width] -> [..., embed]


@dataclass(frozen=True)
class BackboneEntry:
    load: Callable[[str, str | os.PathLike | None], Backbone]  # (name or file, folder) -> backbone
    tokenizer: Callable[[], ClipTokenizer]
    mean: tuple[float, float, float]  # RGB, on [0, 1] pixels
    std: tuple[float, float, float]
    official_prefix: str  # the backbone's weights in an official DGL checkpoint: "module." + prefix + its keys
    tiny: Callable[[], Backbone]  # a small random instance, for the tests that run over the registry
    video_flops: Callable[..., tuple[int, int]]  # (forward, backward) FLOPs of encoding videos (models/flops.py)
    text_flops: Callable[..., tuple[int, int]]
    context_length: int  # text positions of the named models (--max_words at most this; flags are checked against it)


BACKBONES: dict[str, BackboneEntry] = {
    "openai-clip": BackboneEntry(
        load=CLIP.from_pretrained, tokenizer=ClipTokenizer, mean=CLIP_MEAN, std=CLIP_STD, official_prefix="clip.",
        tiny=lambda: CLIP(CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                                     vision_heads=2, vision_patch_size=8, grid_size=4, context_length=77,
                                     vocab_size=49408, text_width=64, text_heads=1, text_layers=2)),
        video_flops=video_flops, text_flops=text_flops, context_length=77,
    ),
}
DEFAULT_BACKBONE = "openai-clip"


def get_backbone(name: str = DEFAULT_BACKBONE) -> BackboneEntry:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    return BACKBONES[name]


def get_tokenizer(name: str = DEFAULT_BACKBONE) -> ClipTokenizer:
    return get_backbone(name).tokenizer()
