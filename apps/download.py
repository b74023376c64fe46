"""Fetch OpenAI's CLIP weights into --pretrained_dir, on request only (training never downloads).

    python -m apps.download ViT-B/32 [ViT-L/14 ...] [--pretrained_dir DIR] [--url URL]

Names: ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, or their open_clip names (ViT-B-32, ViT-B-32/openai) or
Hugging Face ids (openai/clip-vit-base-patch32): all mean OpenAI's file, which is what is fetched. The bytes
go to ``NAME.pt.part`` beside the target; a cut transfer resumes from there when the command is run again
(HTTP Range); the file is renamed into place only once its SHA256 equals OpenAI's, so a wrong or partial
file never lies under the real name.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from models.clip_names import ClipFile, known_names, openai_file
from models.pretrained import PRETRAINED_DIR_ENV, default_pretrained_dir, file_sha256
from utils import cli

CHUNK = 1 << 20
PART_SUFFIX = ".part"
TIMEOUT_S = 60.0


class DownloadError(OSError):
    """The transfer failed or delivered other bytes; the message says whether running again resumes."""


def fetch(url: str, target: Path, sha256: str, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming a partial file with an HTTP Range
    request; the finished file must have ``sha256`` or it is deleted and DownloadError raised. Returns ``target``."""
    part = target.with_name(target.name + PART_SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            resumed = have > 0 and response.status == 206 and _range_start(response) == have
            total = _total_size(response, have if resumed else 0)
            digest = _hash_of(part) if resumed else hashlib.sha256()
            with open(part, "ab" if resumed else "wb") as out:
                done = _copy(response, out, digest, have if resumed else 0, total, progress)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already complete (or longer than the file)
            return _finish(part, target, sha256, _hash_of(part), url)
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        size = part.stat().st_size if part.is_file() else 0
        raise DownloadError(
            f"{url}: transfer failed after {size} bytes ({type(err).__name__}: {err}); run the same command again to "
            f"resume from {part}"
        ) from None
    if total is not None and done != total:
        raise DownloadError(f"{url}: transfer cut at {done} of {total} bytes; run the same command again to resume from {part}")
    return _finish(part, target, sha256, digest, url)


def _finish(part: Path, target: Path, sha256: str, digest: "hashlib._Hash", url: str) -> Path:
    actual = digest.hexdigest()
    if actual != sha256:
        size = part.stat().st_size
        part.unlink()
        raise DownloadError(f"{url}: the {size} bytes received have SHA256 {actual}, not {sha256}; deleted them "
                            f"(a wrong --url, or a proxy that altered the file?)")
    with open(part, "rb+") as file:
        os.fsync(file.fileno())
    os.replace(part, target)
    return target


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte of a 206 reply (``Content-Range: bytes START-END/TOTAL``)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _hash_of(path: Path) -> "hashlib._Hash":
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest


def _copy(source: IO[bytes], out: IO[bytes], digest: "hashlib._Hash", done: int, total: int | None,
          progress: Callable[[int, int | None], None] | None) -> int:
    while chunk := source.read(CHUNK):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    out.flush()
    return done


class Progress:
    """Bytes so far: redrawn in place on a terminal, else a line per tenth (log files stay short)."""

    def __init__(self, label: str, stream: IO[str] = sys.stderr) -> None:
        self.label, self.stream, self.tty = label, stream, stream.isatty()
        self.started, self.shown = time.monotonic(), -1

    def __call__(self, done: int, total: int | None) -> None:
        step = int(10 * done / total) if total else done // (100 * CHUNK)
        if not self.tty and step == self.shown:
            return
        self.shown = step
        rate = done / max(time.monotonic() - self.started, 1e-6) / 1e6
        of = f" of {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
        line = f"{self.label}: {done / 1e6:.1f}{of}, {rate:.1f} MB/s"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty and self.shown >= 0:
            print(file=self.stream)


def download(clip_file: ClipFile, folder: Path, url: str | None = None, quiet: bool = False) -> Path:
    """OpenAI's file into ``folder`` unless a file with its SHA256 is already there; another file under its name
    is left alone and refused."""
    target = folder / clip_file.filename
    if target.is_file():
        if file_sha256(target) == clip_file.sha256:
            print(f"{target}: already there (SHA256 checked)", file=sys.stderr)
            return target
        raise FileExistsError(f"{target} exists but is not OpenAI's {clip_file.name} (SHA256 differs from "
                              f"{clip_file.sha256}); move it away to download the official file")
    progress = None if quiet else Progress(f"{clip_file.name} -> {target}")
    try:
        fetch(url or clip_file.url, target, clip_file.sha256, progress)
    finally:
        if progress is not None:
            progress.close()
    print(f"{target}: done (SHA256 {clip_file.sha256} checked)", file=sys.stderr)
    return target


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"the weights to fetch: {known_names()}")
    parser.add_argument("--pretrained_dir", default=None,
                        help=f"folder to put them in (default: ${PRETRAINED_DIR_ENV}, else ~/models/pretrained)")
    parser.add_argument("--url", default=None, help="fetch from this address instead of OpenAI's (a mirror; the SHA256 "
                        "is still OpenAI's); one NAME only")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url and len(args.names) > 1:
        parser.error("--url takes one NAME")
    files = []
    for name in args.names:
        clip_file = openai_file(name)
        if clip_file is None:
            parser.error(f"{name!r} is not a known CLIP model; known: {known_names()}")
        files.append(clip_file)
    folder = Path(args.pretrained_dir).expanduser() if args.pretrained_dir else default_pretrained_dir()
    for clip_file in files:
        download(clip_file, folder, args.url, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
