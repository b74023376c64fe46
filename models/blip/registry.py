"""What the backbone registry (models/backbones.py) needs of BLIP beyond the model itself: where a name leads,
loading with the vocabulary found beside the weights, the tokenizer of a loaded model, and the text FLOP count of
DGL's text pass (BLIP's text tower takes no prompts)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..flops import Shapes, block_flops
from .config import BlipConfig
from .formats import EXPECTED, BlipLoadError
from .loading import HF_WEIGHT_FILES, at_resolution, load_blip
from .model import PAD_ID, BlipRetrieval
from .tokenizer import BlipTokenizer, find_vocab


def resolve(name: str, pretrained_dir: str | os.PathLike | None) -> Path:
    """The weights file of ``name`` (a Hugging Face folder, its weight file or an original ``.pth``), as given or
    inside ``pretrained_dir``: a folder leads to its weight file, whose SHA256 identifies the weights."""
    given = Path(name).expanduser()
    candidates = [given]
    if not given.is_absolute() and pretrained_dir is not None:
        candidates.append(Path(pretrained_dir).expanduser() / name)
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        looked = " or ".join(map(str, candidates))
        raise FileNotFoundError(f"--pretrained_clip_name {name}: no BLIP weights at {looked}; expected {EXPECTED}")
    if path.is_dir():
        weights = next((path / f for f in HF_WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise BlipLoadError(f"{path} has neither of {list(HF_WEIGHT_FILES)}; expected {EXPECTED}")
        return weights.resolve()
    return path.resolve()


def load(path: Path, activation: str | None) -> BlipRetrieval:
    """BLIP from ``path`` with its ``vocab.txt`` (beside it) recorded for the tokenizer."""
    if activation is not None:
        raise ValueError(f"--clip_activation {activation}: BLIP's files record their activation "
                         "(config.json, or BLIP's own configs for an original .pth); leave the flag out")
    model = load_blip(path)
    model.vocab_file = find_vocab(path)
    return model


def resize(model: BlipRetrieval, resolution: int) -> BlipRetrieval:
    return at_resolution(model, resolution)


def from_state_dict(state: Mapping[str, torch.Tensor], source: str, config: BlipConfig | None) -> BlipRetrieval:
    if config is None:  # heads, eps and activations are not in our state dict's shapes
        raise ValueError(f"{source}: a BLIP state dict in memory needs its BlipConfig "
                         "(heads and eps are not in the tensors)")
    return BlipRetrieval.from_state_dict(dict(state), config)


def tokenizer(backbone: BlipRetrieval | None) -> BlipTokenizer | None:
    """The tokenizer on the vocabulary beside ``backbone``'s weights; None for weights built in memory."""
    vocab = getattr(backbone, "vocab_file", None)
    if vocab is None:
        return None
    found = BlipTokenizer(vocab)
    if found.pad_id != PAD_ID:  # the model finds each caption's end by its padding
        raise BlipLoadError(f"{vocab}: [PAD] is on line {found.pad_id + 1}, not first as in BERT's vocabulary")
    return found


def dgl_text_flops(s: Shapes, captions: int, kept_words: int, attention: bool = True) -> tuple[int, int]:
    """DGL's text pass on BLIP: every kept id slot through every layer (bidirectional attention, no prefix prompts,
    so nothing is shared across captions as on CLIP's causal tower). Post-LN BERT layers cost the same GEMMs as a
    pre-LN block: q, k, v, output and the 4x MLP of BLIP's releases."""
    L, D = kept_words, s.text_width
    pairs = L * L if attention else 0
    head = 2 * D * s.embed
    per_caption = (s.text_layers * block_flops(L, D, pairs) + head,
                   s.text_layers * block_flops(L, D, pairs, backward=True) + head)
    return captions * per_caption[0], captions * per_caption[1]
