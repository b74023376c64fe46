"""The search page's web server: the standard library's threading HTTP server, with byte ranges.

Why no web framework: the page needs four JSON routes, three static files and range requests for video;
``http.server`` does all of that with HTTP/1.1 keep-alive and one thread per connection, at zero added
dependencies (a Flask or FastAPI stack adds 5-15 packages for nothing this page uses). Range handling is the
part browsers are strict about, so it is implemented here to RFC 9110 and tested: 206 with Content-Range, open
and suffix ranges, 416 for unsatisfiable ones; several ranges in one request get the whole file (200), which
RFC 9110 allows.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from apps.search_service import ApiError, SearchService

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PAGES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"), "/style.css": ("style.css", "text/css")}
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm"}
CHUNK = 256 * 1024
RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """The Range header asks for bytes the file does not have (answered with 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive for one ``bytes=`` range of a file of ``size`` bytes, or None for the whole
    file (no header, another unit, or several ranges)."""
    if not header or "," in header:
        return None
    match = RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - int(last)), size - 1
    if int(first) >= size or (last != "" and int(last) < int(first)):
        raise RangeNotSatisfiable
    return int(first), min(size - 1, int(last)) if last != "" else size - 1


class SearchHandler(BaseHTTPRequestHandler):
    """Routes: the page, /api/{info,search,similar}, /video/<rel> (ranges), /frames/<rel> (JPEG strip). GET and
    HEAD only; other methods get a JSON 405."""

    protocol_version = "HTTP/1.1"
    server_version = "DGLSearch"
    service: SearchService  # set on the class made by `make_server`

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def refuse_method(self) -> None:
        """405 with ``Allow``: the page and its API only read. Any request body is left unread, so the
        connection closes after the answer."""
        self.close_connection = True
        error = {"error": f"method {self.command} is not allowed here; use GET or HEAD"}
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, error, True, {"Allow": "GET, HEAD", "Connection": "close"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = refuse_method

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own errors (a malformed request line, an unknown method: 501) as JSON too."""
        self.close_connection = True
        body = self.command != "HEAD" and code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)
        error = {"error": message or self.responses.get(code, ("error",))[0]}
        self._send_json(code, error, body, {"Connection": "close"})

    def send_response(self, code: int, message: str | None = None) -> None:
        self.responded = True
        super().send_response(code, message)

    def _dispatch(self, send_body: bool) -> None:
        self.responded = False
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in PAGES:
                name, kind = PAGES[url.path]
                self._send(200, (STATIC / name).read_bytes(), f"{kind}; charset=utf-8", send_body)
            elif url.path.startswith("/api/"):
                self._send_json(200, self._api(url.path, query), send_body)
            elif url.path.startswith("/video/"):
                self._send_file(self.service.video_file(unquote(url.path[len("/video/"):])), send_body)
            elif url.path.startswith("/frames/"):
                self._send(200, self.service.frame_strip(unquote(url.path[len("/frames/"):])), "image/jpeg", send_body)
            else:
                raise ApiError(404, f"no such page: {url.path}")
        except ApiError as err:
            self._send_json(err.status, {"error": str(err)}, send_body)
        except (BrokenPipeError, ConnectionResetError):  # the browser cancelled (e.g. a video seek): nothing to say
            self.close_connection = True
        except Exception:  # noqa: BLE001 - log it, answer 500, keep serving the other requests
            logger.exception("error answering %s", self.path)
            if self.responded:  # a body was under way: the only honest end is to close the connection
                self.close_connection = True
            else:
                self._send_json(500, {"error": "internal error; the server log has the details"}, send_body)

    def _api(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/api/info":
            return self.service.info()
        if path == "/api/search":
            return self.service.search(query.get("q"), self.service.parse_k(query.get("k")))
        if path == "/api/similar":
            return self.service.similar(query.get("video"), self.service.parse_k(query.get("k")))
        raise ApiError(404, f"no such API: {path} (there are /api/info, /api/search, /api/similar)")

    def _send(self, status: int, body: bytes, content_type: str, send_body: bool,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_json(self, status: int, payload: dict[str, Any], send_body: bool,
                   headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", send_body, headers)

    def _send_file(self, path: Path, send_body: bool) -> None:
        size = path.stat().st_size
        try:
            span = byte_range(self.headers.get("Range"), size)
        except RangeNotSatisfiable:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = span or (0, size - 1)
        self.send_response(206 if span else 200)
        if span:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream"))
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        if send_body:
            with path.open("rb") as file:
                file.seek(first)
                copy_bytes(file, self.wfile, last - first + 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s %s", self.address_string(), format % args)


def copy_bytes(source, target, count: int) -> None:
    """Exactly ``count`` bytes, in chunks: a large video is never held in memory."""
    while count > 0:
        chunk = source.read(min(CHUNK, count))
        if not chunk:
            raise OSError("the file got shorter while it was being sent")
        target.write(chunk)
        count -= len(chunk)


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free one, see ``server.server_address``), not yet serving."""
    handler = type("BoundSearchHandler", (SearchHandler,), {"service": service})
    return ThreadingHTTPServer((host, port), handler)


def serve_in_thread(service: SearchService, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start serving in a daemon thread; -> (server, base URL). Stop with ``server.shutdown()``."""
    server = make_server(service, host, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="search-server").start()
    return server, f"http://{host}:{server.server_address[1]}"
