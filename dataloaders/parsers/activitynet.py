"""ActivityNet Captions (paragraph-to-video): id lists, caption json and `video_path.json`."""
from __future__ import annotations

import logging
import math
from pathlib import Path

from dataloaders.config import DataConfig
from dataloaders.files import inside_folder, read_json
from dataloaders.parsers.common import check_subset, read_video_paths
from dataloaders.splits import VideoTextSplit, split_from_pairs

logger = logging.getLogger(__name__)

FILES = {"train": ("train_ids.json", "train.json"), "val": ("val_ids.json", "val_1.json")}
EXCLUDED = {"v_NHznDFD3V3k"}  # excluded by the official loader


def parse(cfg: DataConfig, subset: str) -> VideoTextSplit:
    """One paragraph (all sentences joined) per video over [0, ceil(duration)] s; val and test
    both read val_1, as the official code. Videos without captions or path are dropped."""
    check_subset("activity", subset)
    root, features = Path(cfg.data_path), Path(cfg.features_path)
    ids_file, captions_file = FILES["train" if subset == "train" else "val"]
    video_ids = read_json(root / ids_file, "ActivityNet id list")
    annotations = read_json(root / captions_file, "ActivityNet captions")
    relative = read_video_paths(root, features, "activity")  # keys: ids without 'v_'
    kept = [v for v in video_ids if v in annotations and v[2:] in relative and v not in EXCLUDED]
    if len(kept) < len(video_ids):
        logger.info("activity/%s: dropped %d of %d ids without captions or path", subset, len(video_ids) - len(kept), len(video_ids))
    pairs = [(v, " ".join(annotations[v]["sentences"])) for v in kept]
    where = root / "video_path.json"
    paths = {v: inside_folder(features, relative[v[2:]], f"{where} (entry {v[2:]!r})") for v in kept}
    windows = {v: (0.0, float(math.ceil(annotations[v]["duration"]))) for v in kept}
    split = split_from_pairs(f"activity/{subset}", pairs, paths, multi_sentence=False, windows=windows,
                           source=root / captions_file)
    if len(kept) < len(video_ids):
        split.dropped = {"no captions or path": len(video_ids) - len(kept)}
    return split
