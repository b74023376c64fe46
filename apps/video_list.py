"""Index part of a folder: the videos a list names, e.g. a dataset's test split, so that a search over it is not
flattered by the videos a model trained on.

A list is a text file with one video id per line, or a CSV with a ``video_id`` column (MSR-VTT's
``MSRVTT_JSFUSION_test.csv``); an id names the video file of that stem. A CSV's ``sentence`` column, when there
is one, gives the videos' captions, which the index keeps (``captions.json``) for the search page's examples.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoList:
    """The listed ids, in file order without repeats, and the captions given for them ({id: [captions]})."""

    ids: list[str]
    captions: dict[str, list[str]]

    @classmethod
    def read(cls, path: str | Path) -> "VideoList":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--video_list {path}: no such file")
        text = path.read_text(encoding="utf-8-sig")
        captions: dict[str, list[str]] = defaultdict(list)
        if path.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if not rows or "video_id" not in rows[0]:
                raise ValueError(f"--video_list {path}: a CSV needs a video_id column (and optionally sentence)")
            ids = [row["video_id"].strip() for row in rows]
            for row in rows:
                if (row.get("sentence") or "").strip():
                    captions[row["video_id"].strip()].append(row["sentence"].strip())
        else:
            ids = [line.strip() for line in text.splitlines() if line.strip()]
        ids = list(dict.fromkeys(i for i in ids if i))
        if not ids:
            raise ValueError(f"--video_list {path}: lists no videos")
        return cls(ids, dict(captions))

    def select(self, files: list[Path], source: str) -> list[Path]:
        """The files of the listed ids (matched by stem); every id must name exactly one of ``files``."""
        by_stem: dict[str, list[Path]] = defaultdict(list)
        for file in files:
            by_stem[file.stem].append(file)
        missing = [i for i in self.ids if i not in by_stem]
        if missing:
            raise FileNotFoundError(
                f"--video_list names {len(missing)} videos not found under {source}: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}; check --videos"
            )
        twice = [i for i in self.ids if len(by_stem[i]) > 1]
        if twice:
            raise ValueError(f"--video_list: {twice[0]} names several files ({', '.join(map(str, by_stem[twice[0]]))}); "
                             "keep one of them or list files in separate folders")
        return [by_stem[i][0] for i in self.ids]
