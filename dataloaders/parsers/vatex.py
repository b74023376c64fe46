"""VATEX: `train_list.txt` / `test_list.txt` + `ref_captions.json` (id -> captions), multi-sentence."""
from __future__ import annotations

from pathlib import Path

from dataloaders.config import DataConfig
from dataloaders.files import read_json, read_lines
from dataloaders.parsers.common import check_subset, listed_pairs, locate_videos
from dataloaders.splits import VideoTextSplit, split_from_pairs


def parse(cfg: DataConfig, subset: str) -> VideoTextSplit:
    """Every (video, caption) pair of the list; "val" reads the test list, as the official code."""
    check_subset("vatex", subset)
    root = Path(cfg.data_path)
    video_ids = read_lines(root / ("train_list.txt" if subset == "train" else "test_list.txt"), "VATEX id list")
    captions_file = root / "ref_captions.json"
    pairs = listed_pairs(video_ids, read_json(captions_file, "VATEX captions"), captions_file)
    paths = locate_videos(cfg.features_path, video_ids)
    return split_from_pairs(f"vatex/{subset}", pairs, paths, multi_sentence=True, source=captions_file)
