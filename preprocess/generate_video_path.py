"""Write the `video_path.json` that the LSMDC and ActivityNet loaders read: video id -> path relative to the videos.

    python preprocess/generate_video_path.py --datatype lsmdc --features_path VIDEOS --data_path DATA
    python preprocess/generate_video_path.py --datatype activity --features_path VIDEOS --data_path DATA

Walks --features_path (sub-folders included) and maps each video file's id, its name without the last
extension (the official rule), to its path relative to --features_path, in DATA/video_path.json (sorted
keys). ActivityNet keys are ids without the 'v_' prefix, as the official file has them: a file named
v_abc.mp4 is entered as "abc". Two files with one id are an error naming both; an existing
video_path.json is kept unless --overwrite is given; the file is written beside its target and renamed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.files import stem  # noqa: E402
from dataloaders.video_io import VIDEO_EXTENSIONS  # noqa: E402

FILE_NAME = "video_path.json"
ACTIVITYNET_PREFIX = "v_"  # ActivityNet ids carry it in the annotations, not in video_path.json's keys


class VideoPathError(ValueError):
    """The folder cannot be mapped one id to one file, or the output would overwrite a file."""


def video_paths(features_path: Path, datatype: str) -> dict[str, str]:
    """id -> relative POSIX path of every video file under `features_path`, in sorted walk order."""
    root = Path(features_path)
    if not root.is_dir():
        raise VideoPathError(f"--features_path {root} is not a folder. Fix: point it at the (compressed) videos.")
    found: dict[str, str] = {}
    for folder, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            video_id = stem(name)
            if datatype == "activity" and video_id.startswith(ACTIVITYNET_PREFIX):
                video_id = video_id[len(ACTIVITYNET_PREFIX):]
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if video_id in found:
                raise VideoPathError(
                    f"{root}: files {found[video_id]} and {relative} both have the id {video_id!r}. "
                    "Fix: keep one of them (ids are file names without the extension)."
                )
            found[video_id] = relative
    if not found:
        raise VideoPathError(f"no video files under {root} (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))}).")
    return found


def write_json(mapping: dict[str, str], target: Path, overwrite: bool) -> None:
    """Writes `mapping` beside `target` and renames it into place; refuses an existing target unless `overwrite`."""
    if target.exists() and not overwrite:
        raise VideoPathError(f"{target} exists. Fix: pass --overwrite to replace it, or another --data_path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp",
                                     delete=False, encoding="utf-8") as f:
        json.dump(mapping, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(f.name, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datatype", choices=("lsmdc", "activity"), required=True,
                        help="activity: keys without the 'v_' prefix, as the ActivityNet loader looks them up")
    parser.add_argument("--features_path", type=Path, required=True, help="folder of the (compressed) videos")
    parser.add_argument("--data_path", type=Path, required=True, help=f"folder of the annotations; {FILE_NAME} goes there")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {FILE_NAME}")
    args = parser.parse_args(argv)
    target = args.data_path / FILE_NAME
    try:
        mapping = video_paths(args.features_path, args.datatype)
        write_json(mapping, target, args.overwrite)
    except (VideoPathError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{target}: {len(mapping)} videos under {args.features_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
