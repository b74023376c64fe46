"""Still images + captions from the synthetic video world, for contrastive pretraining of a tiny CLIP.

Real CLIP weights are unavailable, so the demo pretrains a small CLIP on single frames first. Stills are
drawn by the same renderer as the videos (`synthetic_render.draw_frames`) and use the same colour, shape and
background words. Their captions name colour, shape, size and position (left/right/top/bottom/centre),
which teaches the text tower the spatial words that the video captions reuse, but never a motion: a single
frame carries no time, and the temporal words must be learnt from video.
"""
from __future__ import annotations

import numpy as np

from preprocess.synthetic_render import draw_frames
from preprocess.synthetic_world import BACKGROUNDS, COLOURS, SHAPE_WORDS, SHAPES, article

POSITIONS: dict[str, tuple[float, float]] = {  # nominal centre (x, y) in unit coordinates, y down
    "left": (0.22, 0.5),
    "right": (0.78, 0.5),
    "top": (0.5, 0.22),
    "bottom": (0.5, 0.78),
    "centre": (0.5, 0.5),
}
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "centre": ("in the centre", "in the middle"),
}
SIZES: dict[str, tuple[float, float]] = {"small": (0.07, 0.11), "large": (0.18, 0.25)}  # radius range
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
STILL_TEMPLATES = (
    "{thing} {position}",
    "{thing} {position} on {a_bg} {background} background",
    "there is {thing} {position}",
    "a picture of {thing} {position}",
    "{thing} on {a_bg} {background} background",
)
JITTER = 0.06
CHUNK = 1024  # images rendered per call, to bound float32 scratch memory


def _pick(rng: np.random.Generator, names: list[str], n: int) -> list[str]:
    return [names[i] for i in rng.integers(len(names), size=n)]


def _caption(rng: np.random.Generator, colour: str, shape: str, size: str, position: str, background: str) -> str:
    """One randomly worded caption; the size word is sometimes left out, as people often do."""
    words = [colour, SHAPE_WORDS[shape][rng.integers(len(SHAPE_WORDS[shape]))]]
    if rng.random() < 0.7:
        words.insert(0, SIZE_WORDS[size][rng.integers(len(SIZE_WORDS[size]))])
    desc = " ".join(words)
    phrases = POSITION_PHRASES[position]
    return STILL_TEMPLATES[rng.integers(len(STILL_TEMPLATES))].format(
        thing=f"{article(desc)} {desc}", position=phrases[rng.integers(len(phrases))],
        a_bg=article(background), background=background)


def sample_stills(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """n random stills -> (uint8 [n,S,S,3], captions). Deterministic given the rng state."""
    colours, shapes = _pick(rng, list(COLOURS), n), _pick(rng, list(SHAPES), n)
    backgrounds, positions = _pick(rng, list(BACKGROUNDS), n), _pick(rng, list(POSITIONS), n)
    sizes = _pick(rng, list(SIZES), n)
    lo, hi = np.array([SIZES[s] for s in sizes]).reshape(n, 2).T
    r = rng.uniform(lo, hi)
    centre = np.array([POSITIONS[p] for p in positions]).reshape(n, 2) + rng.uniform(-JITTER, JITTER, (n, 2))
    cx, cy = np.clip(centre, r[:, None], 1.0 - r[:, None]).T
    rgb = np.array([COLOURS[c] for c in colours]).reshape(n, 3)
    bg = np.array([BACKGROUNDS[b] for b in backgrounds]).reshape(n, 3)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        images[s:e] = draw_frames(cx[s:e] * size, cy[s:e] * size, r[s:e] * size, np.ones(e - s, np.float32),
                                  shapes[s:e], rgb[s:e], bg[s:e], size)
    captions = [_caption(rng, *attrs) for attrs in zip(colours, shapes, sizes, positions, backgrounds)]
    return images, captions
