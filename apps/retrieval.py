"""Text-to-video search over a folder of videos: encode the videos once with DGL, answer queries instantly.

DGL's video feature does not depend on the query, so a gallery is encoded once and every query costs one text
encoding and one matrix product. An index is a folder: ``index.json`` (the model's identity, the videos' root
and how to rebuild the model) plus append-only shards, each written atomically and recording the files it
covers by (relative path, size, mtime). An interrupted run therefore resumes where it stopped without
re-encoding a finished video, and a model other than the index's is refused rather than mixed in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataloaders.frames import read_eval_frames
from dataloaders.video_io import VIDEO_EXTENSIONS
from models.checkpoint import atomic_save, backbone_fingerprint
from models.dgl import DGL
from models.factory import load_dgl
from models.backbones import get_tokenizer
from models.files import atomic_write

logger = logging.getLogger(__name__)

INDEX_FORMAT = "dgl-video-index-v1"
MANIFEST = "index.json"
SHARD_GLOB = "shard-*.pt"
NO_SOURCE = {"checkpoint": None, "pretrained_clip_name": None, "pretrained_dir": None, "config_overrides": {}}
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


class VideoFiles(Dataset):
    """Decodes in DataLoader workers; a file that fails yields its error instead of frames."""

    def __init__(self, paths: list[Path], frames: int, size: int, backend: str) -> None:
        self.paths, self.frames, self.size, self.backend = paths, frames, size, backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, read_eval_frames(self.paths[i], self.frames, self.size, self.backend)[0], None
        except Exception as err:  # noqa: BLE001 - any decoder/IO failure skips the file, reported by the caller
            return i, None, f"{type(err).__name__}: {err}"


def collate_videos(items: list[tuple[int, torch.Tensor | None, str | None]]):
    """(positions of the decoded videos, their stacked frames or None, [(position, error)] of the others)."""
    good = [(i, v) for i, v, _ in items if v is not None]
    videos = torch.stack([v for _, v in good]) if good else None
    return [i for i, _ in good], videos, [(i, e) for i, _, e in items if e is not None]


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
        f"prompts {identity['prompts']}, backbone {identity['backbone']}, {c['shared_latent_space']} variant, "
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
    return manifest


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


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Hit:
    """One ranked video: cosine similarity and the model's logit (CLIP temperature × cosine)."""

    path: str
    score: float
    logit: float


@dataclass(frozen=True)
class CaptionHit:
    """One ranked caption (``line``: its 0-based position among the given captions)."""

    caption: str
    line: int
    score: float
    logit: float


@dataclass
class IndexReport:
    """What one `Retriever.index` call did."""

    found: int  # video files found
    already_indexed: int  # unchanged since they were encoded: not re-encoded
    encoded: int  # encoded by this call
    failed: list[tuple[str, str]]  # (relative path, error) of files this call could not decode
    known_failures: int  # failed in an earlier run and unchanged: not retried
    remaining: int  # left for a later call by max_videos
    total: int  # videos in the index now

    def summary(self) -> str:
        lines = [
            f"{self.found} video files: {self.encoded} encoded now, {self.already_indexed} already indexed, "
            f"{len(self.failed)} failed, {self.known_failures} known failures skipped, {self.remaining} left for later; "
            f"the index holds {self.total} videos"
        ]
        lines += [f"  failed: {rel}: {error}" for rel, error in self.failed]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- retriever
