"""Pieces the parsers share: subset names, id-list captions and locating videos by walking a folder."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from dataloaders.files import AnnotationError, index_video_files, read_json, stem, unresolved_path

SUBSETS = ("train", "val", "test")
VIDEO_PATH_FILE = "video_path.json"


def read_video_paths(root: Path, features_path: str | Path, datatype: str) -> dict[str, str]:
    """LSMDC's and ActivityNet's `video_path.json` (id -> path relative to --features_path); a missing file is
    an error giving the command that writes it."""
    where = Path(root) / VIDEO_PATH_FILE
    if not where.is_file():
        raise AnnotationError(
            f"{where} not found ({datatype} maps video ids to files with it). Fix: python preprocess/generate_video_path.py "
            f"--datatype {datatype} --features_path {features_path} --data_path {root}"
        )
    return read_json(where, f"{datatype} {VIDEO_PATH_FILE}")


def check_subset(dataset: str, subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"{dataset} subset must be one of {SUBSETS}, got {subset!r}")


def listed_pairs(
    video_ids: Sequence[str], captions: Mapping[str, Sequence[str]], captions_file: Path
) -> list[tuple[str, str]]:
    """Every (video, caption) pair of the listed videos; each must have captions."""
    absent = [v for v in video_ids if v not in captions]
    if absent:
        raise AnnotationError(
            f"{len(absent)} listed videos have no entry in {captions_file}, e.g. {absent[:3]}. "
            "Fix: use the id lists that belong to this caption file."
        )
    return [(video_id, caption) for video_id in video_ids for caption in captions[video_id]]


def locate_videos(
    features_path: str | Path,
    video_ids: Iterable[str],
    keys_of: Callable[[str], Iterable[str]] = lambda name: (stem(name),),
) -> dict[str, Path]:
    """Path of each id found by walking `features_path`; ids without a file get a placeholder that
    start-up validation reports as missing."""
    found = index_video_files(features_path, keys_of)
    return {v: found.get(v, unresolved_path(features_path, v)) for v in video_ids}
