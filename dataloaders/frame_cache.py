"""An on-disk store of decoded, resized and cropped frames, so each video is decoded only once.

Layout of a cache folder:
  manifest.json  settings (resolution, frames per video or "all") and one entry per video: the
                 source file, its size and mtime when cached, and the frame count n of its window.
  frames/xx/<key>.npy  uint8 [k, 3, S, S] per video: the T evaluation frames (segment centres,
                 k = T) or every frame of the window (k = n), which also serves TSN training.
The key hashes the source path and time window. A source whose size or mtime changed since caching
makes the cache stale: loaders refuse it, `preprocess/cache_frames.py` re-decodes those videos.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dataloaders.splits import Window
from models.files import atomic_write

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REBUILD_HINT = "python -m preprocess.cache_frames (same data flags, --frame_cache DIR)"


class FrameCacheError(RuntimeError):
    """The cache does not fit the requested settings or is older than its source videos."""


@dataclass(frozen=True)
class CacheSettings:
    resolution: int
    num_frames: int | None  # None: every frame of each window is stored

    def describe(self) -> str:
        frames = "all frames" if self.num_frames is None else f"{self.num_frames} evaluation frames"
        return f"resolution {self.resolution}, {frames} per video"


@dataclass(frozen=True)
class CacheEntry:
    file: str  # relative to the cache folder
    source: str
    size: int
    mtime_ns: int
    valid_frames: int  # n: frames of the video's window


def source_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


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
        settings = CacheSettings(**data["settings"])
        return cls(root, settings, {key: CacheEntry(**entry) for key, entry in data["entries"].items()})

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

    def is_fresh(self, path: Path, window: Window) -> bool:
        try:
            return self.lookup(path, window) is not None
        except (FrameCacheError, OSError):
            return False

    def load(self, entry: CacheEntry, pick: Callable[[int], np.ndarray]) -> tuple[np.ndarray, int]:
        """(uint8 frames [T, 3, S, S], n) as `read_video` + `resize_and_crop` would give them."""
        if self.settings.num_frames is None:  # memory-mapped: only the picked frames are read
            frames = np.load(self.root / entry.file, mmap_mode="r")
            return np.array(frames[pick(entry.valid_frames)]), entry.valid_frames
        return np.load(self.root / entry.file), entry.valid_frames

    def write_frames(self, path: Path, window: Window, frames: np.ndarray, valid_frames: int, stamp: tuple[int, int]) -> tuple[str, CacheEntry]:
        """Stores one video's frames (atomically); the manifest is updated by `add` + `save`."""
        key = cache_key(path, window)
        relative = f"frames/{key[:2]}/{key}.npy"
        atomic_write(self.root / relative, lambda f: np.save(f, np.ascontiguousarray(frames, dtype=np.uint8)))
        size, mtime_ns = stamp
        return key, CacheEntry(relative, str(Path(path).resolve()), size, mtime_ns, valid_frames)

    def add(self, key: str, entry: CacheEntry) -> None:
        self.entries[key] = entry

    def save(self) -> None:
        data = {
            "version": FORMAT_VERSION,
            "settings": asdict(self.settings),
            "entries": {key: asdict(entry) for key, entry in self.entries.items()},
        }
        atomic_write(self.root / MANIFEST, lambda f: json.dump(data, f), mode="w")
