"""Video retrieval mechanics on synthetic videos with the fixture checkpoints: indexing, interruption and resume,
top-k equal to a brute-force computation with an independently built model, bad files, refusal of another
model, official and compact checkpoints, and the command line."""
import copy
import json
import shutil

import pytest
import torch

import retrieve
from dataloaders.frames import read_eval_frames
from models.checkpoint import atomic_save, compact_checkpoint, load_official_checkpoint
from models.clip import CLIP
from models.dgl import DGL
from models.factory import load_dgl
from models.tokenizer import ClipTokenizer
from tests.video_utils import CUT_CONTAINERS, corrupt_file, write_cut_video
from apps.retrieval import SHARD_GLOB, IndexModelMismatch, Retriever, VideoIndex
from utils.flags import dgl_config
from utils.trainer import rng_state

QUERIES = ["a red circle moves upward", "the blue square shrinks", "a purple cross on a white background"]


def gallery_files(folder):
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".mp4", ".mkv", ".avi"})


def retriever(model, **options):
    return Retriever(model, "cpu", {"checkpoint": "test-model"}, **{"workers": 0, "batch_size": 3, **options})


class Crash(Exception):
    """Stands for a killed run (Ctrl-C, out of memory, a lost machine)."""


def count_encoded(monkeypatch, r, fail_on_call=None):
    """Record the videos each encoding call gets; optionally crash at one call."""
    seen, encode = [], Retriever.encode_videos.__get__(r)  # the method, not an earlier wrapper

    def counting(videos):
        if len(seen) + 1 == fail_on_call:
            raise Crash
        seen.append(len(videos))
        return encode(videos)

    monkeypatch.setattr(r, "encode_videos", counting)
    return seen


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in folder.glob(SHARD_GLOB)}


def test_interrupted_index_resumes_without_reencoding(gallery, transformer, tmp_path, monkeypatch):
    out = tmp_path / "index"
    r = retriever(transformer)
    # A crash in the third batch: the two finished batches (6 videos) are on disk.
    seen = count_encoded(monkeypatch, r, fail_on_call=3)
    with pytest.raises(Crash):
        r.index(gallery, out, progress=False)
    assert seen == [3, 3] and len(VideoIndex.load(out)) == 6
    # A run capped by max_videos, then one that finishes: each video is encoded once, old shards stay as written.
    seen = count_encoded(monkeypatch, r)
    before = shard_bytes(out)
    first = r.index(gallery, out, max_videos=2, shard_size=1, progress=False)
    assert (first.found, first.already_indexed, first.encoded, first.remaining, first.total) == (10, 6, 2, 2, 8)
    second = r.index(gallery, out, progress=False)
    assert (second.already_indexed, second.encoded, second.remaining, second.total) == (8, 2, 0, 10)
    assert sum(seen) == 4
    assert {k: v for k, v in shard_bytes(out).items() if k in before} == before
    assert r.index(gallery, out, progress=False).encoded == 0 and sum(seen) == 4
    # Equal to one uninterrupted run (here with parallel decoding workers).
    full = retriever(transformer, workers=2, batch_size=4).index(gallery, tmp_path / "full", progress=False)
    assert (full.encoded, full.total) == (10, 10)
    resumed, whole = VideoIndex.load(out), VideoIndex.load(tmp_path / "full")
    assert resumed.stamps == whole.stamps and resumed.paths() == gallery_files(gallery)
    torch.testing.assert_close(resumed.features, whole.features, atol=1e-5, rtol=1e-5)


def fixture_model(fixture_dir, variant):
    """Built without models.factory: the fixture's own config and the tiny CLIP file."""
    args = json.loads((fixture_dir / "config.json").read_text())["variants"][variant]["args"]
    model = DGL(CLIP.from_pretrained(str(fixture_dir / "tiny_clip_jit.pt")), dgl_config(args)).eval()
    load_official_checkpoint(model, fixture_dir / f"dgl_{variant}_ckpt.pth.tar")
    return model


