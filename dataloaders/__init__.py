"""Data pipeline: dataset parsers, video decoding, frame sampling and torch Datasets."""
from __future__ import annotations

from dataloaders.config import DataConfig
from dataloaders.datasets import TextDataset, TrainPairDataset, VideoDataset, collate_trimmed
from dataloaders.frame_cache import FrameCacheError
from dataloaders.parsers import DATASETS
from dataloaders.splits import VideoTextSplit
from dataloaders.validation import validate_split
from dataloaders.video_io import VideoReadError


def build_split(cfg: DataConfig, subset: str) -> VideoTextSplit:
    """Parses `subset` of cfg.datatype and validates it (counts logged, bad videos handled)."""
    if cfg.datatype not in DATASETS:
        raise ValueError(f"unknown datatype {cfg.datatype!r}; choose one of {sorted(DATASETS)}")
    return validate_split(DATASETS[cfg.datatype](cfg, subset), cfg)


__all__ = [
    "DATASETS", "DataConfig", "FrameCacheError", "TextDataset", "TrainPairDataset", "VideoDataset",
    "VideoReadError", "VideoTextSplit", "build_split", "collate_trimmed",
]
