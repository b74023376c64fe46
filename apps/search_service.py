"""What the search page asks of an open index, without HTTP: text and video queries as JSON-ready answers,
the indexed files (and only those) to stream, and frame strips for files a browser cannot play.

Kept apart from the HTTP layer so that every rule about what may be read from disk lives in one place and is
tested directly: a file is served only if it is an indexed video whose real path (symlinks resolved) still lies
inside the index's video root.
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from apps.itm_search import ranking_label
from apps.retrieval import Hit, Retriever, describe_identity
from apps.search_confidence import ScoreFloor, score_floor
from apps.video_index import read_captions
from dataloaders.frames import read_eval_frames

# Containers and codecs that Chromium, Firefox and Safari all play in a <video> element (yuv420p only: 4:4:4
# and 10-bit H.264 are not decoded by browsers). Anything else is shown as a strip of sampled frames.
BROWSER_CODECS = {".mp4": {"h264", "av1", "vp9"}, ".m4v": {"h264"}, ".webm": {"vp8", "vp9", "av1"}}
BROWSER_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}
STRIP_SIZE = 128  # px per frame (square, centre-cropped as the model sees it)
# Shown on an empty page when the index stores no captions of its own (retrieve.py index --video_list CSV).
DEFAULT_EXAMPLES = ("a person is cooking in a kitchen", "a dog runs on the grass", "a car drives down a road",
                    "people dance on a stage")
EXAMPLES = 4


class ApiError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, the message says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServiceConfig:
    """Limits of the page's queries."""

    default_k: int = 12
    max_k: int = 100
    itm_rerank: int = 0  # a DGL-BLIP index: re-score each query's top K with ITM (retrieve.py serve --itm_rerank)


def browser_playable(path: Path) -> bool:
    """Whether a browser's <video> plays this file: container by extension, codec and pixel format by probe."""
    codecs = BROWSER_CODECS.get(path.suffix.lower())
    if not codecs:
        return False
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.codec_context.name in codecs and stream.codec_context.pix_fmt in BROWSER_PIXEL_FORMATS
    except (av.FFmpegError, IndexError, OSError):
        return False


def frame_strip_jpeg(path: Path, frames: int, size: int = STRIP_SIZE) -> bytes:
    """The video's ``frames`` evaluation frames (the index's reader and sampling: pass the model's T) side by
    side, as one JPEG."""
    clip, _ = read_eval_frames(path, frames, size)
    strip = clip.permute(2, 0, 3, 1).reshape(size, frames * size, 3).numpy()  # [T,3,S,S] -> [S, T*S, 3]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(strip)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def checkpoint_name(path: str | None) -> str:
    """What a person calls a checkpoint: its run folder and file name (``dgl-transformer/checkpoint_best.pt``)."""
    if not path:
        return "unknown checkpoint"
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def example_queries(captions: dict[str, list[str]], videos: list[str], count: int = EXAMPLES) -> list[str]:
    """Up to ``count`` captions of indexed videos spread over the index (the first caption of each), or the
    documented `DEFAULT_EXAMPLES` when the index stores none."""
    described = [captions[rel][0] for rel in videos if captions.get(rel)]
    if not described:
        return list(DEFAULT_EXAMPLES[:count])
    picks = np.linspace(0, len(described) - 1, min(count, len(described))).round().astype(int)
    return [described[i] for i in dict.fromkeys(picks.tolist())]


