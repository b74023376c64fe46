"""The search page's server over a real index of synthetic videos: its API against `Retriever`, video-to-video
neighbours, byte ranges, path safety (traversal, absolute paths, symlinks), bad requests, concurrent clients,
frame strips and the refusal of another model's index."""
import http.client
import io
import json
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

import retrieve
from apps import page_screenshot, search_latency
from apps.retrieval import Retriever
from apps.search_server import RangeNotSatisfiable, byte_range, serve_in_thread
from apps.search_service import SearchService, checkpoint_name
from dataloaders.frames import read_eval_frames
from tests.test_retrieval import QUERIES, retriever


def get(base, path, headers=None, method="GET"):
    """One request with the path sent exactly as given (no client-side normalisation)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def get_json(base, path):
    status, headers, body = get(base, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


@pytest.fixture(scope="module")
def served(gallery, transformer, tmp_path_factory):
    r = retriever(transformer)
    r.index(gallery, tmp_path_factory.mktemp("index"), progress=False)
    server, base = serve_in_thread(SearchService(r))
    yield r, base
    server.shutdown()
    server.server_close()


def relative(hits, root):
    return [Path(h.path).relative_to(root).as_posix() for h in hits]


def test_api_search_equals_retriever(served, gallery):
    r, base = served
    for query in QUERIES:
        status, answer = get_json(base, f"/api/search?q={quote(query)}&k=4")
        assert status == 200 and answer["videos"] == 10 and answer["truncated"] is False
        expected = r.search(query, k=4)[0]
        assert [h["video"] for h in answer["results"]] == relative(expected, gallery)
        assert [h["score"] for h in answer["results"]] == pytest.approx([h.score for h in expected], abs=1e-6)
        assert [h["rank"] for h in answer["results"]] == [1, 2, 3, 4] and answer["ms"] > 0
    # The synthetic .mp4 files are H.264 yuv420p (browsers play them); Matroska and AVI get frame strips.
    _, everything = get_json(base, "/api/search?q=anything&k=100")
    playable = {h["video"]: h["playable"] for h in everything["results"]}
    assert len(playable) == 10 and playable == {rel: rel.endswith(".mp4") for rel in playable}
    assert get_json(base, "/api/search?q=anything")[1]["results"].__len__() == 10  # default k 12, capped by N


def test_similar_returns_the_video_first(served, gallery):
    r, base = served
    for rel in [p.relative_to(gallery).as_posix() for p in sorted(gallery.rglob("*.*"))]:
        status, answer = get_json(base, f"/api/similar?video={quote(rel)}&k=3")
        assert status == 200 and answer["results"][0]["video"] == rel
        assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert answer["results"][1]["score"] <= answer["results"][0]["score"]
    status, answer = get_json(base, "/api/similar?video=not/there.mp4")
    assert status == 404 and "not an indexed video" in answer["error"]


def test_long_empty_and_bad_queries(served):
    r, base = served
    words = " ".join(["red circle"] * 40)  # 80 words: far beyond max_words - 2 = 30 tokens
    answers = [get_json(base, f"/api/search?q={quote(words + tail)}&k=5") for tail in (" upward", " blue square")]
    assert all(status == 200 for status, _ in answers)
    first, second = answers[0][1], answers[1][1]
    assert first["truncated"] and first["tokens_kept"] == 30 and first["tokens"] == 81
    assert first["results"] == second["results"]  # what differs lies beyond the cut
    for path, message in [("/api/search?q=", "empty query"), ("/api/search?q=%20%20", "empty query"),
                          ("/api/search", "empty query"), ("/api/search?q=x&k=0", "k must be"),
                          ("/api/search?q=x&k=ten", "k must be"), ("/api/search?q=x&k=101", "k must be"),
                          ("/api/similar", "no video given"), ("/api/nothing", "no such API")]:
        status, answer = get_json(base, path)
        assert status in (400, 404) and message in answer["error"], path
    assert get_json(base, "/api/search?q=a+red+circle&k=2")[0] == 200  # still serving


def test_internal_error_is_a_json_500_and_the_server_goes_on(served, monkeypatch, caplog):
    r, base = served

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(r, "search", broken)
    status, answer = get_json(base, "/api/search?q=a+red+circle")
    assert status == 500 and "server log" in answer["error"] and "simulated failure" in caplog.text
    monkeypatch.undo()
    assert get_json(base, "/api/search?q=a+red+circle")[0] == 200


def test_paths_outside_the_index_are_never_served(gallery, transformer, tmp_path):
    videos = shutil.copytree(gallery, tmp_path / "videos")
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"SECRET" * 100)
    r = retriever(transformer)
    r.index(videos, tmp_path / "index", progress=False)
    (videos / "escape.mp4").symlink_to(secret)  # added after indexing: not indexed
    (videos / "sub" / "texture.mkv").unlink()
    (videos / "sub" / "texture.mkv").symlink_to(secret)  # an indexed name now pointing outside
    server, base = serve_in_thread(SearchService(r))
    try:
        attempts = {
            "/video/../secret.mp4": 404, "/video/%2e%2e/secret.mp4": 404, "/video/%2E%2E%2Fsecret.mp4": 404,
            "/video/sub/../../secret.mp4": 404, "/video/" + quote(str(secret)): 404, "/video/" + str(secret): 404,
            "/video//" + str(secret): 404, "/video/escape.mp4": 404, "/video/sub/texture.mkv": 403,
            "/frames/sub/texture.mkv": 403, "/frames/%2e%2e/secret.mp4": 404, "/../secret.mp4": 404,
            "/static/../../secret.mp4": 404, "/video/video0.mp4%00.txt": 404,
        }
        for path, expected in attempts.items():
            for method in ("GET", "HEAD"):
                status, _, body = get(base, path, {"Range": "bytes=0-"}, method)
                assert status == expected and b"SECRET" not in body, (method, path)
        assert get(base, "/video/video0.mp4")[0] == 200  # the indexed files inside still are
    finally:
        server.shutdown()
        server.server_close()


def test_range_requests(served, gallery):
    _, base = served
    data = (gallery / "video0.mp4").read_bytes()
    size = len(data)
    status, headers, body = get(base, "/video/video0.mp4")
    assert (status, body, headers["Accept-Ranges"], headers["Content-Type"]) == (200, data, "bytes", "video/mp4")
    for header, first, last in [("bytes=10-99", 10, 99), ("bytes=100-", 100, size - 1), ("bytes=-50", size - 50, size - 1),
                                ("bytes=0-0", 0, 0), (f"bytes=5-{10 * size}", 5, size - 1), (f"bytes=-{10 * size}", 0, size - 1)]:
        status, headers, body = get(base, "/video/video0.mp4", {"Range": header})
        assert status == 206 and headers["Content-Range"] == f"bytes {first}-{last}/{size}", header
        assert body == data[first:last + 1] and headers["Content-Length"] == str(last - first + 1)
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0", "bytes=9-3"):
        status, headers, body = get(base, "/video/video0.mp4", {"Range": header})
        assert (status, headers["Content-Range"], body) == (416, f"bytes */{size}", b""), header
    assert get(base, "/video/video0.mp4", {"Range": "bytes=0-9,20-29"})[2] == data  # several ranges: whole file
    status, headers, body = get(base, "/video/video0.mp4", {"Range": "bytes=0-9"}, "HEAD")
    assert (status, headers["Content-Length"], body) == (206, "10", b"")


def test_byte_range_parsing():
    assert byte_range(None, 100) is None and byte_range("items=0-5", 100) is None and byte_range("bytes=-", 100) is None
    assert byte_range("bytes=0-9", 100) == (0, 9) and byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=-10", 100) == (90, 99) and byte_range("bytes=0-500", 100) == (0, 99)
    for header in ("bytes=100-", "bytes=-0", "bytes=50-40"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(header, 100)
    with pytest.raises(RangeNotSatisfiable):
        byte_range("bytes=-5", 0)


def test_concurrent_clients(served):
    r, base = served
    queries = [f"{QUERIES[i % 3]} number {i}" for i in range(20)]
    expected = {q: [h.score for h in hits] for q, hits in zip(queries, r.search(queries, k=3))}
    host, port = base.removeprefix("http://").split(":")

    def client(worker):
        connection = http.client.HTTPConnection(host, int(port), timeout=60)  # one keep-alive connection each
        answers = []
        for i, query in enumerate(queries):
            connection.request("GET", f"/api/search?q={quote(query)}&k=3")
            response = connection.getresponse()
            answers.append((query, response.status, json.loads(response.read())))
            if i % 5 == worker % 5:  # videos on the same connection in between
                connection.request("GET", "/video/video1.mp4", headers={"Range": "bytes=0-99"})
                response = connection.getresponse()
                answers.append(("range", response.status, len(response.read())))
        connection.close()
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for worker in pool.map(client, range(8)) for a in worker]
    assert len(answers) == 8 * 24 and threading.active_count() < 40
    for query, status, answer in answers:
        if query == "range":
            assert (status, answer) == (206, 100)
        else:
            assert status == 200 and [h["score"] for h in answer["results"]] == pytest.approx(expected[query], abs=1e-5)


def test_frame_strip_shows_the_sampled_frames(served, gallery):
    """The strip holds the model's T frames, sampled as the index samples them (T = 4 here, not a fixed 6)."""
    r, base = served
    status, headers, body = get(base, "/frames/sub/texture.mkv")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    strip = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(float)
    frames_seen = r.model.config.max_frames
    frames, _ = read_eval_frames(gallery / "sub" / "texture.mkv", frames_seen, 128)
    assert frames_seen == 4 and strip.shape == (128, 4 * 128, 3)
    assert get_json(base, "/api/info")[1]["frames"] == 4
    for i, frame in enumerate(frames.permute(0, 2, 3, 1).numpy().astype(float)):
        assert np.abs(strip[:, i * 128:(i + 1) * 128] - frame).mean() < 8  # JPEG error only


