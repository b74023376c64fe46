"""DiDeMo (paragraph-to-video): `{subset}_list.txt` file names + `{subset}_data.json` descriptions."""
from __future__ import annotations

import logging
from pathlib import Path

from dataloaders.config import DataConfig
from dataloaders.files import AnnotationError, read_json, read_lines
from dataloaders.parsers.common import check_subset, locate_videos
from dataloaders.splits import VideoTextSplit, split_from_pairs

logger = logging.getLogger(__name__)

WINDOW = (0.0, 31.0)  # official: annotations stop at 30 s, every video is read over [0, 31] s


def parse(cfg: DataConfig, subset: str) -> VideoTextSplit:
    """One paragraph per listed video: its descriptions in file order, joined with spaces."""
    check_subset("didemo", subset)
    root = Path(cfg.data_path)
    video_ids = read_lines(root / f"{subset}_list.txt", "DiDeMo video list")
    listed = set(video_ids)
    descriptions: dict[str, list[str]] = {}
    records = read_json(root / f"{subset}_data.json", "DiDeMo annotations")
    try:
        for record in records:
            if record["video"] in listed:
                descriptions.setdefault(record["video"], []).append(record["description"])
    except (KeyError, TypeError) as err:
        raise AnnotationError(f"{root / f'{subset}_data.json'}: records need 'video' and 'description' ({err!r})") from err
    kept = [v for v in video_ids if v in descriptions]
    if len(kept) < len(video_ids):
        logger.info("didemo/%s: dropped %d listed videos without descriptions", subset, len(video_ids) - len(kept))
    pairs = [(v, " ".join(descriptions[v])) for v in kept]
    # A file matches an id exactly or after dropping a 4-character suffix (xxx.3gp -> xxx.3gp.mp4).
    paths = locate_videos(cfg.features_path, kept, keys_of=lambda name: (name, name[:-4]))
    split = split_from_pairs(f"didemo/{subset}", pairs, paths, multi_sentence=False,
                           windows={v: WINDOW for v in kept}, source=root / f"{subset}_data.json")
    if len(kept) < len(video_ids):
        split.dropped = {"no descriptions": len(video_ids) - len(kept)}
    return split
