"""apps/download.py against a local HTTP server on 127.0.0.1 (Range support, and a mode that cuts a transfer):
fetch, resume of a cut transfer, refusal of a wrong SHA256; nothing touches the network."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from apps import download
from apps.download import DownloadError, fetch
from models.clip_names import OPENAI_CLIP_FILES, ClipFile
from utils import cli

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(3 * download.CHUNK + 12345))  # several chunks, not aligned
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Served:
    """What the server does and what it saw."""

    payload: bytes = PAYLOAD
    cut_after: int | None = None  # the next reply stops after this many body bytes (once)
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            header = self.headers.get("Range")
            served.ranges.append(header)
            start = int(header.removeprefix("bytes=").rstrip("-")) if header and served.honour_range else 0
            body = served.payload[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(served.payload) - 1}/{len(served.payload)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.cut_after is not None:
                body, served.cut_after = body[:served.cut_after], None
            self.wfile.write(body)
            served.sent.append(len(body))

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/ViT-B-32.pt", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_fetch_writes_the_file_and_reports_progress(server, tmp_path: Path) -> None:
    url, served = server
    seen: list[tuple[int, int | None]] = []
    target = fetch(url, tmp_path / "w" / "ViT-B-32.pt", SHA, lambda done, total: seen.append((done, total)))
    assert target.read_bytes() == PAYLOAD
    assert sorted(p.name for p in target.parent.iterdir()) == ["ViT-B-32.pt"]  # no .part left behind
    assert served.ranges == [None]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_cut_transfer_resumes_where_it_stopped(server, tmp_path: Path) -> None:
    url, served = server
    cut = download.CHUNK + 999
    served.cut_after = cut
    target = tmp_path / "ViT-B-32.pt"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch(url, target, SHA)
    part = tmp_path / "ViT-B-32.pt.part"
    assert not target.exists() and part.read_bytes() == PAYLOAD[:cut]
    fetch(url, target, SHA)
    assert target.read_bytes() == PAYLOAD and not part.exists()
    assert served.ranges == [None, f"bytes={cut}-"]
    assert served.sent == [cut, len(PAYLOAD) - cut]  # the second reply carried only the rest


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path: Path) -> None:
    url, served = server
    served.honour_range = False
    (tmp_path / "ViT-B-32.pt.part").write_bytes(b"stale bytes of an older attempt")
    assert fetch(url, tmp_path / "ViT-B-32.pt", SHA).read_bytes() == PAYLOAD
    assert served.sent == [len(PAYLOAD)]


def test_a_wrong_sha256_is_refused_and_nothing_is_kept(server, tmp_path: Path) -> None:
    url, _ = server
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DownloadError, match=f"SHA256 {SHA}, not {wrong}"):
        fetch(url, tmp_path / "ViT-B-32.pt", wrong)
    assert list(tmp_path.iterdir()) == []


def test_command_refuses_bytes_that_are_not_openais(server, tmp_path: Path, capsys) -> None:
    """Through the command: the local file is not OpenAI's ViT-B/32, so it is refused in one line, exit 2."""
    url, _ = server
    code = cli.run(download.main, ["ViT-B-32/openai", "--pretrained_dir", str(tmp_path), "--url", url, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.USAGE_ERROR
    assert len(err) == 1 and OPENAI_CLIP_FILES["ViT-B/32"].sha256 in err[0] and SHA in err[0]
    assert list(tmp_path.iterdir()) == []


def test_command_leaves_another_file_under_the_name_alone(server, tmp_path: Path, capsys) -> None:
    url, served = server
    (tmp_path / "ViT-B-16.pt").write_bytes(b"my fine-tuned weights")
    code = cli.run(download.main, ["openai/clip-vit-base-patch16", "--pretrained_dir", str(tmp_path), "--url", url])
    assert code == cli.USAGE_ERROR and "move it away" in capsys.readouterr().err
    assert (tmp_path / "ViT-B-16.pt").read_bytes() == b"my fine-tuned weights" and served.ranges == []


def test_command_refuses_unknown_names(capsys) -> None:
    assert cli.run(download.main, ["ViT-H/14"]) == cli.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ViT-H/14' is not a known CLIP model" in err[0]


def test_download_fetches_once_then_finds_the_file_there(server, tmp_path: Path, capsys) -> None:
    """The command's path with a release whose SHA256 is the served file's: fetched, then kept on a second run."""
    url, served = server
    release = ClipFile("ViT-T/1", "ViT-T-1.pt", SHA, "ViT-T-1", "someone/clip-vit-tiny")
    assert download.download(release, tmp_path, url, quiet=True) == tmp_path / "ViT-T-1.pt"
    assert download.download(release, tmp_path, url, quiet=True).read_bytes() == PAYLOAD
    assert served.ranges == [None]  # the second run did not fetch
    assert "already there" in capsys.readouterr().err


def test_progress_in_a_log_is_a_line_per_tenth() -> None:
    stream = io.StringIO()
    progress = download.Progress("ViT-B/32", stream)
    total = 1000 * download.CHUNK
    for done in range(0, total + 1, download.CHUNK):
        progress(done, total)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith(f"ViT-B/32: {total / 1e6:.1f} of {total / 1e6:.1f} MB (100%)")