class Retriever:
    """A DGL model plus an index: builds, extends and searches video indexes made with this model only."""

    def __init__(
        self,
        model: DGL,
        device: str | torch.device | None = None,
        source: dict[str, Any] | None = None,
        batch_size: int = 16,
        workers: int = 2,
        video_backend: str = "auto",
        max_words: int = 32,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        # How to rebuild the model; recorded in new indexes so `from_index` needs no checkpoint argument.
        self.source = {**NO_SOURCE, **(source or {})}
        self.batch_size, self.workers, self.video_backend, self.max_words = batch_size, workers, video_backend, max_words
        self.identity = model_identity(model)
        self.tokenizer = get_tokenizer()
        with torch.no_grad():
            self.prompts = self.model.prompts()  # frozen model: computed once
        self.gallery: VideoIndex | None = None
        self._gallery_unit: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: PathLike,
        pretrained_clip_name: str | None = None,
        pretrained_dir: PathLike | None = None,
        device: str | torch.device | None = None,
        config_overrides: dict[str, Any] | None = None,
        **options: Any,
    ) -> "Retriever":
        """Our compact checkpoint or an official one (see `models.factory.load_dgl`)."""
        overrides = {k: v for k, v in (config_overrides or {}).items() if v is not None}
        model = load_dgl(checkpoint, pretrained_clip_name, pretrained_dir, **overrides)
        name = pretrained_clip_name
        if name is not None and Path(name).expanduser().is_file():  # a file name must survive a change of folder
            name = str(Path(name).expanduser().resolve())
        source = {
            "checkpoint": str(Path(checkpoint).expanduser().resolve()),
            "pretrained_clip_name": name,
            "pretrained_dir": str(Path(pretrained_dir).expanduser().resolve()) if pretrained_dir else None,
            "config_overrides": overrides,
        }
        return cls(model, device, source, **options)

    @classmethod
    def from_index(
        cls,
        folder: PathLike,
        checkpoint: PathLike | None = None,
        pretrained_clip_name: str | None = None,
        pretrained_dir: PathLike | None = None,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> "Retriever":
        """The index's own model as recorded when it was built (or the given checkpoint), with the index open."""
        recorded = {**NO_SOURCE, **read_manifest(folder)["source"]}
        checkpoint = checkpoint or recorded["checkpoint"]
        if checkpoint is None or not Path(checkpoint).is_file():
            raise FileNotFoundError(f"{folder}: its model's checkpoint {checkpoint} is not there; pass the checkpoint")
        retriever = cls.from_checkpoint(
            checkpoint,
            pretrained_clip_name or recorded["pretrained_clip_name"],
            pretrained_dir or recorded["pretrained_dir"],
            device,
            recorded["config_overrides"],
            **options,
        )
        retriever.open(folder)
        return retriever

    # -------------------------------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode_videos(self, videos: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, S, S]`` frames (uint8, or CLIP-normalised floats) -> ``[B, E]`` float32 on the CPU."""
        return self.model.encode_video(videos.to(self.device), self.prompts).float().cpu()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """-> ``[Q, E]`` float32 on the CPU."""
        ids, _ = self.tokenizer(list(texts), self.max_words)
        return torch.cat(
            [self.model.encode_text(chunk.to(self.device), self.prompts).float().cpu() for chunk in ids.split(256)]
        )

    # -------------------------------------------------------------------------------------- indexing
    def open(self, folder: PathLike) -> VideoIndex:
        """Load an index for searching; refuses one built with another model."""
        index = VideoIndex.load(folder)
        self._check_model(index.folder, index.manifest)
        self.gallery = index
        self._gallery_unit = F.normalize(index.features, dim=-1).to(self.device)
        return index

    def _check_model(self, folder: Path, manifest: dict[str, Any]) -> None:
        diff = identity_differences(manifest["model"], self.identity)
        if diff:
            raise IndexModelMismatch(
                f"{folder} was built with the model of {manifest['source']['checkpoint']} "
                f"({describe_identity(manifest['model'])}), but this model is {self.source['checkpoint']} "
                f"({describe_identity(self.identity)}); they differ in {', '.join(diff)}. "
                "Use the index's model, or index into another folder with this one."
            )

    def _open_or_create(self, folder: Path, videos: Paths) -> dict[str, Any]:
        if (folder / MANIFEST).is_file():
            manifest = read_manifest(folder)
            self._check_model(folder, manifest)
            return manifest
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": INDEX_FORMAT,
            "root": str(common_root(videos)),
            "model": self.identity,
            "dim": self.model.clip.config.embed_dim,
            "source": self.source,
        }
        atomic_write(folder / MANIFEST, lambda f: json.dump(manifest, f, indent=1), mode="w")
        return manifest

    def index(
        self,
        videos: Paths,
        out: PathLike,
        max_videos: int | None = None,
        retry_failed: bool = False,
        shard_size: int = 256,
        progress: bool = True,
    ) -> IndexReport:
        """Encode the videos (files and/or folders, recursive) into the index folder ``out``, creating or
        extending it; afterwards the index is open for `search`.

        Unchanged files already in the index are not re-encoded; files that failed before are not retried
        unless ``retry_failed``. ``max_videos`` caps the videos attempted by this call (the rest is left for
        the next). Results are written every ``shard_size`` videos and when the call ends, also by an error or
        Ctrl-C; a killed process loses at most the videos since the last shard.
        """
        folder = Path(out)
        files = find_videos(videos)
        if not files:
            raise ValueError(f"no video files ({' '.join(sorted(VIDEO_EXTENSIONS))}) in {videos}")
        manifest = self._open_or_create(folder, videos)
        root = Path(manifest["root"])
        stamps = [FileStamp.of(f, root) for f in files]
        existing = VideoIndex.load(folder)
        done = set(existing.stamps)
        known_bad = set() if retry_failed else {s for s, _ in existing.failed.values()}
        todo = [s for s in stamps if s not in done and s not in known_bad]
        attempt = todo[:max_videos] if max_videos is not None else todo
        encoded, failed = self._encode_into(folder, root, attempt, shard_size, progress)
        index = self.open(folder)
        return IndexReport(
            found=len(stamps),
            already_indexed=sum(s in done for s in stamps),
            encoded=encoded,
            failed=failed,
            known_failures=sum(s in known_bad for s in stamps),
            remaining=len(todo) - len(attempt),
            total=len(index),
        )

    def _encode_into(
        self, folder: Path, root: Path, stamps: list[FileStamp], shard_size: int, progress: bool
    ) -> tuple[int, list[tuple[str, str]]]:
        if not stamps:
            return 0, []
        frames, size = self.model.config.max_frames, self.model.clip.config.image_resolution
        dataset = VideoFiles([root / s.rel for s in stamps], frames, size, self.video_backend)
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.workers, collate_fn=collate_videos)
        done: list[tuple[FileStamp, torch.Tensor]] = []
        failed: list[tuple[FileStamp, str]] = []
        encoded, all_failed = 0, []

        def flush() -> None:
            if done or failed:
                write_shard(folder, done, failed)
                done.clear()
                failed.clear()

        with tqdm(total=len(stamps), unit="video", desc="index", disable=not progress) as bar:
            try:
                for positions, batch, errors in loader:
                    if batch is not None:
                        features = self.encode_videos(batch)
                        valid = torch.isfinite(features).all(dim=-1) & (features.norm(dim=-1) > 0)
                        encoded += int(valid.sum())
                        for i, feature, ok in zip(positions, features, valid.tolist()):
                            if ok:
                                done.append((stamps[i], feature))
                            else:  # never index a degenerate feature: it would match nothing or everything
                                errors.append((i, "the model gave a zero or non-finite feature"))
                    for i, error in errors:
                        failed.append((stamps[i], error))
                        all_failed.append((stamps[i].rel, error))
                        logger.warning("skipped %s: %s", stamps[i].rel, error)
                    bar.set_postfix(failed=len(all_failed), refresh=False)
                    bar.update(len(positions) + len(errors))
                    if len(done) + len(failed) >= shard_size:
                        flush()
            finally:
                flush()
        return encoded, all_failed

    # --------------------------------------------------------------------------------------- search
    def _require_gallery(self) -> VideoIndex:
        if self.gallery is None:
            raise RuntimeError("no index is open: call open(folder) or index(videos, out) first")
        return self.gallery

    def search(self, texts: str | Sequence[str], k: int = 5) -> list[list[Hit]]:
        """The ``k`` best videos for each text, best first: one ``[Q, N]`` product of unit vectors."""
        self._require_gallery()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._rank(F.normalize(self.encode_texts(texts), dim=-1), k)

    def similar(self, rel: str, k: int = 5) -> list[Hit]:
        """The ``k`` indexed videos nearest to the indexed video ``rel`` (its path relative to the root), itself
        included: video-to-video on the same cached features, no decoding."""
        gallery = self._require_gallery()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        position = gallery.position(rel)
        return self._rank(self._gallery_unit[position : position + 1], k)[0]

    def _rank(self, queries_unit: torch.Tensor, k: int) -> list[list[Hit]]:
        """Unit query vectors ``[Q, E]`` against the gallery: one ``[Q, N]`` product and a top-k."""
        gallery = self._require_gallery()
        scores, order = (queries_unit.to(self.device) @ self._gallery_unit.t()).topk(min(k, len(gallery)), dim=1)
        scale = float(self.model.clip.logit_scale.float().exp())
        return [
            [Hit(str(gallery.root / gallery.stamps[j].rel), s, scale * s) for s, j in zip(row_scores, row_order)]
            for row_scores, row_order in zip(scores.cpu().tolist(), order.cpu().tolist())
        ]

    def rank_captions(self, video: PathLike, captions: Sequence[str], k: int = 5) -> list[CaptionHit]:
        """The reverse direction: the ``k`` captions that best describe one video file, best first."""
        if k < 1 or not captions:
            raise ValueError(f"need k >= 1 and at least one caption, got k={k} and {len(captions)} captions")
        frames, _ = read_eval_frames(video, self.model.config.max_frames, self.model.clip.config.image_resolution, self.video_backend)
        query = F.normalize(self.encode_videos(frames[None]), dim=-1)
        scores, order = (query @ F.normalize(self.encode_texts(captions), dim=-1).t())[0].topk(min(k, len(captions)))
        scale = float(self.model.clip.logit_scale.float().exp())
        return [CaptionHit(captions[j], j, s, scale * s) for s, j in zip(scores.tolist(), order.tolist())]
