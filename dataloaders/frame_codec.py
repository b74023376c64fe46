"""How a frame cache stores one video's frames: raw uint8 (``.npy``, bit-exact) or a JPEG stack.

A JPEG stack file is ``MAGIC | uint32 k | uint64 offsets[k + 1] | k JPEG images`` (little endian; offsets
count from the first image), so a loader reads and decodes only the frames it samples. The codec is
libjpeg-turbo (SIMD) through simplejpeg, which decoded about twice as fast as Pillow's (the same library)
in alternating runs, with less copying. Measured on 224 px crops of generated 3 fps H.264 video (docs/benchmarks.md,
"Choosing the JPEG format"): quality 90 with 4:2:0 chroma takes ~6 % of the raw bytes; max abs pixel error 16-33 at
sharp colour edges, mean ~2. On 32 px frames (the demo) 4:2:0 chroma is far worse (max error 114, trained-model
feature cosine down to 0.96) and saves only 4x: there 4:4:4 at quality 98 keeps the cosine above 0.9997, or
the raw format is the right one. The images are
standard JPEG files: any decoder reads them.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

FORMATS = ("raw", "jpeg")
SUFFIXES = {"raw": ".npy", "jpeg": ".jpgs"}
DEFAULT_JPEG_QUALITY = 90
JPEG_SUBSAMPLINGS = ("420", "444")  # chroma: halved both ways (as the source videos), or full
DEFAULT_JPEG_SUBSAMPLING = "420"
MAGIC = b"DGLJPGS1"
_HEADER = struct.Struct("<8sI")


def encode_jpeg_stack(frames: np.ndarray, quality: int, subsampling: str = DEFAULT_JPEG_SUBSAMPLING) -> bytes:
    """uint8 ``[k, 3, S, S]`` -> the bytes of a JPEG stack file (``subsampling``: one of `JPEG_SUBSAMPLINGS`)."""
    import simplejpeg  # the JPEG format's codec, needed only where that format is used (as video_io's backends)

    images = [simplejpeg.encode_jpeg(np.ascontiguousarray(frame.transpose(1, 2, 0)), quality=quality, colorspace="RGB",
                                     colorsubsampling=subsampling) for frame in frames]
    offsets = np.cumsum([0] + [len(image) for image in images], dtype="<u8")
    return _HEADER.pack(MAGIC, len(images)) + offsets.tobytes() + b"".join(images)


def _read_offsets(f: BinaryIO, path: Path) -> np.ndarray:
    magic, count = _HEADER.unpack(f.read(_HEADER.size))
    if magic != MAGIC:
        raise ValueError(f"{path} is not a JPEG stack of the frame cache (bad magic {magic!r})")
    return np.frombuffer(f.read(8 * (count + 1)), dtype="<u8")


def read_jpeg_stack(path: str | Path, indices: np.ndarray | None = None) -> np.ndarray:
    """Decodes frames ``indices`` (all when None; repeats allowed) -> uint8 ``[len, 3, S, S]``."""
    import simplejpeg

    path = Path(path)
    with open(path, "rb") as f:
        offsets = _read_offsets(f, path)
        start = f.tell()
        wanted = np.arange(len(offsets) - 1) if indices is None else np.asarray(indices)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= len(offsets) - 1):
            raise ValueError(f"{path} holds {len(offsets) - 1} frames; asked for index {wanted.max()}")
        decoded: dict[int, np.ndarray] = {}
        for index in np.unique(wanted).tolist():
            f.seek(start + int(offsets[index]))
            decoded[index] = simplejpeg.decode_jpeg(f.read(int(offsets[index + 1] - offsets[index])), colorspace="RGB")
    if not decoded:
        raise ValueError(f"{path} holds no frames")
    height, width, _ = next(iter(decoded.values())).shape
    out = np.empty((len(wanted), 3, height, width), dtype=np.uint8)
    for row, index in enumerate(wanted.tolist()):
        out[row] = decoded[index].transpose(2, 0, 1)
    return out


def encode_frames(frames: np.ndarray, fmt: str, quality: int | None, subsampling: str | None) -> bytes:
    """The file content of one video's uint8 ``[k, 3, S, S]`` frames in cache format ``fmt`` (the jpeg options
    are given for jpeg only, as `CacheSettings` holds them)."""
    if fmt == "jpeg":
        return encode_jpeg_stack(frames, quality, subsampling)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(frames, dtype=np.uint8))
    return buffer.getvalue()


def read_frames(path: str | Path, fmt: str, indices: np.ndarray | None = None) -> np.ndarray:
    """Frames ``indices`` (all when None) of a file written by `encode_frames`."""
    if fmt == "jpeg":
        return read_jpeg_stack(path, indices)
    if indices is None:
        return np.load(path)
    return np.array(np.load(path, mmap_mode="r")[indices])  # memory-mapped: only the picked frames are read
