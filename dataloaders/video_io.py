"""Reading selected frames of a video file through decord, PyAV or torchcodec.

Every backend offers the same small interface (`VideoReader`): an exact frame count, the average
frame rate and random access by frame index. Only the requested frames are converted to RGB and
decoding stops after the last one; seeking skips groups of pictures that hold no requested frame
(PyAV seeks by timestamp, except in AVI files, which have none and are read from the start).

Frames come out upright: a display rotation (the matrix phones write instead of rotating the pixels)
is applied, as players and the ffmpeg command line do. Its mirror flags, which phones do not write,
are not applied.
"""
from __future__ import annotations

import bisect
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from dataloaders.splits import Window

T = TypeVar("T")


# File extensions taken for videos when scanning folders (compared lower-case).
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .3gp .3g2 .mpg .mpeg .m2v .mpe .ts .mts .m2ts .wmv .asf .flv .f4v .ogv .vob .dv .mxf"
    .split()
)


class VideoReadError(RuntimeError):
    """A video could not be opened or decoded by any of the tried backends."""


class TruncatedVideo(ValueError):
    """The file holds fewer frames than its container declares (an interrupted copy or download). No other
    backend is tried: the file itself is short, and e.g. decord reads such Matroska files as if whole."""


# A video counts as whole when its frames span the declared length up to this many frame periods plus this
# share of it: containers round durations (Matroska to 1 ms) and some omit the last frame's duration.
TRUNCATION_FRAMES, TRUNCATION_SHARE = 2, 0.01
# Containers whose duration is written in the file (not estimated from the bit rate, as FFmpeg may for MPEG-TS
# or MPEG-PS): only their duration is held against the frames present.
STORED_DURATION_FORMATS = frozenset({"matroska", "webm", "mov", "mp4"})


def _parse_duration_tag(tag: str) -> float | None:
    """Seconds of a Matroska ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``, written per track by FFmpeg and
    mkvmerge); None when it does not parse."""
    try:
        hours, minutes, seconds = tag.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def demux_complete(container, stream) -> list[tuple[int | None, bool]]:
    """(pts, keyframe) of the video stream's packets in decode order, after checking that the file holds
    what its container declares: the frame count where the container lists one (MP4, AVI), else, in the
    `STORED_DURATION_FORMATS`, the duration (the track's own, or for Matroska/WebM its ``DURATION`` tag, or the
    whole file's against the end of all its streams). Raises TruncatedVideo otherwise. Only demuxes."""
    packets, spans = [], {}
    for packet in container.demux():
        if packet.size == 0:  # flush packets
            continue
        if packet.stream.index == stream.index:
            packets.append((packet.pts, packet.is_keyframe))
        if packet.pts is not None and packet.time_base:
            start = float(packet.pts * packet.time_base)
            end = start + float((packet.duration or 0) * packet.time_base)
            first, last = spans.get(packet.stream.index, (start, end))
            spans[packet.stream.index] = (min(first, start), max(last, end))
    declared_frames = stream.frames  # the container's index (0 when it has none, e.g. Matroska)
    if declared_frames:
        if 0 < len(packets) < declared_frames:
            raise TruncatedVideo(
                f"truncated: the container lists {declared_frames} frames but holds only {len(packets)}; "
                "re-copy or re-encode it"
            )
        return packets
    if not STORED_DURATION_FORMATS & set(container.format.name.split(",")):
        return packets
    declared, span = None, spans.get(stream.index)
    if stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
    elif stream.metadata.get("DURATION"):
        declared = _parse_duration_tag(stream.metadata["DURATION"])
    elif container.duration and spans:  # the whole file: compare with the end of its longest stream
        declared = container.duration / 1e6
        span = (min(s for s, _ in spans.values()), max(e for _, e in spans.values()))
    rate = stream.average_rate or stream.guessed_rate
    period = 1 / float(rate) if rate else 0.1
    if declared and span and span[1] - span[0] < declared - TRUNCATION_FRAMES * period - TRUNCATION_SHARE * declared:
        expected = f" (about {round(declared / period)} frames)" if rate else ""
        raise TruncatedVideo(
            f"truncated: the container says the video lasts {declared:.2f} s{expected} but its {len(packets)} "
            f"frames span only {span[1] - span[0]:.2f} s; re-copy or re-encode it"
        )
    return packets


def check_complete(path: str | Path) -> None:
    """Raises TruncatedVideo when ``path`` holds fewer frames than its container declares (PyAV)."""
    import av

    with av.open(str(path)) as container:
        if container.streams.video:
            demux_complete(container, container.streams.video[0])