def test_info_names_the_checkpoint_and_what_the_model_sees(served):
    _, base = served
    status, info = get_json(base, "/api/info")
    assert status == 200 and info["checkpoint"] == "test-model"  # the fixture's recorded source
    assert (info["method"], info["frames"], info["resolution"]) == ("DGL-transformer", 4, 64)
    assert checkpoint_name("/data/demo/runs/dgl-transformer/checkpoint_best.pt") == "dgl-transformer/checkpoint_best.pt"
    assert checkpoint_name("ckpt.pth.tar") == "ckpt.pth.tar" and checkpoint_name(None) == "unknown checkpoint"


def test_unsupported_methods_get_a_json_405(served):
    _, base = served
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, body = get(base, "/api/search?q=a+red+circle", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD" and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": f"method {method} is not allowed here; use GET or HEAD"}
    # A body that is never read: the connection closes after the answer instead of reading it as a request.
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/api/search", body=b"q=a+red+circle" * 1000)
    response = connection.getresponse()
    assert response.status == 405 and response.getheader("Connection") == "close" and json.loads(response.read())
    connection.close()
    status, headers, body = get(base, "/", method="BREW")  # not an HTTP method at all: the base class's 501
    assert status == 501 and headers["Content-Type"] == "application/json" and json.loads(body)["error"]
    assert get_json(base, "/api/search?q=a+red+circle")[0] == 200  # still serving


