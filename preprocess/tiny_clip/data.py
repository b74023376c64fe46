"""Training data for the tiny CLIP: seeded synthetic stills with captions, and pairs of differently worded
video captions of time-reversed twin clips for the text-only term; plus the words the captions use."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import astuple

import numpy as np
import torch

from dataloaders.transforms import normalize, resize_and_crop
from models.backbones import get_tokenizer
from preprocess import synthetic_world as world
from preprocess.synthetic_stills import sample_stills
from preprocess.tiny_clip.recipe import Recipe


class CaptionTokens:
    """Captions -> token ids [N,L], L cut to the longest caption; remembers every caption it tokenised."""

    def __init__(self, context: int):
        self.context = context
        self.tokenizer = get_tokenizer()
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
        return out  # causal attention: trailing padding never reaches the EOT feature


class StillBatches:
    """Fresh seeded stills -> (normalised images [N,3,R,R], token ids [N,L], captions)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.tokens = CaptionTokens(recipe.context)

    def images(self, raw: np.ndarray) -> torch.Tensor:
        return normalize(resize_and_crop(raw, self.recipe.resolution))  # resize: identity at the model resolution

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


def words_of(texts) -> set[str]:
    """The lower-case words of the texts, punctuation dropped: what a vocabulary check compares."""
    return {word for text in texts for word in re.findall(r"[a-z]+", text.lower())}


def video_caption_words() -> set[str]:
    """Every word the synthetic video captions can use (templates, motions, colours, shapes, backgrounds)."""
    texts = [re.sub(r"\{[a-z_]+\}", " ", t) for t in world.CAPTION_TEMPLATES]
    texts += [p for phrases in world.MOTION_PHRASES.values() for p in phrases]
    texts += [w for words in world.SHAPE_WORDS.values() for w in words]
    texts += [*world.COLOURS, *world.BACKGROUNDS, "a", "an"]
    return words_of(texts)
