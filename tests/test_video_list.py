"""Indexing a split: `retrieve.py index --video_list` encodes exactly the listed videos of a folder (a test CSV's
ids, read here with the csv module), keeps the CSV's sentences as the index's captions, which the search page
offers as examples, and refuses a list that names a missing video before anything is written."""
import csv
import json

import pytest

import retrieve
from apps.retrieval import Retriever, VideoIndex
from apps.search_service import DEFAULT_EXAMPLES, SearchService, example_queries


def retrieve_index(gallery, fixture_dir, out, *extra):
    return retrieve.main(["index", "--videos", str(gallery), "--checkpoint", str(fixture_dir / "dgl_transformer_ckpt.pth.tar"),
                          "--out", str(out), "--device", "cpu", "--workers", "0", "--quiet", *extra])


def test_index_only_the_test_split_with_its_captions(gallery, fixture_dir, tmp_path):
    test_csv = gallery.parent / "MSRVTT_JSFUSION_test.csv"
    with test_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    captions = {}
    for row in rows:
        captions.setdefault(f"{row['video_id']}.mp4", []).append(row["sentence"])
    assert len(captions) == 2 and len(list(gallery.rglob("*.*"))) == 10  # 1 twin pair of 10 videos

    out = tmp_path / "test_index"
    assert retrieve_index(gallery, fixture_dir, out, "--video_list", str(test_csv)) == 0
    index = VideoIndex.load(out)
    assert [s.rel for s in index.stamps] == sorted(captions) and index.root == gallery
    assert json.loads((out / "captions.json").read_text()) == captions
    service = SearchService(Retriever.from_index(out, device="cpu", workers=0))
    assert service.info()["examples"] == [captions[rel][0] for rel in sorted(captions)]

    # A plain list of ids; an index without captions offers the documented defaults.
    listed = tmp_path / "three.txt"
    listed.write_text("video2\n\nvideo0\nvideo2\n")
    assert retrieve_index(gallery, fixture_dir, tmp_path / "three", "--video_list", str(listed)) == 0
    index = VideoIndex.load(tmp_path / "three")
    assert [s.rel for s in index.stamps] == ["video0.mp4", "video2.mp4"]
    assert SearchService(Retriever.from_index(tmp_path / "three", device="cpu", workers=0)).examples == list(DEFAULT_EXAMPLES)


@pytest.mark.parametrize("content, name, message", [
    ("video0\nvideo77\nvideo78\n", "list.txt", "--video_list names 2 videos not found under"),
    ("id,sentence\nvideo0,a red circle\n", "list.csv", "a CSV needs a video_id column"),
    ("\n\n", "list.txt", "lists no videos"),
])
def test_a_bad_list_is_one_line_and_writes_nothing(gallery, fixture_dir, tmp_path, capsys, content, name, message):
    listed = tmp_path / name
    listed.write_text(content)
    assert retrieve_index(gallery, fixture_dir, tmp_path / "index", "--video_list", str(listed)) == 2  # a user error (utils/cli.py)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "index").exists()
    if "not found" in message:
        assert "video77, video78" in err


def test_examples_spread_over_the_index():
    videos = [f"v{i}.mp4" for i in range(10)]
    captions = {rel: [f"caption of {rel}", "another"] for rel in videos if rel != "v3.mp4"}  # 9 described videos
    # 4 of 9, evenly spread: positions 0, 2.67, 5.33, 8 rounded -> 0, 3, 5, 8 of the described ones.
    assert example_queries(captions, videos) == [f"caption of v{i}.mp4" for i in (0, 4, 6, 9)]
    assert example_queries({}, videos) == list(DEFAULT_EXAMPLES)
    assert example_queries({"v1.mp4": ["only one"]}, videos) == ["only one"]
