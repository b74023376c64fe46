"""The synthetic world's vocabulary: colours, shapes, backgrounds, motions and their time reversals, and the
captions that name them. The renderer, the dataset writer and the tiny-CLIP pretraining all draw on these
names, so a word the captions use is always one the world can show.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle", "cross")
# Synonyms used in captions; the first word is the canonical name.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
}

# A motion and its time reversal. The first of each pair is the one whose trajectory is drawn; the second
# is drawn as the first played backwards, so twins are exact reversals by construction.
MOTION_PAIRS = (
    ("left_to_right", "right_to_left"),
    ("upward", "downward"),
    ("growing", "shrinking"),
    ("appearing", "disappearing"),
)
REVERSE = {a: b for a, b in MOTION_PAIRS} | {b: a for a, b in MOTION_PAIRS}
MOTIONS = tuple(itertools.chain.from_iterable(MOTION_PAIRS)) + ("static",)

# Phrases are aligned by index across a pair so twin captions differ only in temporal words.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left_to_right": ("moves from left to right", "slides to the right",
                      "travels rightward across the frame", "goes from the left side to the right side"),
    "right_to_left": ("moves from right to left", "slides to the left",
                      "travels leftward across the frame", "goes from the right side to the left side"),
    "upward": ("moves upward", "rises to the top", "goes up", "travels from the bottom to the top"),
    "downward": ("moves downward", "sinks to the bottom", "goes down", "travels from the top to the bottom"),
    "growing": ("grows", "gets bigger", "becomes larger and larger", "grows from small to large"),
    "shrinking": ("shrinks", "gets smaller", "becomes smaller and smaller", "shrinks from large to small"),
    "appearing": ("appears", "fades in", "gradually becomes visible", "emerges from the background"),
    "disappearing": ("disappears", "fades out", "gradually becomes invisible", "vanishes into the background"),
    "static": ("stays still", "does not move", "remains in place", "stands still in the frame"),
}
CAPTION_TEMPLATES = (
    "{a} {colour} {shape} {motion}",
    "the {colour} {shape} {motion}",
    "{a} {colour} {shape} {motion} on {a_bg} {background} background",
    "on {a_bg} {background} background {a} {colour} {shape} {motion}",
    "there is {a} {colour} {shape} that {motion}",
    "a video of {a} {colour} {shape} that {motion}",
)


@dataclass(frozen=True)
class ClipAttrs:
    """What a clip shows; the caption vocabulary is derived from these names."""

    colour: str
    shape: str
    motion: str
    background: str


def article(word: str) -> str:
    """Indefinite article, so captions read like the human-written MSR-VTT ones ("an orange ...")."""
    return "an" if word[0] in "aeiou" else "a"


def caption_variants(attrs: list[ClipAttrs], k: int, rng: np.random.Generator) -> list[list[str]]:
    """K distinct captions for each clip in `attrs`, sharing template, phrase index and shape word across
    the clips, so a twin pair's captions differ only in the motion phrase."""
    n_phrases = min(len(MOTION_PHRASES[a.motion]) for a in attrs)
    words = SHAPE_WORDS[attrs[0].shape]
    combos = list(itertools.product(range(len(CAPTION_TEMPLATES)), range(n_phrases), range(len(words))))
    picks = rng.choice(len(combos), size=k, replace=False)
    out: list[list[str]] = []
    for a in attrs:
        caps = []
        for ti, pi, wi in (combos[i] for i in picks):
            caps.append(CAPTION_TEMPLATES[ti].format(
                a=article(a.colour), colour=a.colour, shape=words[wi], motion=MOTION_PHRASES[a.motion][pi],
                a_bg=article(a.background), background=a.background))
        out.append(caps)
    return out


def random_attrs(rng: np.random.Generator, motions: tuple[str, ...]) -> ClipAttrs:
    """One clip's colour, shape, motion (among ``motions``) and background, drawn in that order."""
    return ClipAttrs(
        colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(SHAPES)),
        motion=str(rng.choice(motions)), background=str(rng.choice(list(BACKGROUNDS))),
    )

