"""The on-disk video index: a folder holding ``index.json`` (the model's identity, the videos' root and how to
rebuild the model) plus append-only shards, each written atomically and recording the files it covers by
(relative path, size, mtime). Reading an index needs no model; the identity says which model's features it holds.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataloaders.video_io import VIDEO_EXTENSIONS
from models.backbone import DEFAULT_BACKBONE
from models.checkpoint import atomic_save, backbone_fingerprint
from models.files import atomic_write
from models.dgl import DGL

INDEX_FORMAT = "dgl-video-index-v1"
MANIFEST = "index.json"
CAPTIONS = "captions.json"  # optional: {relative path: [captions]} of indexed videos, e.g. a split's annotations
SHARD_GLOB = "shard-*.pt"
PathLike = str | os.PathLike
Paths = PathLike | Sequence[PathLike]


class IndexModelMismatch(ValueError):
    """The index was built with another model: its features and this model's queries are not comparable."""


# ------------------------------------------------------------------------------------------------ files
def find_videos(paths: Paths) -> list[Path]:
    """Video files (by extension, any case) among the given files and, recursively, under the given folders;
    hidden files and folders (e.g. macOS ``._x.mp4``) are left out. Resolved, deduplicated, sorted."""
    found: set[Path] = set()
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = Path(path).expanduser().resolve()
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            for folder, subdirs, files in os.walk(path):
                subdirs[:] = [d for d in subdirs if not d.startswith(".")]
                found.update(
                    Path(folder, f) for f in files if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS
                )
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(found)


def common_root(paths: Paths) -> Path:
    """The folder the index keys are relative to: the given folder, or the deepest one holding all paths."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    resolved = [Path(p).expanduser().resolve() for p in paths]
    return Path(os.path.commonpath([p if p.is_dir() else p.parent for p in resolved]))


@dataclass(frozen=True)
class FileStamp:
    """What identifies an indexed file: a changed size or mtime means it must be encoded again."""

    rel: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, root: Path) -> "FileStamp":
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            raise ValueError(f"{path} lies outside the index's video root {root}; index it into another folder") from None
        stat = path.stat()
        return cls(rel, stat.st_size, stat.st_mtime_ns)

    def row(self) -> list:
        return [self.rel, self.size, self.mtime_ns]



# ------------------------------------------------------------------------------------------ model identity
def model_identity(model: DGL) -> dict[str, Any]:
    """What makes two models' video features interchangeable: the trainable tensors, the backbone, the DGL
    config (T, prompt sizes, output type) and the input resolution. Equal for an official checkpoint and our
    compact copy of it."""
    h = hashlib.sha256()
    for name, value in sorted(model.trainable_parameters().items()):
        h.update(f"{name}{tuple(value.shape)}".encode())
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return {
        "prompts": h.hexdigest()[:16],
        "backbone": backbone_fingerprint(model.clip),
        "dgl_config": model.config.to_dict(),
        "resolution": model.clip.config.image_resolution,
    }


def describe_identity(identity: dict[str, Any]) -> str:
    c = identity["dgl_config"]
    return (
        f"prompts {identity['prompts']}, {c['backbone']} backbone {identity['backbone']}, {c['shared_latent_space']} variant, "
        f"T={c['max_frames']}, {identity['resolution']} px, {c['visual_output_type']}"
    )


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diff = [k for k in ("prompts", "backbone", "resolution") if a[k] != b[k]]
    return diff + [f"dgl_config.{k}" for k in a["dgl_config"] if a["dgl_config"][k] != b["dgl_config"].get(k)]


# ------------------------------------------------------------------------------------------------ the index
def read_manifest(folder: PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a video index (no {MANIFEST}); build one with `retrieve.py index`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {INDEX_FORMAT!r}")
    manifest["model"]["dgl_config"].setdefault("backbone", DEFAULT_BACKBONE)  # indexes from before the name was kept
    return manifest


def read_captions(folder: PathLike) -> dict[str, list[str]]:
    """The index's stored captions ({relative path: [captions]}), or {} when it has none."""
    path = Path(folder) / CAPTIONS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def add_captions(folder: PathLike, captions: dict[str, list[str]]) -> None:
    """Store captions of indexed videos (relative path -> captions), replacing those of the same videos."""
    merged = {**read_captions(folder), **captions}
    atomic_write(Path(folder) / CAPTIONS, lambda f: json.dump(merged, f, indent=1, ensure_ascii=False), mode="w")


def write_shard(folder: Path, done: list[tuple[FileStamp, torch.Tensor]], failed: list[tuple[FileStamp, str]]) -> Path:
    """One more shard, atomically, numbered after the last: a crash leaves either all of it or none. The random
    suffix keeps two runs that race for a number from replacing each other's shard."""
    numbers = [int(p.stem.split("-")[1]) for p in folder.glob(SHARD_GLOB)]
    path = folder / f"shard-{max(numbers, default=-1) + 1:06d}-{secrets.token_hex(4)}.pt"
    features = torch.stack([f for _, f in done]) if done else torch.empty(0)
    atomic_save(
        {"files": [s.row() for s, _ in done], "features": features, "failed": [[*s.row(), e] for s, e in failed]}, path
    )
    return path


@dataclass
class VideoIndex:
    """A loaded index: the encoded videos (sorted by path) and the files that could not be decoded.

    Shards are read in order and the newest record of a path wins, so a re-encoded (changed) file
    replaces its old feature."""

    folder: Path
    manifest: dict[str, Any]
    stamps: list[FileStamp]
    features: torch.Tensor  # [N, E] float32, as the model gave them
    failed: dict[str, tuple[FileStamp, str]] = field(default_factory=dict)
    _positions: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    def paths(self) -> list[Path]:
        return [self.root / s.rel for s in self.stamps]

    def __len__(self) -> int:
        return len(self.stamps)

    def position(self, rel: str) -> int:
        """Row of the video ``rel`` (path relative to the root, as indexed); KeyError if it is not indexed."""
        if self._positions is None:
            self._positions = {s.rel: i for i, s in enumerate(self.stamps)}
        return self._positions[rel]

    @classmethod
    def load(cls, folder: PathLike) -> "VideoIndex":
        folder = Path(folder)
        manifest = read_manifest(folder)
        latest: dict[str, tuple[FileStamp, torch.Tensor | None, str | None]] = {}
        for shard_path in sorted(folder.glob(SHARD_GLOB)):
            shard = torch.load(shard_path, map_location="cpu", weights_only=True)
            for row, feature in zip(shard["files"], shard["features"]):
                latest[row[0]] = (FileStamp(*row), feature, None)
            for *row, error in shard["failed"]:
                latest[row[0]] = (FileStamp(*row), None, error)
        done = sorted(((s, f) for s, f, _ in latest.values() if f is not None), key=lambda x: x[0].rel)
        features = torch.stack([f for _, f in done]).float() if done else torch.empty(0, manifest["dim"])
        failed = {s.rel: (s, e) for s, _, e in latest.values() if e is not None}
        return cls(folder, manifest, [s for s, _ in done], features, failed)

