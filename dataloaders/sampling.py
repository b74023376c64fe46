"""Which frames of an n-frame video feed the model's T frame slots (official rules, spec 3.2)."""
from __future__ import annotations

import numpy as np


def segment_centres(n: int, num_frames: int) -> np.ndarray:
    """Evaluation: the centre of each of T equal segments; short videos repeat their last frame."""
    if n > num_frames:
        tick = n / num_frames
        return (tick / 2.0 + tick * np.arange(num_frames)).astype(np.int64)
    return np.minimum(np.arange(num_frames), n - 1)


def segment_random(n: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Training (TSN): one random frame inside each of T segments of n // T frames; frames past
    T * (n // T) are never drawn, as in the reference. Short videos repeat their last frame."""
    segment = n // num_frames
    if segment > 0:
        return np.arange(num_frames) * segment + rng.integers(0, segment, size=num_frames)
    return np.minimum(np.arange(num_frames), n - 1)


def frame_mask(n: int, num_frames: int) -> np.ndarray:
    """1 for the first min(n, T) slots (distinct frames), 0 for repeats of the last frame."""
    return (np.arange(num_frames) < n).astype(np.int64)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training item: reproducible per (seed, epoch, index), whatever the
    worker or the order in which items are loaded."""
    return np.random.default_rng([seed, epoch, index])
