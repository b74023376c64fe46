"""Model-ready frames of a split's videos: sampling, decoding (or the frame cache) and transform."""
from __future__ import annotations

import logging

import numpy as np
import torch

from dataloaders.config import DataConfig
from dataloaders.frame_cache import CacheEntry, FrameCache, FrameCacheError
from dataloaders.sampling import frame_mask, segment_centres, segment_random
from dataloaders.splits import VideoTextSplit
from dataloaders.transforms import resize_and_crop
from dataloaders.video_io import VideoReadError, read_video

logger = logging.getLogger(__name__)

READ_FIX = (
    "Fix: replace or re-encode the file (python -m preprocess.compress_video), or pass "
    "--skip_bad_videos to drop unreadable videos at start-up."
)


def read_eval_frames(path, frames: int, size: int, backend: str = "auto") -> tuple[torch.Tensor, np.ndarray]:
    """One file as evaluation sees it, outside any split: ``frames`` segment centres (a shorter video repeats
    its last frame), short side resized to ``size``, centre-cropped. -> (uint8 ``[T, 3, size, size]``, the
    frame indices taken)."""
    decoded, n = read_video(path, lambda n: segment_centres(n, frames), backend=backend)
    return resize_and_crop(decoded, size), segment_centres(n, frames)


class SplitVideos:
    """Loads video i of a split as (frames uint8 [T, 3, S, S], mask long [T]).

    Frames stay uint8: the model normalises them on its device (``VisionTransformer.embed``), so workers
    send a quarter of the bytes a float32 tensor would take.

    `train=True` samples one random frame per segment (TSN) from the generator given to `load`;
    otherwise the segment centres are taken. A frame cache (cfg.frame_cache) is used for every
    video it holds; stale or mismatched caches are refused at construction.
    """

    def __init__(self, split: VideoTextSplit, cfg: DataConfig, train: bool) -> None:
        self.split = split
        self.train = train
        self.num_frames = cfg.max_frames
        self.resolution = cfg.image_resolution
        self.backend = cfg.video_backend
        self.cache: FrameCache | None = None
        self.cached: list[CacheEntry | None] = [None] * split.num_videos
        if cfg.frame_cache is not None:
            self._attach_cache(FrameCache.open(cfg.frame_cache))

    def _attach_cache(self, cache: FrameCache) -> None:
        if cache.settings.resolution != self.resolution:
            raise FrameCacheError(
                f"frame cache {cache.root} holds {cache.settings.describe()}, but --image_resolution is "
                f"{self.resolution}. Fix: build a cache for this resolution in another folder."
            )
        if not cache.serves(self.num_frames, self.train):
            if not self.train:
                raise FrameCacheError(
                    f"frame cache {cache.root} holds {cache.settings.describe()}, but --max_frames is "
                    f"{self.num_frames}. Fix: build a cache for this T (or with --all_frames) in another folder."
                )
            logger.info("%s: frame cache %s has evaluation frames only; training decodes", self.split.name, cache.root)
            return
        self.cache = cache
        self.cached = [cache.lookup(path, self.split.window(i)) for i, path in enumerate(self.split.video_paths)]
        hits = sum(entry is not None for entry in self.cached)
        logger.info("%s: frame cache %s holds %d of %d videos", self.split.name, cache.root, hits, self.split.num_videos)

    def load(self, index: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train and rng is None:
            raise ValueError("training sampling needs a random generator")
        if self.train:
            pick = lambda n: segment_random(n, self.num_frames, rng)  # noqa: E731
        else:
            pick = lambda n: segment_centres(n, self.num_frames)  # noqa: E731
        entry = self.cached[index]
        try:
            if entry is not None:
                frames, n = self.cache.load(entry, pick)
                frames = torch.from_numpy(frames)
            else:
                decoded, n = read_video(self.split.video_paths[index], pick, self.split.window(index), self.backend)
                frames = resize_and_crop(decoded, self.resolution)
        except (VideoReadError, OSError, ValueError) as err:
            raise VideoReadError(f"{self.split.describe_video(index)}: {err}. {READ_FIX}") from err
        return frames, torch.from_numpy(frame_mask(n, self.num_frames))
