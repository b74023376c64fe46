"""The one structure every dataset parser returns: a gallery of videos and the captions about them."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dataloaders.files import AnnotationError

Window = tuple[float | None, float | None]


@dataclass
class VideoTextSplit:
    """Videos (each once, in gallery order) and captions (queries), linked by `caption_video`.

    Evaluation builds a [num_captions, num_videos] similarity matrix; caption i's positive is video
    `caption_video[i]`. For MSR-VTT 1k-A that is the diagonal; for multi-sentence datasets (VATEX,
    MSVD) several captions share a video, see `video_captions`.
    """

    name: str
    video_ids: list[str]
    video_paths: list[Path]
    windows: list[Window] | None
    captions: list[str]
    caption_video: list[int]
    multi_sentence: bool
    # MSR-VTT training without --expand_msrvtt_sentences: one sample per video, random caption.
    sample_one_caption_per_video: bool = False
    # Filled by validation: rows dropped at start-up, e.g. {"missing video file": 3}.
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.video_ids)
        if len(self.video_paths) != n or (self.windows is not None and len(self.windows) != n):
            raise ValueError(f"{self.name}: video_ids, video_paths and windows must have the same length")
        if len(self.caption_video) != len(self.captions):
            raise ValueError(f"{self.name}: captions and caption_video must have the same length")
        if len(set(self.video_ids)) != n:
            raise ValueError(f"{self.name}: video_ids must be unique")
        if self.caption_video and not 0 <= min(self.caption_video) <= max(self.caption_video) < n:
            raise ValueError(f"{self.name}: caption_video holds an index outside the {n} videos")

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def window(self, video_index: int) -> Window:
        return (None, None) if self.windows is None else self.windows[video_index]

    def describe_video(self, video_index: int) -> str:
        """Names a video for error messages: split, gallery row, id and file."""
        return f"{self.name} video #{video_index} (id {self.video_ids[video_index]!r}, file {self.video_paths[video_index]})"

    def video_captions(self) -> list[np.ndarray]:
        """For each video, the indices of its captions in caption order (multi-sentence metadata)."""
        owner = np.asarray(self.caption_video, dtype=np.int64)
        order = np.argsort(owner, kind="stable")
        ends = np.cumsum(np.bincount(owner, minlength=self.num_videos))
        return np.split(order, ends[:-1])

    def keep_videos(self, keep: np.ndarray) -> "VideoTextSplit":
        """The split restricted to videos where `keep` is True, with their captions and new indices."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1
        owner = np.asarray(self.caption_video, dtype=np.int64)
        kept_captions = np.flatnonzero(keep[owner]) if len(owner) else owner
        return replace(
            self,
            video_ids=[v for v, k in zip(self.video_ids, keep) if k],
            video_paths=[p for p, k in zip(self.video_paths, keep) if k],
            windows=None if self.windows is None else [w for w, k in zip(self.windows, keep) if k],
            captions=[self.captions[i] for i in kept_captions],
            caption_video=new_index[owner[kept_captions]].tolist(),
            dropped=dict(self.dropped),
        )


def split_from_pairs(
    name: str,
    pairs: Iterable[tuple[str, str]],
    video_path: Mapping[str, Path],
    *,
    multi_sentence: bool,
    windows: Mapping[str, Window] | None = None,
    sample_one_caption_per_video: bool = False,
    source: str | Path,
    rows: Sequence[str] | None = None,
) -> VideoTextSplit:
    """Builds a split from (video id, caption) pairs; videos are ordered by first appearance.

    ``source`` is the caption file and ``rows`` where in it each pair stands (default: the video id and the
    caption's number among its captions), named when a caption is empty: an empty caption is refused, as it
    would be trained on and count as a query in R@k."""
    index: dict[str, int] = {}
    captions: list[str] = []
    caption_video: list[int] = []
    empty = []
    for number, (video_id, caption) in enumerate(pairs):
        if not isinstance(caption, str) or not caption.strip():
            nth = caption_video.count(index.get(video_id, -1)) + 1
            empty.append(rows[number] if rows is not None else f"video {video_id!r} caption {nth}")
        captions.append(caption)
        caption_video.append(index.setdefault(video_id, len(index)))
    if empty:
        raise AnnotationError(
            f"{source}: {len(empty)} empty caption(s), at {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}. "
            "Fix: write the caption or remove the row (an empty caption would count as a query in R@k)."
        )
    video_ids = list(index)
    return VideoTextSplit(
        name=name,
        video_ids=video_ids,
        video_paths=[Path(video_path[v]) for v in video_ids],
        windows=None if windows is None else [windows[v] for v in video_ids],
        captions=captions,
        caption_video=caption_video,
        multi_sentence=multi_sentence,
        sample_one_caption_per_video=sample_one_caption_per_video,
    )
