"""Settings of the data pipeline, with the official command-line flag names and defaults."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

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
    expand_msrvtt_sentences: bool = True
    video_backend: str = "auto"
    frame_cache: str | Path | None = None
    skip_bad_videos: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        if self.video_backend not in VIDEO_BACKENDS:
            raise ValueError(f"video_backend must be one of {VIDEO_BACKENDS}, got {self.video_backend!r}")
        if self.max_frames < 1 or self.max_words < 2 or self.image_resolution < 1:
            raise ValueError(
                f"need max_frames >= 1, max_words >= 2, image_resolution >= 1; got {self.max_frames}, "
                f"{self.max_words}, {self.image_resolution}"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DataConfig":
        """Picks this config's fields out of a parsed namespace (other attributes are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the data flags (official names) to a command-line parser; `--seed` is left to the trainer."""
    from dataloaders.parsers import DATASETS

    d = DataConfig()
    g = parser.add_argument_group("data")
    g.add_argument("--datatype", default=d.datatype, choices=sorted(DATASETS))
    g.add_argument("--data_path", default=d.data_path, help="annotation file (MSR-VTT) or folder")
    g.add_argument("--features_path", default=d.features_path, help="folder of the (compressed) videos")
    g.add_argument("--train_csv", default=d.train_csv, help="MSR-VTT training video list")
    g.add_argument("--val_csv", default=d.val_csv, help="MSR-VTT test pairs (JSFusion 1k-A)")
    g.add_argument("--max_words", type=int, default=d.max_words)
    g.add_argument("--max_frames", type=int, default=d.max_frames)
    g.add_argument("--image_resolution", type=int, default=d.image_resolution)
    g.add_argument(
        "--expand_msrvtt_sentences",
        action=argparse.BooleanOptionalAction,
        default=d.expand_msrvtt_sentences,
        help="MSR-VTT training: one sample per caption instead of one per video",
    )
    g.add_argument("--video_backend", default=d.video_backend, choices=VIDEO_BACKENDS)
    g.add_argument("--frame_cache", default=d.frame_cache, help="folder made by preprocess/cache_frames.py")
    g.add_argument(
        "--skip_bad_videos",
        action="store_true",
        help="drop missing/unreadable videos (and their captions) at start-up instead of failing",
    )
    return parser