class VideoReader(Protocol):
    num_frames: int
    fps: float

    def read(self, indices: np.ndarray) -> np.ndarray:
        """RGB frames uint8 [len(indices), H, W, 3] for sorted, unique frame indices."""

    def close(self) -> None: ...


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """[N, H, W, 3] frames turned ``rotation`` degrees counter-clockwise (PyAV's ``VideoFrame.rotation``,
    rounded to quarter turns), i.e. as a player shows them."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frames, turns, axes=(1, 2))) if turns else frames


class DecordReader:
    """decord with one decoding thread (DataLoader workers already run in parallel). decord applies the
    display rotation itself. Truncation is checked with PyAV where it is installed (one extra demux)."""

    def __init__(self, path: Path) -> None:
        import decord

        refusal = decord_refusal(path)
        if refusal:
            raise ValueError(refusal)
        if importlib.util.find_spec("av") is not None:
            check_complete(path)  # decord reads a cut Matroska/WebM file as if whole
        self._video = decord.VideoReader(str(path), num_threads=1)
        self.num_frames = len(self._video)
        self.fps = float(self._video.get_avg_fps())

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._video.get_batch(indices.tolist()).asnumpy()

    def close(self) -> None:
        del self._video


def decord_refusal(path: Path) -> str | None:
    """Why decord must not read ``path``: in AVI files with B-frames (as PyAV reports them) it seeks to other
    frames than asked (AVI has no timestamps). None when decord is safe; all AVI files when PyAV is absent."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    if importlib.util.find_spec("av") is not None:
        import av

        with av.open(str(path)) as container:
            video = container.streams.video
            if not video or not video[0].codec_context.has_b_frames:
                return None
    return ("decord returns other frames than asked in AVI files with B-frames (they carry no timestamps); "
            "use --video_backend pyav or auto")


