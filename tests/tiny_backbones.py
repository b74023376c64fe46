"""A small random instance of every registered backbone, by registry name, and how to write it as the file its
entry loads: for the tests that run over the registry (tests/test_registries.py fails for a backbone without
one)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from models.backbone import Backbone
from models.blip import BlipConfig, BlipRetrieval
from models.clip import CLIP
from models.pretrained import CLIPConfig
from preprocess.tiny_backbone.backbones import blip_original_state_dict
from tests.blip_files import VOCAB, write_vocab


@dataclass(frozen=True)
class TinyBackbone:
    build: Callable[[], Backbone]  # random weights (seed torch first for the same ones)
    write: Callable[[Backbone, Path], Path]  # (backbone, folder) -> what ``create_model(name, it)`` loads


def _write_state_dict(backbone: Backbone, folder: Path) -> Path:
    torch.save(backbone.state_dict(), folder / "weights.pt")
    return folder / "weights.pt"


# BLIP in its original release layout (.pth, vocab.txt beside it), whose heads (width / 64), eps and activation
# are BLIP's own.
TINY_BLIP = BlipConfig(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64, vision_heads=1,
                       vision_patch_size=8, grid_size=4, context_length=40, vocab_size=len(VOCAB) + 2, text_width=64,
                       text_heads=1, text_layers=2, vision_mlp_width=256, text_mlp_width=256, vision_eps=1e-6,
                       text_eps=1e-12)


@cache
def _vocab_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tiny_blip_vocab"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    write_vocab(folder)
    return folder


def _build_blip() -> BlipRetrieval:
    model = BlipRetrieval(TINY_BLIP)
    with torch.no_grad():  # BLIP's zero-initialised biases and unit norms would hide a misplaced tensor
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.temp.fill_(0.05)
    model.vocab_file = _vocab_folder() / "vocab.txt"
    return model


def _write_blip_original(backbone: Backbone, folder: Path) -> Path:
    torch.save(blip_original_state_dict(backbone), folder / "model_tiny_retrieval.pth")
    write_vocab(folder)
    return folder / "model_tiny_retrieval.pth"


TINY_BACKBONES: dict[str, TinyBackbone] = {
    "blip": TinyBackbone(build=_build_blip, write=_write_blip_original),
    "openai-clip": TinyBackbone(
        build=lambda: CLIP(CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                                      vision_heads=2, vision_patch_size=8, grid_size=4, context_length=77,
                                      vocab_size=49408, text_width=64, text_heads=1, text_layers=2)),
        write=_write_state_dict,
    ),
}


def tiny_backbone(name: str = "openai-clip") -> Backbone:
    return TINY_BACKBONES[name].build()
