"""Progress bars that suit where they are written: a live bar on a terminal, a plain line at a low rate in a
log file, so that a redirected log holds readable lines instead of thousands of carriage-return redraws.

Every progress bar of the project comes from `progress`; the choice is made once, from the stream's ``isatty``.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

FILE_INTERVAL_S = 60.0  # seconds between two progress lines written to a file


class LineWriter:
    """A file for tqdm that turns its carriage-return redraws into whole lines, skipping blank and repeated ones
    (tqdm clears a bar by overwriting it with spaces)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        for piece in text.replace("\r", "\n").split("\n"):
            line = piece.rstrip()
            if line and line != self.last:
                self.stream.write(line + "\n")
                self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable | None = None, *, enabled: bool = True, in_files: bool = True,
             stream: TextIO | None = None, **options: Any) -> tqdm:
    """A tqdm bar on ``stream`` (default stderr): live on a terminal; elsewhere one line every
    `FILE_INTERVAL_S` seconds (plus the first and the last), or nothing if ``in_files`` is False (for loops that
    log the same figures themselves, like training at ``--n_display``). ``enabled=False``: never shown."""
    stream = stream or sys.stderr
    if not enabled:
        return tqdm(iterable, disable=True, **options)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, file=stream, **options)
    if not in_files:
        return tqdm(iterable, disable=True, **options)
    options.pop("dynamic_ncols", None)  # no terminal to measure
    return tqdm(iterable, file=LineWriter(stream), mininterval=FILE_INTERVAL_S, maxinterval=FILE_INTERVAL_S,
                ascii=True, ncols=100, **options)
