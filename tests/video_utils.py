"""Test helpers: tiny index-painted videos and reading the frame index back from model input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataloaders.synthetic import add_reproducible_stream, frame_index_of_gray, write_video
from models.clip import CLIP_MEAN, CLIP_STD

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


# Matroska with H.264, WebM with VP8 and VP9 (PyAV's libvpx): containers that list no frame count.
CUT_CONTAINERS = [(".mkv", "libx264"), (".webm", "libvpx"), (".webm", "libvpx-vp9")]


def write_cut_video(path: Path, codec: str, keep: float = 0.6) -> Path:
    """A 10 s, 30-frame video (3 fps) cut to its first ``keep`` share of bytes, as an interrupted copy leaves
    it: the container still says 10 s."""
    write_video(path, 30, 64, 48, fps=3, pattern="texture", codec=codec)
    path.write_bytes(path.read_bytes()[: int(keep * path.stat().st_size)])
    return path


def corrupt_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a video\x00" * 64)
    return path


QUADRANTS = np.array([[[220, 30, 30], [30, 200, 30]], [[30, 30, 220], [240, 240, 240]]], dtype=np.uint8)


def write_rotated_video(path: Path, rotation: int, size: tuple[int, int] = (64, 32), num_frames: int = 6) -> np.ndarray:
    """A video whose four quadrants are red, green (top) and blue, white (bottom), stored with a display
    rotation of ``rotation`` degrees counter-clockwise, as phones write. Returns the upright [H', W', 3] image a
    player shows."""
    import av

    width, height = size
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image = np.repeat(np.repeat(QUADRANTS, height // 2, axis=0), width // 2, axis=1)
    with av.open(str(path), "w") as container:
        stream = add_reproducible_stream(container, "libx264", 3, width, height)
        stream.set_display_rotation(rotation)
        for _ in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return np.rot90(image, rotation // 90)


def quadrant_colours(image: np.ndarray) -> np.ndarray:
    """The colour at the centre of each quadrant of an [H, W, 3] image -> [2, 2, 3] int."""
    h, w = image.shape[:2]
    return np.array([[image[h * r // 4, w * c // 4] for c in (1, 3)] for r in (1, 3)], dtype=int)
