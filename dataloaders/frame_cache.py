"""An on-disk store of decoded, resized and cropped frames, so each video is decoded only once.

Layout of a cache folder:
  manifest.json  settings (resolution, frames per video or "all", storage format) and one entry per
                 video: the source file, its size, mtime and SHA256 when cached, the frame count n of
                 its window and the bytes stored.
  manifest.journal  entries of videos finished since the last manifest save, one JSON line each (an
                 interrupted build resumes from them; `save` folds them into the manifest).
  frames/xx/<key>.npy or .jpgs  [k, 3, S, S] per video: the T evaluation frames (segment centres,
                 k = T) or every frame of the window (k = n), which also serves TSN training; raw
                 uint8 or a JPEG stack (dataloaders/frame_codec.py).
The key hashes the source path and time window. A source whose size or mtime changed since caching
makes the cache stale: loaders refuse it, `preprocess/cache_frames.py` re-decodes those videos. A file
replaced by one of the same size and mtime (a copy that keeps times) passes that check; `cache_frames.py
--verify` also compares each source's SHA256 with the one stored (entries without one are re-decoded).
Manifests written before the format field existed read as raw.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dataloaders.frame_codec import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_JPEG_SUBSAMPLING,
    FORMATS,
    JPEG_SUBSAMPLINGS,
    SUFFIXES,
    encode_frames,
    read_frames,
)
from dataloaders.splits import Window
from models.files import atomic_write, sha256_of_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "manifest.journal"
REBUILD_HINT = "python -m preprocess.cache_frames (same data flags, --frame_cache DIR)"


class FrameCacheError(RuntimeError):
    """The cache does not fit the requested settings or is older than its source videos."""


@dataclass(frozen=True)
class CacheSettings:
    resolution: int
    num_frames: int | None  # None: every frame of each window is stored
    format: str = "raw"  # raw (uint8 .npy, bit-exact) or jpeg (JPEG stack)
    jpeg_quality: int | None = None  # set for the jpeg format only
    jpeg_subsampling: str | None = None  # set for the jpeg format only: "420" or "444"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise FrameCacheError(f"unknown frame cache format {self.format!r}. Fix: --frame_cache_format {' or '.join(FORMATS)}.")
        if (self.format == "jpeg") != (self.jpeg_quality is not None) or not 1 <= (self.jpeg_quality or 1) <= 100:
            raise FrameCacheError(f"--jpeg_quality must be 1..100 with the jpeg format only, got {self.jpeg_quality} for {self.format}")
        if (self.format == "jpeg") != (self.jpeg_subsampling is not None) or self.jpeg_subsampling not in (None, *JPEG_SUBSAMPLINGS):
            raise FrameCacheError(f"--jpeg_subsampling must be one of {JPEG_SUBSAMPLINGS} with the jpeg format only, "
                                  f"got {self.jpeg_subsampling} for {self.format}")

    @classmethod
    def of(cls, resolution: int, num_frames: int | None, fmt: str = "raw", jpeg_quality: int | None = None,
           jpeg_subsampling: str | None = None) -> "CacheSettings":
        """Settings with the jpeg options filled in (defaults) for the jpeg format and dropped for raw."""
        if fmt != "jpeg":
            return cls(resolution, num_frames, fmt)
        return cls(resolution, num_frames, fmt, jpeg_quality or DEFAULT_JPEG_QUALITY, jpeg_subsampling or DEFAULT_JPEG_SUBSAMPLING)

    @classmethod
    def from_manifest(cls, stored: dict) -> "CacheSettings":
        """Manifests written before the subsampling option hold 4:2:0 JPEG stacks."""
        if stored.get("format") == "jpeg":
            stored = {"jpeg_subsampling": DEFAULT_JPEG_SUBSAMPLING, **stored}
        return cls(**stored)

    def encode(self, frames: np.ndarray) -> bytes:
        """One video's uint8 ``[k, 3, S, S]`` frames as stored by a cache of these settings."""
        return encode_frames(frames, self.format, self.jpeg_quality, self.jpeg_subsampling)

    def describe(self) -> str:
        frames = "all frames" if self.num_frames is None else f"{self.num_frames} evaluation frames"
        stored = "raw" if self.format == "raw" else f"JPEG q{self.jpeg_quality} {':'.join(self.jpeg_subsampling)}"
        return f"resolution {self.resolution}, {frames} per video, {stored}"


@dataclass(frozen=True)
class CacheEntry:
    file: str  # relative to the cache folder
    source: str
    size: int
    mtime_ns: int
    valid_frames: int  # n: frames of the video's window
    bytes: int = 0  # size of the stored file (0 in manifests older than this field)
    sha256: str = ""  # of the source when cached ("" in manifests older than this field)


def source_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def source_sha256(path: Path) -> str:
    """SHA256 of a source video's bytes (read afresh: no per-process memo keyed by size and mtime)."""
    return sha256_of_file(path)


def cache_key(path: Path, window: Window) -> str:
    text = f"{Path(path).resolve()}|{window[0]}|{window[1]}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:24]