class PyAVReader:
    """PyAV. The frame table comes from demuxing the packets (no decoding), never from the
    container's frame count, which is 0 for e.g. Matroska/WebM (reference bug 36); a file holding less
    than its container declares is refused (`demux_complete`)."""

    def __init__(self, path: Path) -> None:
        import av

        self._path = path
        self._container = av.open(str(path))
        try:
            if not self._container.streams.video:
                raise ValueError("the file has no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = 1  # DataLoader workers already run in parallel
            packets = demux_complete(self._container, self._stream)
        except BaseException:
            self._container.close()
            raise
        self.num_frames = len(packets)
        self._rotation = 0  # read from the decoded frames
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        # AVI stores no presentation timestamps (PyAV reports made-up, decode-ordered ones).
        trusted = "avi" not in self._container.format.name.split(",")
        if trusted and packets and all(pts is not None for pts, _ in packets):
            # Packets come in decode order; sorted pts are the frames in presentation order.
            self._pts = sorted(pts for pts, _ in packets)
            self._frame_of_pts = {pts: i for i, pts in enumerate(self._pts)}
            self._keyframes = sorted(self._frame_of_pts[pts] for pts, key in packets if key)
        else:
            self._pts = None  # frames are counted while decoding from the start

    def read(self, indices: np.ndarray) -> np.ndarray:
        wanted = indices.tolist()
        frames = None
        if self._pts is not None and self._keyframes:
            frames = self._read_by_pts(wanted)
        if frames is None:
            frames = self._read_in_order(wanted)
        absent = [i for i in wanted if i not in frames]
        if absent:
            raise ValueError(f"the decoder produced no frame for indices {absent[:5]} of {self.num_frames}")
        return upright(np.stack([frames[i] for i in wanted]), self._rotation)

    def _read_by_pts(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Seeks by timestamp; None when decoded timestamps go backwards (made-up timestamps), in
        which case frames can only be counted from the start."""
        keep = set(wanted)
        frames: dict[int, np.ndarray] = {}
        decoded = None
        position = -1  # index of the last frame the decoder returned
        for target in wanted:
            if target in frames:
                continue
            keyframe = self._keyframes[max(bisect.bisect_right(self._keyframes, target) - 1, 0)]
            # Seek when a keyframe lies between the decoder and the target (skips whole GOPs).
            if decoded is None or position < keyframe or position >= target:
                self._container.seek(self._pts[keyframe], stream=self._stream, backward=True)
                decoded = self._container.decode(self._stream)
                previous_pts = None
            for frame in decoded:
                if frame.pts is not None and previous_pts is not None and frame.pts <= previous_pts:
                    return None
                previous_pts = frame.pts
                index = self._frame_of_pts.get(frame.pts)
                if index is None:
                    continue
                position = index
                if index in keep and index not in frames:
                    frames[index] = frame.to_ndarray(format="rgb24")
                    self._rotation = frame.rotation
                if index >= target:
                    break
        return frames

    def _read_in_order(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import av

        self._container.close()  # reopen rather than seek: files without timestamps may not seek
        self._container = av.open(str(self._path))
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = 1
        keep, last = set(wanted), max(wanted)
        frames = {}
        for index, frame in enumerate(self._container.decode(self._stream)):
            if index in keep:
                frames[index] = frame.to_ndarray(format="rgb24")
                self._rotation = frame.rotation
            if index >= last:
                break
        return frames

    def close(self) -> None:
        self._container.close()


class TorchCodecReader:
    """torchcodec (optional; only offered when the package is importable). Whether it applies the display
    rotation is torchcodec's choice: not checked here, as it is not installed in this project's environment."""

    def __init__(self, path: Path) -> None:
        from torchcodec.decoders import VideoDecoder

        self._decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
        self.num_frames = int(self._decoder.metadata.num_frames or 0)
        self.fps = float(self._decoder.metadata.average_fps or 0.0)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._decoder.get_frames_at(indices=indices.tolist()).data.numpy()

    def close(self) -> None:
        del self._decoder


_BACKENDS: dict[str, tuple[str, Callable[[Path], VideoReader]]] = {
    "decord": ("decord", DecordReader),
    "pyav": ("av", PyAVReader),
    "torchcodec": ("torchcodec", TorchCodecReader),
}
# PyAV first: as fast as decord here, and decord silently returns wrong frames when seeking in
# AVI files with B-frames (their timestamps are made up); decord stays the fallback.
AUTO_ORDER = ("pyav", "decord")


def available_backends() -> list[str]:
    return [name for name, (module, _) in _BACKENDS.items() if importlib.util.find_spec(module) is not None]


def backend_order(backend: str) -> list[str]:
    """Backends to try in turn: the named one alone, or for "auto" every importable one of AUTO_ORDER."""
    available = available_backends()
    if backend == "auto":
        order = [name for name in AUTO_ORDER if name in available]
    elif backend in _BACKENDS:
        order = [backend] if backend in available else []
    else:
        raise ValueError(f"unknown video backend {backend!r}; choose auto, {', '.join(_BACKENDS)}")
    if not order:
        raise VideoReadError(f"video backend {backend!r} is not installed (available: {available or 'none'})")
    return order


def window_frames(num_frames: int, fps: float, window: Window) -> tuple[int, int]:
    """First and last frame index (inclusive) inside a (start, end) window in seconds."""
    start, end = window
    first, last = 0, num_frames - 1
    if start is not None or end is not None:
        if fps <= 0:
            raise ValueError("the stream has no frame rate, so a time window cannot be applied")
        if start is not None:
            first = max(math.floor(start * fps), 0)
        if end is not None:
            last = min(math.floor(end * fps), last)
    if first > last:
        raise ValueError(f"time window {window} s selects none of the {num_frames} frames at {fps:g} fps")
    return first, last


@dataclass(frozen=True)
class VideoProbe:
    """A readable video as a preparation check sees it: frames in its window, frame rate, upright size."""

    frames: int
    fps: float
    height: int
    width: int


def _with_reader(path: str | Path, backend: str, use: Callable[[VideoReader], T]) -> T:
    """`use(reader)` with the first backend of `backend_order(backend)` that opens the file and for which it
    succeeds; if every backend fails, one VideoReadError lists every reason."""
    path = Path(path)
    errors = []
    for name in backend_order(backend):
        try:
            reader = _BACKENDS[name][1](path)
        except TruncatedVideo as err:
            raise VideoReadError(f"cannot decode {path}: {name}: {err}") from err
        except Exception as err:  # noqa: BLE001 - each backend raises its own error types
            errors.append(f"{name}: {err}")
            continue
        try:
            if reader.num_frames <= 0:
                raise ValueError("the video has no frames")
            return use(reader)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{name}: {err}")
        finally:
            reader.close()
    raise VideoReadError(f"cannot decode {path}: " + "; ".join(errors))


def read_video(
    path: str | Path,
    pick: Callable[[int], np.ndarray],
    window: Window = (None, None),
    backend: str = "auto",
) -> tuple[np.ndarray, int]:
    """Decodes the frames `pick(n)` chooses among the n frames of the window.

    Returns (frames uint8 [len(indices), H, W, 3] in the order of the indices, n). Each backend
    of `backend_order(backend)` is tried in turn; if all fail, one error lists every reason.
    """
    def use(reader: VideoReader) -> tuple[np.ndarray, int]:
        first, last = window_frames(reader.num_frames, reader.fps, window)
        n = last - first + 1
        indices = np.asarray(pick(n), dtype=np.int64)
        unique, inverse = np.unique(indices, return_inverse=True)
        return reader.read(unique + first)[inverse], n

    return _with_reader(path, backend, use)


def probe_video_file(path: str | Path, window: Window = (None, None), backend: str = "auto") -> VideoProbe:
    """Opens the container and decodes the window's first and last frame, as start-up validation does
    (any sampled frame lies between them); VideoReadError when no backend can."""
    def use(reader: VideoReader) -> VideoProbe:
        first, last = window_frames(reader.num_frames, reader.fps, window)
        frames = reader.read(np.unique(np.array([first, last], dtype=np.int64)))
        return VideoProbe(last - first + 1, reader.fps, frames.shape[1], frames.shape[2])

    return _with_reader(path, backend, use)
