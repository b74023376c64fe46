"""Training data for the tiny backbone: seeded synthetic stills with captions, and pairs of differently worded
video captions of time-reversed twin clips for the text-only term, tokenised and normalised for the backbone."""
from __future__ import annotations

import dataclasses
from dataclasses import astuple

import numpy as np
import torch

from dataloaders.transforms import normalize, resize_and_crop
from models.backbone import DEFAULT_BACKBONE
from preprocess import synthetic_world as world
from preprocess.synthetic_stills import sample_stills
from preprocess.tiny_backbone.backbones import tiny_backbone
from preprocess.tiny_backbone.recipe import Recipe
from preprocess.tiny_backbone.vocabulary import video_caption_words, words_of

__all__ = ["CaptionTokens", "MotionCaptions", "StillBatches", "video_caption_words", "words_of"]


class CaptionTokens:
    """Captions -> token ids [N,L], L cut to the longest caption; remembers every caption it tokenised."""

    def __init__(self, context: int, backbone: str = DEFAULT_BACKBONE):
        self.context = context
        self.tokenizer = tiny_backbone(backbone).tokenizer()
        self.seen: dict[str, list[int]] = {}  # caption -> [SOT, ..., EOT]; the world has few distinct captions

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = []
        for caption in captions:
            ids = self.seen.get(caption)
            if ids is None:
                ids, mask = self.tokenizer(caption, self.context)
                ids = self.seen[caption] = ids[0, : int(mask.sum())].tolist()
            rows.append(ids)
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for row, ids in enumerate(rows):
            out[row, : len(ids)] = torch.tensor(ids)
        return out  # zero padding: CLIP's causal attention never reads it, BLIP masks it (its [PAD] is id 0)


class StillBatches:
    """Fresh seeded stills -> (images [N,3,R,R] normalised for ``backbone``, its token ids [N,L], captions)."""

    def __init__(self, recipe: Recipe, backbone: str = DEFAULT_BACKBONE):
        self.recipe = recipe
        self.backbone = backbone
        self.tokens = CaptionTokens(recipe.context, backbone)

    def images(self, raw: np.ndarray) -> torch.Tensor:
        # resize: identity at the model resolution
        return normalize(resize_and_crop(raw, self.recipe.resolution), self.backbone)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        raw, captions = sample_stills(n, self.recipe.render_size or self.recipe.resolution, rng)
        return self.images(raw), self.tokens(captions), captions


class MotionCaptions:
    """Two differently worded video captions of the same clip, for the text-only paraphrase term.

    Clips come in time-reversed twin pairs (a static clip is paired with a random motion) whose captions
    share template and wording except for the motion phrase, so the hardest negative of every caption is
    its twin's. ``keys`` identify the clip's attributes: equal keys are both positives.
    """

    def __init__(self, tokens: CaptionTokens):
        self.tokens = tokens
        self.moving = [m for m in world.MOTIONS if m in world.REVERSE]

    def _partner(self, attrs: world.ClipAttrs, rng: np.random.Generator) -> world.ClipAttrs:
        motion = world.REVERSE.get(attrs.motion) or self.moving[rng.integers(len(self.moving))]
        return dataclasses.replace(attrs, motion=motion)

    def texts(self, n: int, rng: np.random.Generator) -> tuple[list[str], list[str], list[tuple]]:
        """n clips as n/2 (clip, twin) pairs at indices (2i, 2i+1) -> (wording 1, wording 2, attributes)."""
        clips = []
        for _ in range(n // 2):
            first = world.random_attrs(rng, world.MOTIONS)
            clips += [first, self._partner(first, rng)]
        views = [caps for i in range(0, n, 2) for caps in world.caption_variants(clips[i : i + 2], 2, rng)]
        return [v[0] for v in views], [v[1] for v in views], [astuple(c) for c in clips]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[tuple]]:
        first, second, keys = self.texts(n, rng)
        return self.tokens(first), self.tokens(second), keys

