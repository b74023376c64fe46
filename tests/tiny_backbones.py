"""A small random instance of every registered backbone, by registry name, for the tests that run over the
registry (tests/test_registries.py fails for a backbone without one)."""
from __future__ import annotations

from collections.abc import Callable

from models.backbone import Backbone
from models.clip import CLIP
from models.pretrained import CLIPConfig

TINY_BACKBONES: dict[str, Callable[[], Backbone]] = {
    "openai-clip": lambda: CLIP(CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                                           vision_heads=2, vision_patch_size=8, grid_size=4, context_length=77,
                                           vocab_size=49408, text_width=64, text_heads=1, text_layers=2)),
}


def tiny_backbone(name: str = "openai-clip") -> Backbone:
    return TINY_BACKBONES[name]()
