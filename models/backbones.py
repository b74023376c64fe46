"""The frozen backbones DGL can prompt, by name: everything the rest of the project needs to know of one.

An entry says where a name or path leads (``resolve``), how to build the backbone from that file (``load``) or
from weights already in memory (``from_state_dict``: an official checkpoint's copy, the benchmark's random
weights), its tokenizer, the pixel normalisation, where its weights sit in an official DGL checkpoint, and its
FLOP counts. ``models.factory.create_model`` is the one door; tests/test_registries.py runs over every entry.
Adding a backbone: one module whose model has the `models.backbone.Backbone` interface, one line here, and
its tiny instance in tests/tiny_backbones.py.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from .backbone import DEFAULT_BACKBONE, Backbone
from .blip import BLIP_MEAN, BLIP_STD
from .blip import registry as blip_entry
from .clip import CLIP, CLIP_MEAN, CLIP_STD
from .flops import text_flops, video_flops
from .pretrained import CLIPConfig, resolve_clip_path
from .tokenizer import ClipTokenizer

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "BackboneEntry", "Tokenizer", "get_backbone", "get_tokenizer"]


class Tokenizer(Protocol):
    """Captions -> (ids, mask), both LongTensor ``[num_texts, max_words]``; a str counts as one caption."""

    def __call__(self, texts: str | Sequence[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode(self, text: str) -> list[int]: ...  # ids without special tokens or truncation


@dataclass(frozen=True)
class BackboneEntry:
    resolve: Callable[[str, str | os.PathLike | None], Path]  # (name or path, --pretrained_dir) -> the weights file
    load: Callable[[Path, str | None], Backbone]  # (weights file, --clip_activation or None) -> backbone
    # (weights, name for errors, its config or None: as the weights' shapes tell) -> backbone
    from_state_dict: Callable[[Mapping[str, torch.Tensor], str, Any], Backbone]
    # (a loaded backbone, or None) -> its tokenizer; None where the vocabulary is a file beside the weights (BLIP's
    # vocab.txt) and the backbone has none (built in memory)
    tokenizer: Callable[[Backbone | None], Tokenizer | None]
    mean: tuple[float, float, float]  # RGB, on [0, 1] pixels
    std: tuple[float, float, float]
    official_prefix: str  # the backbone's weights in an official DGL checkpoint: "module." + prefix + its keys
    video_flops: Callable[..., tuple[int, int]]  # (forward, backward) FLOPs of encoding videos (models/flops.py)
    text_flops: Callable[..., tuple[int, int]]
    context_length: int  # text positions of the named models (--max_words at most this; flags are checked against it)
    display_name: str  # how reports name it ("CLIP meanP zero-shot", "BLIP meanP zero-shot")
    # (backbone, --image_resolution) -> the backbone for frames of that size (BLIP: positions interpolated); None:
    # the backbone takes its own size only
    resize: Callable[[Backbone, int], Backbone] | None = None


def _load_clip(path: Path, activation: str | None) -> CLIP:
    return CLIP.from_pretrained(str(path), activation=activation)


def _clip_tokenizer(backbone: Backbone | None = None) -> ClipTokenizer:
    return ClipTokenizer()  # OpenAI's BPE vocabulary ships with the code, whatever the weights


def _clip_from_state_dict(state: Mapping[str, torch.Tensor], source: str, config: CLIPConfig | None) -> CLIP:
    return CLIP.from_state_dict(dict(state), source=source, config=config)


BACKBONES: dict[str, BackboneEntry] = {
    "openai-clip": BackboneEntry(
        resolve=resolve_clip_path, load=_load_clip, from_state_dict=_clip_from_state_dict,
        tokenizer=_clip_tokenizer,
        mean=CLIP_MEAN, std=CLIP_STD, official_prefix="clip.", context_length=77, video_flops=video_flops,
        text_flops=text_flops, display_name="CLIP",
    ),
    "blip": BackboneEntry(
        resolve=blip_entry.resolve, load=blip_entry.load, from_state_dict=blip_entry.from_state_dict,
        tokenizer=blip_entry.tokenizer, mean=BLIP_MEAN, std=BLIP_STD, official_prefix="clip.",
        context_length=512, video_flops=video_flops, text_flops=blip_entry.dgl_text_flops, resize=blip_entry.resize,
        display_name="BLIP",
    ),
}


def get_backbone(name: str = DEFAULT_BACKBONE) -> BackboneEntry:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (--backbone); registered: {sorted(BACKBONES)}")
    return BACKBONES[name]


def get_tokenizer(name: str = DEFAULT_BACKBONE, backbone: Backbone | None = None) -> Tokenizer:
    """The tokenizer of backbone ``name``; ``backbone``: the loaded one, whose files some tokenizers read."""
    tokenizer = get_backbone(name).tokenizer(backbone)
    if tokenizer is None:
        raise ValueError(f"backbone {name!r} reads its vocabulary beside its weights file: load it from that file "
                         "(--pretrained_clip_name) and pass the loaded backbone")
    return tokenizer
