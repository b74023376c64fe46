"""Drawing the synthetic world: one shape on a plain background, moved along a per-motion trajectory.

A reversed motion is drawn as its forward partner played backwards, so temporal twins are exact time
reversals of each other by construction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocess.synthetic_world import BACKGROUNDS, COLOURS, REVERSE, ClipAttrs


@dataclass
class Track:
    """Per-frame shape geometry in unit coordinates (fractions of the frame side) and opacity."""

    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    alpha: np.ndarray

    def reversed(self) -> "Track":
        return Track(self.cx[::-1], self.cy[::-1], self.r[::-1], self.alpha[::-1])


# ----------------------------------------------------------------------------------------------- drawing
def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Inside-test in coordinates normalised by the shape radius (y points down)."""
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85
    if shape == "triangle":  # apex up, base below; area similar to the circle
        return (dy <= 0.8) & (np.abs(dx) <= (dy + 1.0) / 1.8)
    if shape == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= 0.33) & (ay <= 1.0)) | ((ay <= 0.33) & (ax <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def draw_frames(cx: np.ndarray, cy: np.ndarray, r: np.ndarray, alpha: np.ndarray, shapes: list[str],
                colours: np.ndarray, backgrounds: np.ndarray, size: int) -> np.ndarray:
    """The one renderer: N frames, each one shape on a plain background -> uint8 [N,S,S,3].

    Geometry is in pixels; colours/backgrounds are [N,3]. Videos and stills both go through here so the
    pretraining stills and the benchmark videos look the same.
    """
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - cx[:, None, None]) / r[:, None, None]
    dy = (grid[None, :, None] - cy[:, None, None]) / r[:, None, None]
    mask = np.zeros(dx.shape[:1] + (size, size), dtype=bool)
    shapes_arr = np.asarray(shapes)
    for shape in set(shapes):
        sel = shapes_arr == shape
        mask[sel] = _shape_mask(shape, dx[sel], dy[sel])
    weight = (mask * alpha[:, None, None])[..., None]
    bg = backgrounds[:, None, None, :].astype(np.float32)
    fg = colours[:, None, None, :].astype(np.float32)
    return np.rint(bg + weight * (fg - bg)).astype(np.uint8)


# -------------------------------------------------------------------------------------------- trajectories
def _slide(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear travel along one axis with random size, start and speed, staying inside the frame."""
    r = rng.uniform(0.09, 0.15)
    lo, hi = r, 1.0 - r
    dist = rng.uniform(0.5, 0.9) * (hi - lo)
    start = rng.uniform(lo, hi - dist)
    along = start + dist * t
    across = np.full_like(t, rng.uniform(lo, hi))
    return along, across, r


def _track_left_to_right(rng: np.random.Generator, t: np.ndarray) -> Track:
    x, y, r = _slide(rng, t)
    return Track(x, y, np.full_like(t, r), np.ones_like(t))


def _track_upward(rng: np.random.Generator, t: np.ndarray) -> Track:
    y, x, r = _slide(rng, t)
    return Track(x, 1.0 - y, np.full_like(t, r), np.ones_like(t))


def _track_growing(rng: np.random.Generator, t: np.ndarray) -> Track:
    r0, r1 = rng.uniform(0.04, 0.08), rng.uniform(0.2, 0.3)
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    return Track(np.full_like(t, cx), np.full_like(t, cy), r0 + (r1 - r0) * t, np.ones_like(t))


def _track_appearing(rng: np.random.Generator, t: np.ndarray) -> Track:
    r = rng.uniform(0.09, 0.16)
    cx, cy = rng.uniform(r, 1.0 - r, size=2)
    t0, t1 = rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
    alpha = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return Track(np.full_like(t, cx), np.full_like(t, cy), np.full_like(t, r), alpha)


def _track_static(rng: np.random.Generator, t: np.ndarray) -> Track:
    r = rng.uniform(0.09, 0.16)
    cx, cy = rng.uniform(r, 1.0 - r, size=2)
    return Track(np.full_like(t, cx), np.full_like(t, cy), np.full_like(t, r), np.ones_like(t))


_TRACKS = {
    "left_to_right": _track_left_to_right,
    "upward": _track_upward,
    "growing": _track_growing,
    "appearing": _track_appearing,
    "static": _track_static,
}


def render_clip(attrs: ClipAttrs, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one clip -> uint8 [F,S,S,3]. A reversed motion with the same rng state gives the exact
    time reversal of its forward partner."""
    forward = attrs.motion in _TRACKS
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    track = _TRACKS[attrs.motion if forward else REVERSE[attrs.motion]](rng, t)
    if not forward:
        track = track.reversed()
    return draw_frames(
        track.cx * size, track.cy * size, track.r * size, track.alpha, [attrs.shape] * frames,
        np.tile(COLOURS[attrs.colour], (frames, 1)), np.tile(BACKGROUNDS[attrs.background], (frames, 1)), size,
    )
