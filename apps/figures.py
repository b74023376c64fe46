"""Pillow drawing helpers for the attention figure of ``visualize.py`` (no matplotlib).

Layout (all sizes in pixels; ``T`` frames of ``F``×``F``), see :func:`figure_size`::

    PAD | title: 3 text lines                                        | TITLE_H
    PAD | frame 0 | PAD | frame 1 | ... | frame T-1 | PAD             | F
        | frame labels (1 text line)                                 | LINE_H
    PAD | value labels (1 line) + stacked bar per frame, under it     | LINE_H + BAR_H
        | legend: 2 text lines                                       | LEGEND_H
    PAD
    width = max(MIN_WIDTH, PAD + T·(F + PAD)); the frame row is centred.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

PAD = 10
LINE_H = 16
TITLE_LINES = 3
TITLE_H = TITLE_LINES * LINE_H
BAR_H = 90
LEGEND_LINES = 2
LEGEND_H = LEGEND_LINES * LINE_H
MIN_WIDTH = 560
FONT_SIZE = 12

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
AXIS = (150, 150, 150)
# Stacked-bar colours of a frame's token groups (bottom to top).
GROUP_COLOURS = {"patches": (231, 111, 81), "cls": (42, 157, 143), "local": (38, 70, 83)}
GROUP_NAMES = {"patches": "patches", "cls": "CLS", "local": "local prompts"}

# A dark-to-bright sequential colour map (black-purple-red-orange-yellow), linearly interpolated.
_CMAP_ANCHORS = np.array(
    [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39), (252, 255, 164)],
    dtype=np.float64,
)


def figure_size(frames: int, frame_size: int) -> tuple[int, int]:
    """(width, height) of the figure for ``frames`` frames shown at ``frame_size``×``frame_size``."""
    width = max(MIN_WIDTH, PAD + frames * (frame_size + PAD))
    height = PAD + TITLE_H + PAD + frame_size + LINE_H + PAD + LINE_H + BAR_H + LEGEND_H + PAD
    return width, height


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + (3,))."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_CMAP_ANCHORS) - 1)
    lo = np.floor(v).astype(int).clip(max=len(_CMAP_ANCHORS) - 2)
    frac = (v - lo)[..., None]
    rgb = _CMAP_ANCHORS[lo] * (1 - frac) + _CMAP_ANCHORS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def upsample(heat: np.ndarray, size: int) -> np.ndarray:
    """A ``[rows, cols]`` patch-grid map -> ``[size, size]`` (bilinear, patch centres at pixel centres)."""
    t = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a colour-mapped ``[rows, cols]`` heat map (values in [0, 1]) over a uint8 ``[F, F, 3]`` frame."""
    size = frame.shape[0]
    coloured = colormap(upsample(heat, size)).astype(np.float32)
    return (frame.astype(np.float32) * (1 - alpha) + coloured * alpha).round().clip(0, 255).astype(np.uint8)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text``, cut and ended with an ellipsis if it is wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


@dataclass(frozen=True)
class _Canvas:
    """The figure being drawn: the image, a pen on it and the font."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    font: ImageFont.ImageFont

    def text(self, xy: tuple[float, float], text: str, width: float) -> None:
        self.draw.text(xy, fit_text(self.draw, text, self.font, width), fill=TEXT, font=self.font)


@dataclass(frozen=True)
class _FrameRow:
    """Where the frames go: their left edges ``xs`` (the row starts at ``x0`` and is ``width`` wide), side ``size``."""

    xs: list[int]
    x0: int
    width: int
    size: int


def attention_figure(
    frames: np.ndarray,
    heat: np.ndarray,
    masses: dict[str, np.ndarray],
    global_mass: float,
    title: Sequence[str] = (),
    frame_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Draw the figure.

    frames: uint8 ``[T, F, F, 3]``; heat: ``[T, rows, cols]`` attention on the patches (drawn on one scale,
    0 to its maximum); masses: ``cls``, ``local``, ``patches`` each ``[T]`` (a frame's bar stacks them);
    global_mass: the weight on the global prompts; title: up to 3 lines.
    """
    frames, heat = _checked(frames, heat)
    num_frames, size = frames.shape[0], frames.shape[1]
    width, height = figure_size(num_frames, size)
    image = Image.new("RGB", (width, height), BACKGROUND)
    canvas = _Canvas(image, ImageDraw.Draw(image), _font())
    y = PAD
    for line in list(title)[:TITLE_LINES]:
        canvas.text((PAD, y), line, width - 2 * PAD)
        y += LINE_H
    row_width = num_frames * size + (num_frames - 1) * PAD
    x0 = (width - row_width) // 2
    row = _FrameRow([x0 + t * (size + PAD) for t in range(num_frames)], x0, row_width, size)
    y = PAD + TITLE_H + PAD
    heat_max = _draw_frames(canvas, row, frames, heat, frame_labels, y)
    groups = [g for g in GROUP_COLOURS if g in masses]
    totals, y = _draw_bars(canvas, row, masses, groups, y + size + LINE_H + PAD)
    _draw_legend(canvas, groups, heat_max, y)
    parts = ", ".join(f"{GROUP_NAMES[g]} {float(np.sum(masses[g])):.3f}" for g in groups)
    summary = f"mass: global prompts {global_mass:.3f} | all frames {float(totals.sum()):.3f} ({parts})"
    canvas.text((PAD, y + LINE_H + 2), summary, width - 2 * PAD)
    return image