def test_page_and_static_files(served):
    _, base = served
    status, headers, body = get(base, "/?q=a+red+circle")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b'src="/app.js"' in body
    assert all(get(base, path)[0] == 200 for path in ("/app.js", "/style.css"))
    assert b"http" not in get(base, "/")[2].replace(b"http-equiv", b"")  # no CDN or other remote assets


def test_serve_refuses_another_models_index(gallery, fixture_dir, tmp_path, capsys):
    out = tmp_path / "index"
    Retriever.from_checkpoint(fixture_dir / "dgl_transformer_ckpt.pth.tar", device="cpu", workers=0).index(
        gallery, out, progress=False)
    other = fixture_dir / "dgl_linear_ckpt.pth.tar"
    assert retrieve.main(["serve", "--index", str(out), "--checkpoint", str(other), "--device", "cpu", "--port", "0"]) == 2  # a user error: exit 2 (utils/cli.py)
    assert "they differ in" in capsys.readouterr().err


def test_latency_tool_on_small_indexes(capsys):
    search_latency.main(["--videos", "30", "--big", "300", "--queries", "4", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[:4]] == ["30 videos", "300 videos", "300 videos", "300 videos"]
    assert all("p50_ms=" in line for line in lines[:3]) and lines[4] == "torch threads: 1"
    assert re.fullmatch(r"300 videos, low-confidence floor at server start \(128 probes\): \d+\.\d\d s", lines[3])


def test_percentiles_by_hand():
    p = search_latency.Percentiles.of([0.001 * i for i in range(1, 11)])  # 1..10 ms
    assert (p.p50_ms, p.p90_ms) == (5.5, 9.9)


def test_screenshot_tool_refuses_a_missing_index_in_one_line(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert page_screenshot.main(["--index", str(tmp_path / "nothing"), "--query", "x", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a video index" in err and not out.exists()
