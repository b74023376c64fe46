"""A small random instance of every registered backbone, by registry name, and how to write it as the file its
entry loads: for the tests that run over the registry (tests/test_registries.py fails for a backbone without
one)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from models.backbone import Backbone
from models.clip import CLIP
from models.pretrained import CLIPConfig


@dataclass(frozen=True)
class TinyBackbone:
    build: Callable[[], Backbone]  # random weights (seed torch first for the same ones)
    write: Callable[[Backbone, Path], Path]  # (backbone, folder) -> what ``create_model(name, it)`` loads


def _write_state_dict(backbone: Backbone, folder: Path) -> Path:
    torch.save(backbone.state_dict(), folder / "weights.pt")
    return folder / "weights.pt"


TINY_BACKBONES: dict[str, TinyBackbone] = {
    "openai-clip": TinyBackbone(
        build=lambda: CLIP(CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                                      vision_heads=2, vision_patch_size=8, grid_size=4, context_length=77,
                                      vocab_size=49408, text_width=64, text_heads=1, text_layers=2)),
        write=_write_state_dict,
    ),
}


def tiny_backbone(name: str = "openai-clip") -> Backbone:
    return TINY_BACKBONES[name].build()
