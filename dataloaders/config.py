"""Settings of the data pipeline, with the official command-line flag names and defaults."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from models.backbone import DEFAULT_BACKBONE

VIDEO_BACKENDS = ("auto", "decord", "pyav", "torchcodec")


@dataclass
class DataConfig:
    """Where a dataset lives and how its captions and videos are turned into tensors.

    Path defaults are the official argparse defaults (placeholders: every script passes its own).
    For MSR-VTT `data_path` is the `MSRVTT_data.json` file; for the other datasets it is the folder
    holding the official annotation files.
    """

    datatype: str = "msrvtt"
    data_path: str | Path = "data/caption.pickle"
    features_path: str | Path = "data/videos_feature.pickle"
    train_csv: str | Path = "data/.train.csv"
    val_csv: str | Path = "data/.val.csv"
    max_words: int = 32
    max_frames: int = 12
    image_resolution: int = 224
    backbone: str = DEFAULT_BACKBONE  # whose tokenizer reads the captions (the model config's, copied)
    expand_msrvtt_sentences: bool = True
    video_backend: str = "auto"
    frame_cache: str | Path | None = None
    skip_bad_videos: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        if self.video_backend not in VIDEO_BACKENDS:
            raise ValueError(f"--video_backend must be one of {VIDEO_BACKENDS}, got {self.video_backend!r}")
        if self.max_frames < 1 or self.max_words < 2 or self.image_resolution < 1:
            raise ValueError(
                f"need --max_frames >= 1, --max_words >= 2, --image_resolution >= 1; got {self.max_frames}, "
                f"{self.max_words}, {self.image_resolution}"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DataConfig":
        """Picks this config's fields out of a parsed namespace (other attributes are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})
