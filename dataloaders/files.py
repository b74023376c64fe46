"""Readers for the official annotation files, with errors that name the file and the fix."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """An annotation file is missing or does not have the official layout."""


def require_file(path: str | Path, what: str, flag: str = "--data_path") -> Path:
    """``path`` if it is a file; else an error naming ``what`` and the ``flag`` that leads to it."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{what} not found: {path}. Fix: check {flag} / the file name (layouts: docs/data.md).")
    return path


def read_text(path: str | Path, what: str, flag: str | None = None) -> str:
    """The UTF-8 text of an annotation file; a byte that is not UTF-8 is an error naming the file, line and
    column (Python's own error gives a position inside a read buffer, without the file)."""
    data = require_file(path, what, flag or "--data_path").read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        named = f"{what} ({flag})" if flag else what
        raise AnnotationError(
            f"{named} {path} line {line}, column {column}: byte {data[err.start:err.start + 1]!r} is not UTF-8 "
            f"({err.reason}). Fix: re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from None


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty, stripped lines of a text file (the official id lists)."""
    return [line.strip() for line in io.StringIO(read_text(path, what)) if line.strip()]


def read_json(path: str | Path, what: str) -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{what} {path} is not valid JSON: {err}. Fix: re-download the file.") from err


class PlainDataUnpickler(pickle.Unpickler):
    """Reads only what pickle builds without importing anything: dicts, lists, tuples, sets, strings, bytes,
    numbers, booleans and None. Any class or function (the way a pickle runs code, e.g. ``os.system`` in a
    ``__reduce__``) is refused before it is looked up, so a caption file from a stranger cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it asks for {module}.{name}; only plain containers, strings and numbers are allowed")


def read_pickle(path: str | Path, what: str) -> Any:
    """A pickle of plain data (`PlainDataUnpickler`), e.g. MSVD's ``raw-captions.pkl`` (a dict of video id ->
    list of token lists); anything else is refused naming the file."""
    path = require_file(path, what)
    try:
        with open(path, "rb") as f:
            return PlainDataUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError) as err:
        raise AnnotationError(f"{what} {path} is not a readable pickle of plain data: {err}. Fix: re-download the file.") from err


def read_csv_columns(path: str | Path, what: str, columns: Iterable[str], flag: str = "--data_path") -> list[dict[str, str]]:
    """Rows of a CSV with a header that must contain `columns`, each row holding a value for all of them
    (a short row is an error here, naming the file and line, not a TypeError later in a DataLoader worker)."""
    path = require_file(path, what, flag)
    columns = list(columns)
    with io.StringIO(read_text(path, what, flag), newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if absent:
            raise AnnotationError(
                f"{what} {path} lacks the column(s) {absent} (header: {reader.fieldnames}). "
                "Fix: pass the official CSV."
            )
        rows = []
        for row in reader:
            short = [c for c in columns if row[c] is None]
            if short:
                raise AnnotationError(
                    f"{what} {path} line {reader.line_num}: no value for {short} (the row has fewer fields than the "
                    "header). Fix: repair or remove that row."
                )
            rows.append(row)
        return rows


def inside_folder(root: str | Path, relative: str, source: str) -> Path:
    """``root / relative``, refusing an absolute path or a ``..`` step that would read a file outside ``root``
    (``source`` names the annotation file and row in the error). Symlinks inside ``root`` are followed as usual."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise AnnotationError(
            f"{source}: video {relative!r} points outside --features_path {root}. "
            "Fix: video ids and paths must be relative to --features_path, without '..'."
        )
    return Path(root) / candidate


def index_video_files(root: str | Path, keys_of: Callable[[str], Iterable[str]]) -> dict[str, Path]:
    """Walks `root` once and maps every key of every file name (see `keys_of`) to its path.

    Walk order is sorted, so the first of several files with the same key wins, with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"video folder not found: {root}. Fix: point --features_path at the (compressed) videos.")
    found: dict[str, Path] = {}
    clashes = 0
    for folder, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            for key in keys_of(name):
                if key in found:
                    clashes += 1
                    logger.warning("video id %r matches both %s and %s; using the first", key, found[key], Path(folder, name))
                else:
                    found[key] = Path(folder, name)
    if clashes:
        logger.warning("%d video ids matched several files under %s", clashes, root)
    return found


def stem(file_name: str) -> str:
    """The official id rule: file name without its last extension."""
    return file_name.rsplit(".", 1)[0] if "." in file_name else file_name


def unresolved_path(root: str | Path, video_id: str) -> Path:
    """Stands in for a video the folder walk did not find; validation reports it as missing."""
    return Path(root) / f"{video_id}.*"