def _checked(frames: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames and heat maps as arrays, refused unless they are ``[T, F, F, 3]`` and ``[T, rows, cols]``."""
    frames = np.asarray(frames)
    num_frames, size = frames.shape[0], frames.shape[1]
    if frames.ndim != 4 or frames.shape[2] != size or frames.shape[3] != 3:
        raise ValueError(f"frames must be [T, F, F, 3], got {list(frames.shape)}")
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape[0] != num_frames:
        raise ValueError(f"{heat.shape[0]} heat maps for {num_frames} frames")
    return frames, heat


def _draw_frames(canvas: _Canvas, row: _FrameRow, frames: np.ndarray, heat: np.ndarray,
                 labels: Sequence[str] | None, y: int) -> float:
    """The frames with their heat maps, all on one scale (0 to the returned maximum), each labelled below."""
    heat_max = float(heat.max()) if heat.size else 0.0
    scaled = heat / heat_max if heat_max > 0 else heat
    for t, x in enumerate(row.xs):
        canvas.image.paste(Image.fromarray(overlay(frames[t], scaled[t])), (x, y))
        label = labels[t] if labels is not None else f"t={t}"
        canvas.text((x, y + row.size + 2), label, row.size)
    return heat_max


def _draw_bars(canvas: _Canvas, row: _FrameRow, masses: dict[str, np.ndarray], groups: list[str],
               y: int) -> tuple[np.ndarray, int]:
    """Stacked bars: the attention mass each frame receives, split into its token groups, its total above.
    Returns the totals and the baseline's y."""
    draw, size = canvas.draw, row.size
    totals = np.zeros(len(row.xs)) + sum(np.asarray(masses[g], dtype=np.float64) for g in groups)
    scale = BAR_H / float(totals.max()) if len(groups) and float(totals.max()) > 0 else 0.0
    base = y + LINE_H + BAR_H
    draw.line([(row.x0, base), (row.x0 + row.width, base)], fill=AXIS)
    bar_w = max(2, int(size * 0.5))
    for t, x in enumerate(row.xs):
        left, top = x + (size - bar_w) // 2, base
        for g in groups:
            h = float(masses[g][t]) * scale
            if h > 0:
                draw.rectangle([left, top - h, left + bar_w - 1, top], fill=GROUP_COLOURS[g])
            top -= h
        value = f"{totals[t]:.3f}"
        vx = x + (size - draw.textlength(value, font=canvas.font)) / 2
        canvas.text((vx, top - LINE_H), value, size)
    return totals, base


def _draw_legend(canvas: _Canvas, groups: list[str], heat_max: float, y: int) -> None:
    """One line: the group colours, then the heat colour ramp from 0 to ``heat_max``."""
    draw, font = canvas.draw, canvas.font
    x = PAD
    for g in groups:
        draw.rectangle([x, y + 4, x + 9, y + 13], fill=GROUP_COLOURS[g])
        draw.text((x + 13, y + 2), GROUP_NAMES[g], fill=TEXT, font=font)
        x += 13 + int(draw.textlength(GROUP_NAMES[g], font=font)) + 12
    label = "patch heat 0"
    draw.text((x, y + 2), label, fill=TEXT, font=font)
    x += int(draw.textlength(label, font=font)) + 4
    ramp = colormap(np.linspace(0, 1, 80))[None].repeat(10, axis=0)
    canvas.image.paste(Image.fromarray(ramp), (x, y + 4))
    x += 84
    draw.text((x, y + 2), f"{heat_max:.4g} (per patch)", fill=TEXT, font=font)


def twin_figure(frames: Sequence[np.ndarray], captions: Sequence[str], scores: dict[str, np.ndarray], scale: int = 2) -> Image.Image:
    """Two time-reversed videos (rows of frames) with their captions, and each model's 2x2 caption-video
    cosine matrix: a model that tells the twins apart scores the diagonal above the off-diagonal."""
    font = _font()
    size = frames[0].shape[1] * scale
    count = frames[0].shape[0]
    width = PAD + count * (size + 4) + PAD
    rows_h = 2 * (LINE_H + size + PAD)
    height = PAD + rows_h + LINE_H * (1 + len(scores)) + PAD
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = PAD
    for row, (video, caption) in enumerate(zip(frames, captions)):
        draw.text((PAD, y), fit_text(draw, f"video {'AB'[row]}: \"{caption}\"", font, width - 2 * PAD), fill="black", font=font)
        y += LINE_H
        for t, frame in enumerate(video):
            tile = Image.fromarray(frame).resize((size, size), Image.NEAREST)
            image.paste(tile, (PAD + t * (size + 4), y))
        y += size + PAD
    draw.text((PAD, y), "cosine(caption, video)   A-A   A-B   B-B   B-A   twins told apart", fill="black", font=font)
    for name, s in scores.items():
        y += LINE_H
        told = int(s[0, 0] > s[0, 1]) + int(s[1, 1] > s[1, 0])
        line = f"{name}: {s[0, 0]:+.3f} {s[0, 1]:+.3f} {s[1, 1]:+.3f} {s[1, 0]:+.3f}   {told}/2"
        draw.text((PAD, y), fit_text(draw, line, font, width - 2 * PAD), fill="black", font=font)
    return image
