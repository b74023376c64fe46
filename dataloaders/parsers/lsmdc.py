"""LSMDC: 6-field tab-separated annotation files + `video_path.json` (clip id -> relative path)."""
from __future__ import annotations

import io
import logging
from pathlib import Path

from dataloaders.config import DataConfig
from dataloaders.files import AnnotationError, inside_folder, read_text, require_file
from dataloaders.parsers.common import check_subset, read_video_paths
from dataloaders.splits import VideoTextSplit, split_from_pairs

logger = logging.getLogger(__name__)

ANNOTATIONS = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
FIELDS = 6  # clip id, start/end aligned, start/end extracted, sentence


def parse(cfg: DataConfig, subset: str) -> VideoTextSplit:
    """One sample per row (clips may repeat); rows whose clip has no path are dropped, as officially."""
    check_subset("lsmdc", subset)
    root, features = Path(cfg.data_path), Path(cfg.features_path)
    relative = read_video_paths(root, features, "lsmdc")
    annotations = require_file(root / ANNOTATIONS[subset], f"LSMDC {subset} annotations")
    pairs, lines = [], []
    unlisted = 0
    with io.StringIO(read_text(annotations, f"LSMDC {subset} annotations")) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != FIELDS:
                raise AnnotationError(
                    f"{annotations}:{line_number} has {len(fields)} tab-separated fields, expected {FIELDS}. "
                    "Fix: use the official LSMDC16 annotation file."
                )
            if fields[0] in relative:
                pairs.append((fields[0], fields[-1]))
                lines.append(f"line {line_number}")
            else:
                unlisted += 1
    if unlisted:
        logger.info("lsmdc/%s: dropped %d rows whose clip is not in video_path.json", subset, unlisted)
    where = root / "video_path.json"
    paths = {clip: inside_folder(features, relative[clip], f"{where} (entry {clip!r})") for clip, _ in pairs}
    split = split_from_pairs(f"lsmdc/{subset}", pairs, paths, multi_sentence=False, source=annotations, rows=lines)
    split.dropped = {"clip not in video_path.json": unlisted} if unlisted else {}
    return split
