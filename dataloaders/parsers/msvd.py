"""MSVD: id lists + `raw-captions.pkl` (id -> list of token lists), multi-sentence."""
from __future__ import annotations

from pathlib import Path

from dataloaders.config import DataConfig
from dataloaders.files import read_lines, read_pickle, require_file
from dataloaders.parsers.common import check_subset, listed_pairs, locate_videos
from dataloaders.splits import VideoTextSplit, split_from_pairs

# The official loader reads train_list_120.txt, the released data ships train_list.txt: accept both.
TRAIN_LISTS = ("train_list.txt", "train_list_120.txt")


def parse(cfg: DataConfig, subset: str) -> VideoTextSplit:
    check_subset("msvd", subset)
    root = Path(cfg.data_path)
    video_ids = read_lines(_list_file(root, subset), "MSVD id list")
    captions_file = root / "raw-captions.pkl"
    tokenised = read_pickle(captions_file, "MSVD captions")
    captions = {v: [" ".join(tokens) for tokens in tokenised[v]] for v in video_ids if v in tokenised}
    pairs = listed_pairs(video_ids, captions, captions_file)
    paths = locate_videos(cfg.features_path, video_ids)
    return split_from_pairs(f"msvd/{subset}", pairs, paths, multi_sentence=True, source=captions_file)


def _list_file(root: Path, subset: str) -> Path:
    if subset != "train":
        return root / f"{subset}_list.txt"
    for name in TRAIN_LISTS:
        if (root / name).is_file():
            return root / name
    return require_file(root / TRAIN_LISTS[0], f"MSVD training list ({' or '.join(TRAIN_LISTS)})")