def test_search_top_k_equals_brute_force(gallery, transformer, fixture_dir, tmp_path):
    r = retriever(transformer)
    r.index(gallery, tmp_path / "index", progress=False)
    results = r.search(QUERIES, k=4)
    # Brute force: every video alone through the evaluation frame reader, the full logit matrix, a sort.
    model, paths = fixture_model(fixture_dir, "transformer"), gallery_files(gallery)
    with torch.no_grad():
        video = torch.cat([model.encode_video(read_eval_frames(p, 4, 64)[0][None]) for p in paths])
        logits = model.logits(model.encode_text(ClipTokenizer()(QUERIES, 32)[0]), video)
    expected = logits.sort(dim=1, descending=True)
    scale = model.clip.logit_scale.exp().item()
    for hits, values, order in zip(results, expected.values, expected.indices):
        assert [h.path for h in hits] == [str(paths[j]) for j in order[:4]]
        torch.testing.assert_close(torch.tensor([h.logit for h in hits]), values[:4], atol=1e-4, rtol=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(abs(h.logit - scale * h.score) < 1e-4 for h in hits)
    assert len(r.search("a green triangle", k=100)[0]) == len(paths)


def test_bad_files_are_skipped_counted_and_not_retried(gallery, transformer, tmp_path):
    videos, out = shutil.copytree(gallery, tmp_path / "videos"), tmp_path / "index"
    corrupt_file(videos / "broken.mp4")
    (videos / "sub" / "empty.webm").write_bytes(b"")
    (videos / "notes.txt").write_text("not a video: ignored")
    r = retriever(transformer)
    report = r.index(videos, out, progress=False)
    assert (report.found, report.encoded, report.total) == (12, 10, 10)
    assert sorted(rel for rel, _ in report.failed) == ["broken.mp4", "sub/empty.webm"]
    assert "failed: broken.mp4: " in report.summary()
    index = VideoIndex.load(out)
    assert set(index.failed) == {"broken.mp4", "sub/empty.webm"}
    assert bool((index.features.norm(dim=-1) > 0).all()) and len(index) == 10
    again = r.index(videos, out, progress=False)
    assert (again.encoded, again.failed, again.known_failures) == (0, [], 2)
    # A replaced file (new size and mtime) is encoded on the next run, and no longer counts as failed.
    shutil.copy(videos / "video0.mp4", videos / "broken.mp4")
    fixed = r.index(videos, out, progress=False)
    assert (fixed.encoded, fixed.known_failures, fixed.total) == (1, 1, 11)
    assert set(VideoIndex.load(out).failed) == {"sub/empty.webm"}


def test_cut_matroska_and_webm_are_named_failed_not_indexed(gallery, transformer, tmp_path):
    videos, out = shutil.copytree(gallery, tmp_path / "videos"), tmp_path / "index"
    names = [f"cut{k}{suffix}" for k, (suffix, _) in enumerate(CUT_CONTAINERS)]
    for name, (_, codec) in zip(names, CUT_CONTAINERS):
        write_cut_video(videos / name, codec)
    report = retriever(transformer).index(videos, out, progress=False)
    assert (report.found, report.encoded) == (13, 10)
    assert sorted(rel for rel, _ in report.failed) == names
    assert all("truncated: the container says the video lasts 10.00 s" in error for _, error in report.failed)


def test_other_model_is_refused(gallery, transformer, fixture_dir, tmp_path):
    out = tmp_path / "index"
    retriever(transformer).index(gallery, out, progress=False)
    shards = shard_bytes(out)
    linear = Retriever(load_dgl(fixture_dir / "dgl_linear_ckpt.pth.tar", max_frames=4), "cpu", {"checkpoint": "linear.pt"})
    with pytest.raises(IndexModelMismatch, match=r"test-model .*transformer variant.*linear\.pt .*linear variant"):
        linear.open(out)
    with pytest.raises(IndexModelMismatch, match="dgl_config.shared_latent_space"):
        linear.index(gallery, out, progress=False)
    # Same sizes, other prompt values: refused too.
    retrained = copy.deepcopy(transformer)
    with torch.no_grad():
        retrained.global_prompts.add_(1e-3)
    with pytest.raises(IndexModelMismatch, match=r"they differ in prompts\. "):
        retriever(retrained).open(out)
    assert shard_bytes(out) == shards


def test_official_and_compact_checkpoints_share_an_index(gallery, fixture_dir, tmp_path):
    official = Retriever.from_checkpoint(fixture_dir / "dgl_transformer_ckpt.pth.tar", device="cpu", workers=0)
    path = tmp_path / "compact.pt"
    # As the trainer writes it, training state included: it must load with weights_only=True.
    atomic_save(compact_checkpoint(official.model, {"name": str(fixture_dir / "tiny_clip_jit.pt")}, rng=rng_state()), path)
    compact = Retriever.from_checkpoint(path, device="cpu", workers=0)
    assert compact.identity == official.identity
    official.index(gallery, tmp_path / "index", progress=False)
    compact.open(tmp_path / "index")
    for a, b in zip(official.search(QUERIES, 3), compact.search(QUERIES, 3)):
        assert [h.path for h in a] == [h.path for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)


def test_cli_index_search_and_reverse(gallery, fixture_dir, tmp_path, capsys):
    ckpt, out = fixture_dir / "dgl_linear_ckpt.pth.tar", tmp_path / "index"
    # An official linear checkpoint with a non-default T: the override is recorded and reused by search.
    assert retrieve.main(["index", "--videos", str(gallery), "--checkpoint", str(ckpt), "--out", str(out),
                          "--max_frames", "4", "--workers", "0", "--quiet"]) == 0
    assert "10 encoded now" in capsys.readouterr().out
    assert retrieve.main(["search", "--index", str(out), *QUERIES[:2], "--top_k", "3", "--json", "--device", "cpu"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["videos"] == 10 and [q["query"] for q in answer["queries"]] == QUERIES[:2]
    assert all(len(q["results"]) == 3 and q["results"][0]["score"] >= q["results"][2]["score"] for q in answer["queries"])
    assert retrieve.main(["search", "--index", str(out), QUERIES[0], "--device", "cpu"]) == 0
    assert "cosine" in capsys.readouterr().out
    captions = tmp_path / "captions.txt"
    captions.write_text(f"{QUERIES[0]}\n\n{QUERIES[1]}\n{QUERIES[2]}\n")
    assert retrieve.main(["search", "--index", str(out), "--video", str(gallery / "video0.mp4"),
                          "--captions", str(captions), "--top_k", "2", "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert len(rows) == 2 and {r["line"] for r in rows} <= {1, 3, 4} and rows[0]["score"] >= rows[1]["score"]
    # Another model: an error message naming both checkpoints, no traceback.
    other = fixture_dir / "dgl_transformer_ckpt.pth.tar"
    assert retrieve.main(["search", "--index", str(out), "x", "--checkpoint", str(other), "--device", "cpu"]) == 2  # a user error: exit 2, as every CLI (utils/cli.py)
    err = capsys.readouterr().err
    assert "dgl_linear_ckpt.pth.tar" in err and "dgl_transformer_ckpt.pth.tar" in err


def test_itm_rerank_is_refused_for_an_index_without_an_itm_head(gallery, transformer, tmp_path, capsys):
    """DGL on CLIP has no ITM head: the flag is refused in one line, before the model loads, and by the API."""
    out = tmp_path / "index"
    r = retriever(transformer)
    r.index(gallery_files(gallery)[:2], out, progress=False)
    with pytest.raises(ValueError, match=r"--itm_rerank 4: this index's model \(--model dgl\) has no ITM head"):
        r.search(QUERIES[0], 2, itm_rerank=4)
    capsys.readouterr()
    # The index records a checkpoint that does not exist ("test-model"): the refusal comes before any loading.
    assert retrieve.main(["search", "--index", str(out), QUERIES[0], "--itm_rerank", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "only an index built from a --model dgl_blip checkpoint re-ranks: drop --itm_rerank" in err
    assert len(err.splitlines()) == 1
