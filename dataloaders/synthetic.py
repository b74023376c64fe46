"""Generated videos for tests and throughput measurements (PyAV, no external tools).

`index` frames are flat gray with level `gray_level(i)`, so the frame index survives H.264,
resizing and cropping and sampling can be checked; `texture` frames are moving gradients plus
noise, closer to real footage in decoding cost.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GRAY_OFFSET, GRAY_STEP = 10, 7
MAX_INDEXED_FRAMES = (255 - GRAY_OFFSET) // GRAY_STEP + 1  # 36


def gray_level(index: int | np.ndarray) -> int | np.ndarray:
    return GRAY_OFFSET + GRAY_STEP * index


def frame_index_of_gray(level: float | np.ndarray) -> np.ndarray:
    """Inverse of `gray_level`, rounding away codec noise (< GRAY_STEP / 2)."""
    return np.rint((np.asarray(level, dtype=np.float64) - GRAY_OFFSET) / GRAY_STEP).astype(np.int64)


def _frame(index: int, width: int, height: int, pattern: str, rng: np.random.Generator) -> np.ndarray:
    if pattern == "index":
        return np.full((height, width, 3), gray_level(index), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = index * 0.3
    base = 127 + 60 * np.sin(x / 17 + phase) + 40 * np.cos(y / 11 - phase)
    channels = np.stack([base, np.roll(base, index * 3, axis=1), 255 - base], axis=-1)
    return np.clip(channels + rng.normal(0, 4, channels.shape), 0, 255).astype(np.uint8)


def add_reproducible_stream(container, codec: str, fps: int, width: int, height: int, **options: str):
    """A yuv420p video stream whose bytes depend only on the frames given to it.

    libx264's macroblock-tree rate control (its SIMD path) reads uninitialised memory on small frames, so
    by default the same frames encode to different bytes (decoding 17-24 levels apart on a 96x64 textured
    clip) depending on the process's heap history, i.e. on which test or pool worker ran before. One
    encoder thread and ``mbtree=0`` make the output byte-reproducible (tests/test_synthetic.py)."""
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.codec_context.thread_count = 1
        options = {"x264-params": "mbtree=0", **options}
    stream.options = options
    return stream


def write_video(
    path: str | Path,
    num_frames: int,
    width: int,
    height: int,
    fps: int = 3,
    pattern: str = "index",
    codec: str = "libx264",
    seed: int = 0,
) -> Path:
    """Writes a byte-reproducible H.264/yuv420p video (container from the file extension); returns its path."""
    if pattern == "index" and num_frames > MAX_INDEXED_FRAMES:
        raise ValueError(f"index pattern supports at most {MAX_INDEXED_FRAMES} frames, got {num_frames}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    import av  # at use, as dataloaders/video_io.py: the benchmark and the model tests import this module without PyAV

    with av.open(str(path), "w") as container:
        stream = add_reproducible_stream(container, codec, fps, width, height)
        for index in range(num_frames):
            image = _frame(index, width, height, pattern, rng)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path
