"""Test helpers: tiny index-painted videos and reading the frame index back from model input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataloaders.synthetic import frame_index_of_gray, write_video
from dataloaders.transforms import CLIP_MEAN, CLIP_STD

SMALL = (64, 40)  # width, height of test videos: short side 40, resized to the test resolution


def write_index_video(path: Path, num_frames: int, size: tuple[int, int] = SMALL, fps: int = 3) -> Path:
    """Frame i is flat gray level 10 + 7 i (see dataloaders.synthetic)."""
    return write_video(path, num_frames, size[0], size[1], fps=fps)


def indices_of_frames(frames: np.ndarray) -> np.ndarray:
    """Frame indices of decoded RGB uint8 frames [k, H, W, 3]."""
    return frame_index_of_gray(frames.reshape(len(frames), -1).mean(axis=1))


def indices_of_video(video: torch.Tensor) -> np.ndarray:
    """Frame indices of a model input [T, 3, S, S]: uint8 pixels, or CLIP-normalised floats (undone here)."""
    if video.dtype == torch.uint8:
        pixels = video.float()
    else:
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        pixels = (video * std + mean) * 255.0
    return frame_index_of_gray(pixels.flatten(1).mean(dim=1).numpy())


def corrupt_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a video\x00" * 64)
    return path