class SearchService:
    """An open index and its model behind the page; safe to call from many threads (model calls take a lock)."""

    def __init__(self, retriever: Retriever, config: ServiceConfig = ServiceConfig()) -> None:
        if retriever.gallery is None:
            raise ValueError("the retriever has no open index: use Retriever.from_index(folder)")
        self.retriever, self.config, self.gallery = retriever, config, retriever.gallery
        self.root = self.gallery.root.resolve()
        self._model_lock = threading.Lock()
        self._playable = lru_cache(maxsize=None)(lambda rel: browser_playable(self.video_file(rel)))
        self.frames = retriever.model.config.max_frames  # the strip shows the T frames the model sees
        self._strip = lru_cache(maxsize=256)(lambda rel: frame_strip_jpeg(self.video_file(rel), self.frames))
        self.floor: ScoreFloor = score_floor(retriever)  # once per start: the index and model are fixed
        self.examples = example_queries(read_captions(self.gallery.folder), [s.rel for s in self.gallery.stamps])

    # ------------------------------------------------------------------------------------------ queries
    def info(self) -> dict[str, Any]:
        return {
            "index": str(self.gallery.folder.resolve()),
            "videos": len(self.gallery),
            "failed": len(self.gallery.failed),
            "model": describe_identity(self.retriever.identity),
            "checkpoint": checkpoint_name(self.retriever.source["checkpoint"]),
            "method": self.retriever.model.config.label,  # DGL-transformer, DGL-linear, DGL-BLIP
            "ranking": ranking_label(self.retriever.model.config, self.config.itm_rerank),
            "frames": self.frames,
            "resolution": self.retriever.identity["resolution"],
            "examples": self.examples,
            "score_floor": self.floor.summary(),
            "max_words": self.retriever.max_words,
            "default_k": self.config.default_k,
            "max_k": self.config.max_k,
        }

    def parse_k(self, raw: str | None) -> int:
        if raw is None or raw == "":
            return self.config.default_k
        if not raw.isdigit() or not 1 <= int(raw) <= self.config.max_k:
            raise ApiError(400, f"k must be a whole number from 1 to {self.config.max_k}, got {raw!r}")
        return int(raw)

    def search(self, query: str | None, k: int) -> dict[str, Any]:
        """Top-k videos for a text; words beyond the model's context are cut as the tokenizer cuts them."""
        query = (query or "").strip()
        if not query:
            raise ApiError(400, "empty query: type what should happen in the video, e.g. /api/search?q=a+dog+runs")
        tokens = len(self.retriever.tokenizer.encode(query))
        started = time.perf_counter()
        with self._model_lock:
            hits = self.retriever.search(query, k, itm_rerank=self.config.itm_rerank)[0]
        answer = self._answer(hits, time.perf_counter() - started)
        kept = self.retriever.max_words - 2
        return {"query": query, "tokens": tokens, "truncated": tokens > kept, "tokens_kept": min(tokens, kept),
                "low_confidence": bool(hits) and self.floor.low(hits[0].score), "score_floor": self.floor.summary(), **answer}

    def similar(self, rel: str | None, k: int) -> dict[str, Any]:
        """Top-k videos nearest to an indexed video (itself first)."""
        if not rel:
            raise ApiError(400, "no video given: /api/similar?video=<path relative to the index root>")
        started = time.perf_counter()
        try:
            with self._model_lock:
                hits = self.retriever.similar(rel, k)
        except KeyError:
            raise ApiError(404, f"{rel!r} is not an indexed video") from None
        return {"video": rel, **self._answer(hits, time.perf_counter() - started)}

    def _answer(self, hits: list[Hit], seconds: float) -> dict[str, Any]:
        results = []
        for rank, hit in enumerate(hits, 1):
            rel = Path(hit.path).relative_to(self.gallery.root).as_posix()
            results.append({"rank": rank, "video": rel, "score": hit.score, "logit": hit.logit, "rerank": hit.rerank,
                            "playable": self.playable(rel)})
        return {"videos": len(self.gallery), "ms": round(1000 * seconds, 3), "results": results}

    # -------------------------------------------------------------------------------------------- files
    def video_file(self, rel: str) -> Path:
        """The file of an indexed video; 404 for anything not indexed, 403 if its real path left the root
        (e.g. replaced by a symlink to elsewhere), 404 if it is gone."""
        try:
            self.gallery.position(rel)
        except KeyError:
            raise ApiError(404, "not an indexed video") from None
        real = (self.root / rel).resolve()
        if not real.is_relative_to(self.root):
            raise ApiError(403, "this file points outside the indexed folder")
        if not real.is_file():
            raise ApiError(404, "the indexed file is no longer there; run `retrieve.py index` again")
        return real

    def playable(self, rel: str) -> bool:
        try:
            return self._playable(rel)
        except ApiError:
            return False

    def frame_strip(self, rel: str) -> bytes:
        try:
            return self._strip(rel)
        except ApiError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure: the page shows the message instead
            raise ApiError(500, f"could not read frames of {rel}: {type(err).__name__}: {err}") from None
