"""Text-to-video search over a folder of videos: encode the videos once with DGL, answer queries instantly.

DGL's video feature does not depend on the query, so a gallery is encoded once and every query costs one text
encoding and one matrix product. The index on disk (`apps.video_index`) is append-only and resumable, and a
model other than the index's is refused rather than mixed in; `apps.video_indexing` decodes and encodes.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from apps.itm_search import check_itm_rerank, rerank_order, video_tokens
from apps.video_index import (
    INDEX_FORMAT,
    MANIFEST,
    SHARD_GLOB,
    FileStamp,
    IndexModelMismatch,
    PathLike,
    Paths,
    VideoIndex,
    common_root,
    describe_identity,
    find_videos,
    identity_differences,
    model_identity,
    read_manifest,
    write_shard,
)
from apps.video_indexing import DecodeOptions, IndexReport, encode_into_shards
from dataloaders.frames import read_eval_frames
from dataloaders.video_io import VIDEO_EXTENSIONS
from models.backbones import get_tokenizer
from models.dgl import DGL
from models.factory import load_dgl
from models.files import atomic_write
from utils.itm_rerank import blip_pair_scorer

# Re-exported: the names scripts and tests have imported from here since before the split.
__all__ = [
    "INDEX_FORMAT",
    "MANIFEST",
    "SHARD_GLOB",
    "CaptionHit",
    "FileStamp",
    "Hit",
    "IndexModelMismatch",
    "IndexReport",
    "Retriever",
    "VideoIndex",
    "describe_identity",
    "model_identity",
    "write_shard",
]

NO_SOURCE = {"checkpoint": None, "pretrained_clip_name": None, "pretrained_dir": None, "config_overrides": {}}


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Hit:
    """One ranked video: cosine similarity, the model's logit (CLIP temperature × cosine) and, when ITM re-ranked
    it, its re-rank score (ITM match logit + cosine; None: ranked by cosine)."""

    path: str
    score: float
    logit: float
    rerank: float | None = None


@dataclass(frozen=True)
class CaptionHit:
    """One ranked caption (``line``: its 0-based position among the given captions)."""

    caption: str
    line: int
    score: float
    logit: float


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
        self.tokenizer = get_tokenizer(model.config.backbone, model.clip)
        with torch.no_grad():
            self.prompts = self.model.prompts()  # frozen model: computed once
        self.gallery: VideoIndex | None = None
        self._gallery_unit: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: PathLike, pretrained_clip_name: str | None = None,
                        pretrained_dir: PathLike | None = None, device: str | torch.device | None = None,
                        config_overrides: dict[str, Any] | None = None, **options: Any) -> "Retriever":
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
    def from_index(cls, folder: PathLike, checkpoint: PathLike | None = None, pretrained_clip_name: str | None = None,
                   pretrained_dir: PathLike | None = None, device: str | torch.device | None = None,
                   **options: Any) -> "Retriever":
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
        encoded, failed = encode_into_shards(self.encode_videos, folder, root, attempt, self._decode_options(), shard_size,
                                             progress)
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

    def _decode_options(self) -> DecodeOptions:
        """The index's frame reader: the model's T frames at its resolution."""
        return DecodeOptions(self.model.config.max_frames, self.model.clip.config.image_resolution, self.video_backend,
                             self.batch_size, self.workers)

    # --------------------------------------------------------------------------------------- search
    def _require_gallery(self) -> VideoIndex:
        if self.gallery is None:
            raise RuntimeError("no index is open: call open(folder) or index(videos, out) first")
        return self.gallery

    def search(self, texts: str | Sequence[str], k: int = 5, itm_rerank: int = 0) -> list[list[Hit]]:
        """The ``k`` best videos for each text, best first: one ``[Q, N]`` product of unit vectors. ``itm_rerank``
        K (a DGL-BLIP index): each text's top K re-scored by the ITM head as evaluation does
        (`apps.itm_search`), those first."""
        self._require_gallery()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if itm_rerank:
            check_itm_rerank(itm_rerank, self.model.config.model)
        texts = [texts] if isinstance(texts, str) else list(texts)
        queries = F.normalize(self.encode_texts(texts), dim=-1)
        return self._rerank(texts, queries, k, itm_rerank) if itm_rerank else self._rank(queries, k)

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
        return self._hits(order, scores)

    @torch.no_grad()
    def _rerank(self, texts: list[str], queries_unit: torch.Tensor, k: int, itm_rerank: int) -> list[list[Hit]]:
        """`_rank` with each text's top ``itm_rerank`` re-scored by ITM on tokens recomputed from the files."""
        sim = queries_unit.to(self.device) @ self._gallery_unit.t()
        ids, mask = self.tokenizer(texts, self.max_words)
        itm_ids = self.tokenizer.for_itm(ids)

        def scorer(candidates: torch.Tensor):
            files = [self._unchanged_file(j) for j in candidates.tolist()]
            tokens = video_tokens(lambda v: self.model.encode_video_with_tokens(v.to(self.device)), files,
                                  self._decode_options())
            return blip_pair_scorer(self.model.itm_logits, itm_ids, mask, tokens, self.device)

        order, scores, rescored = rerank_order(sim, itm_rerank, k, scorer)
        return self._hits(order, scores, rescored)

    def _unchanged_file(self, position: int) -> Path:
        """The file of an indexed video, refused if it changed since its feature was stored."""
        gallery = self._require_gallery()
        stamp = gallery.stamps[position]
        path = gallery.root / stamp.rel
        now = FileStamp.of(path, gallery.root) if path.is_file() else None
        if now != stamp:
            raise ValueError(f"{path}: changed or gone since it was indexed, so ITM would score another video than "
                             "the indexed feature; run `retrieve.py index` again, or search without --itm_rerank")
        return path

    def _hits(self, order: torch.Tensor, scores: torch.Tensor, rescored: torch.Tensor | None = None) -> list[list[Hit]]:
        gallery = self._require_gallery()
        scale = float(self.model.clip.logit_scale.detach().float().exp())
        rows = (rescored if rescored is not None else torch.full_like(scores, float("nan"))).cpu().tolist()
        return [
            [Hit(str(gallery.root / gallery.stamps[j].rel), s, scale * s, None if math.isnan(r) else r)
             for s, j, r in zip(row_scores, row_order, row_rescored)]
            for row_scores, row_order, row_rescored in zip(scores.cpu().tolist(), order.cpu().tolist(), rows)
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