class FrameCache:
    def __init__(self, root: str | Path, settings: CacheSettings, entries: dict[str, CacheEntry] | None = None) -> None:
        self.root = Path(root)
        self.settings = settings
        self.entries = entries or {}

    @classmethod
    def open(cls, root: str | Path) -> "FrameCache":
        """Reads an existing cache; a folder without manifest is an error."""
        manifest = Path(root) / MANIFEST
        if not manifest.is_file():
            raise FrameCacheError(f"no frame cache at {root} ({MANIFEST} missing). Fix: build it with {REBUILD_HINT}.")
        data = json.loads(manifest.read_text())
        if data.get("version") != FORMAT_VERSION:
            raise FrameCacheError(
                f"{manifest} has format version {data.get('version')}, expected {FORMAT_VERSION}. Fix: rebuild with {REBUILD_HINT} --rebuild."
            )
        settings = CacheSettings.from_manifest(data["settings"])
        entries = {key: CacheEntry(**entry) for key, entry in data["entries"].items()}
        return cls(root, settings, entries | read_journal(Path(root) / JOURNAL))

    @classmethod
    def open_or_create(cls, root: str | Path, settings: CacheSettings, rebuild: bool = False) -> "FrameCache":
        """For the builder: an existing cache must have the same settings unless `rebuild`."""
        if not (Path(root) / MANIFEST).is_file():
            return cls(root, settings)
        cache = cls.open(root)
        if cache.settings == settings:
            return cache
        if not rebuild:
            raise FrameCacheError(
                f"{root} holds a cache with {cache.settings.describe()}, not {settings.describe()}. "
                "Fix: choose another --frame_cache folder, or pass --rebuild to replace it."
            )
        for entry in cache.entries.values():
            (cache.root / entry.file).unlink(missing_ok=True)
        (cache.root / JOURNAL).unlink(missing_ok=True)
        return cls(root, settings)

    def serves(self, num_frames: int, train: bool) -> bool:
        """Whether the stored frames can feed T = num_frames slots in this mode."""
        return self.settings.num_frames is None or (not train and self.settings.num_frames == num_frames)

    def lookup(self, path: Path, window: Window) -> CacheEntry | None:
        """The entry of a video, None if not cached; raises when the source changed since caching."""
        entry = self.entries.get(cache_key(path, window))
        if entry is None:
            return None
        if source_stamp(path) != (entry.size, entry.mtime_ns):
            raise FrameCacheError(
                f"frame cache {self.root} is stale: {path} changed since it was cached. "
                f"Fix: re-run {REBUILD_HINT}, which re-decodes the changed videos."
            )
        return entry

    def is_fresh(self, path: Path, window: Window, verify: bool = False) -> bool:
        """Cached from the file as it is: same size and mtime, and with ``verify`` the same SHA256."""
        try:
            entry = self.lookup(path, window)
            return entry is not None and (not verify or entry.sha256 == source_sha256(path))
        except (FrameCacheError, OSError):
            return False

    def load(self, entry: CacheEntry, pick: Callable[[int], np.ndarray]) -> tuple[np.ndarray, int]:
        """(uint8 frames [T, 3, S, S], n) as `read_video` + `resize_and_crop` would give them (for the
        jpeg format, within its coding error)."""
        indices = pick(entry.valid_frames) if self.settings.num_frames is None else None
        return read_frames(self.root / entry.file, self.settings.format, indices), entry.valid_frames

    def write_frames(self, path: Path, window: Window, frames: np.ndarray, valid_frames: int, stamp: tuple[int, int],
                     sha256: str) -> tuple[str, CacheEntry]:
        """Stores one video's frames (atomically); the manifest is updated by `record` + `save`. ``stamp`` and
        ``sha256`` are the source's, taken before decoding (a file changed meanwhile then reads as stale)."""
        key = cache_key(path, window)
        relative = f"frames/{key[:2]}/{key}{SUFFIXES[self.settings.format]}"
        content = self.settings.encode(frames)
        atomic_write(self.root / relative, lambda f: f.write(content))
        size, mtime_ns = stamp
        return key, CacheEntry(relative, str(Path(path).resolve()), size, mtime_ns, valid_frames, len(content), sha256)

    def record(self, key: str, entry: CacheEntry) -> None:
        """Adds a finished video, also to the journal at once, so an interrupted build keeps it."""
        self.entries[key] = entry
        with open(self.root / JOURNAL, "a") as f:
            f.write(json.dumps({"key": key, **asdict(entry)}) + "\n")

    def save(self) -> None:
        """Writes the manifest (settings and all entries) and then drops the journal it now contains."""
        data = {
            "version": FORMAT_VERSION,
            "settings": asdict(self.settings),
            "entries": {key: asdict(entry) for key, entry in self.entries.items()},
        }
        atomic_write(self.root / MANIFEST, lambda f: json.dump(data, f), mode="w")
        (self.root / JOURNAL).unlink(missing_ok=True)


def read_journal(path: Path) -> dict[str, CacheEntry]:
    """Entries of a journal; a last line cut short by an interruption is ignored."""
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        try:
            fields = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = fields.pop("key")
        entries[key] = CacheEntry(**fields)
    return entries
