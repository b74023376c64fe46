"""The JPEG frame-cache format, resumable builds and the free-space check of preprocess/cache_frames.py."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dataloaders import VideoDataset, build_split, frames
from dataloaders.frame_cache import JOURNAL, MANIFEST, CacheSettings, FrameCache, FrameCacheError
from dataloaders.frame_codec import encode_jpeg_stack, read_jpeg_stack
from dataloaders.synthetic import write_video
from preprocess import cache_frames, cache_size
from preprocess.cache_frames import build_cache, main
from tests import layouts
from tests.video_utils import indices_of_video

ROOT = Path(__file__).resolve().parents[1]
# Documented JPEG q90 error (docs/benchmarks.md) on textured video: max abs pixel error, mean abs error.
JPEG_MAX_ABS, JPEG_MEAN_ABS = 48, 3.0


@pytest.fixture()
def msrvtt(tmp_path):
    return layouts.make_msrvtt(tmp_path / "data")


@pytest.fixture()
def textured(tmp_path):
    """The MSR-VTT layout with its four videos replaced by textured ones (moving gradients + noise)."""
    cfg = layouts.make_msrvtt(tmp_path / "data")
    for seed, (name, count) in enumerate({"video0": 30, "video1": 5, "video2": 13, "video3": 24}.items()):
        write_video(cfg.features_path / f"{name}.mp4", count, 96, 64, pattern="texture", seed=seed)
    return dataclasses.replace(cfg, image_resolution=64)


def test_jpeg_stack_decodes_the_picked_frames_in_order(tmp_path):
    rng = np.random.default_rng(0)
    stack = np.repeat(np.arange(0, 250, 50, dtype=np.uint8)[:, None, None, None], 3, axis=1)
    stack = np.broadcast_to(stack, (5, 3, 16, 16)) + rng.integers(0, 3, (5, 3, 16, 16), dtype=np.uint8)
    path = tmp_path / "v.jpgs"
    path.write_bytes(encode_jpeg_stack(stack, 95))
    picked = read_jpeg_stack(path, np.array([4, 0, 0, 2]))
    assert picked.shape == (4, 3, 16, 16) and picked.dtype == np.uint8
    assert np.abs(picked.astype(int) - stack[[4, 0, 0, 2]].astype(int)).max() <= 4  # flat frames: near exact
    assert np.array_equal(read_jpeg_stack(path), read_jpeg_stack(path, np.arange(5)))
    with pytest.raises(ValueError, match="holds 5 frames"):
        read_jpeg_stack(path, np.array([5]))
    (tmp_path / "bad.jpgs").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="not a JPEG stack"):
        read_jpeg_stack(tmp_path / "bad.jpgs")


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the frame cache holds the video")

    monkeypatch.setattr(frames, "read_video", fail)


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_both_formats_round_trip_through_the_loader(msrvtt, tmp_path, monkeypatch, fmt):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / fmt, max_frames=3)
    report = build_cache([build_split(cfg, "test")], cfg, all_frames=True, fmt=fmt)
    assert (report.cached, report.failed, report.frames) == (2, 0, 24 + 30)
    cache = FrameCache.open(cfg.frame_cache)
    assert cache.settings.format == fmt and (cache.settings.jpeg_quality == 90) == (fmt == "jpeg")
    assert all(entry.file.endswith(".npy" if fmt == "raw" else ".jpgs") for entry in cache.entries.values())
    decoded = VideoDataset(build_split(msrvtt, "test"), dataclasses.replace(msrvtt, max_frames=3))
    expected = [decoded[i]["video"] for i in range(2)]
    forbid_decoding(monkeypatch)
    loader = VideoDataset(build_split(cfg, "test"), cfg)
    got = [loader[i]["video"] for i in range(2)]
    assert [indices_of_video(v).tolist() for v in got] == [[4, 12, 20], [5, 15, 25]]  # n = 24, 30: centres
    for have, want in zip(got, expected):
        error = (have.int() - want.int()).abs().max().item()
        assert error == 0 if fmt == "raw" else error <= 3  # flat gray frames: JPEG is near exact


def test_jpeg_cache_stays_within_its_documented_error(textured, tmp_path):
    cfg = dataclasses.replace(textured, frame_cache=tmp_path / "jpeg")
    raw_cfg = dataclasses.replace(textured, frame_cache=tmp_path / "raw")
    jpeg = build_cache([build_split(cfg, "test")], cfg, all_frames=False, fmt="jpeg")
    raw = build_cache([build_split(raw_cfg, "test")], raw_cfg, all_frames=False)
    split = build_split(textured, "test")
    errors = [(VideoDataset(split, cfg)[i]["video"].int() - VideoDataset(split, raw_cfg)[i]["video"].int()).abs()
              for i in range(split.num_videos)]
    assert max(e.max().item() for e in errors) <= JPEG_MAX_ABS
    assert torch.cat([e.flatten() for e in errors]).float().mean().item() <= JPEG_MEAN_ABS
    assert jpeg.bytes < raw.bytes / 4


def test_build_refuses_a_disk_that_is_too_small_before_any_work(msrvtt, tmp_path, monkeypatch, capsys):
    cache_dir = tmp_path / "cache"
    cfg = dataclasses.replace(msrvtt, frame_cache=cache_dir)
    need = 2 * (128 + 4 * 3 * 32 * 32)  # two test videos, T = 4 raw frames at 32 px each
    monkeypatch.setattr(cache_size, "free_bytes", lambda folder: need - 1)
    with pytest.raises(cache_size.DiskSpaceError, match=r"need about .* GB but only .* free.*frame_cache_format jpeg"):
        build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())  # nothing written, not even a manifest
    argv = ["--datatype", "msrvtt", "--data_path", str(msrvtt.data_path), "--features_path", str(msrvtt.features_path),
            "--val_csv", str(msrvtt.val_csv), "--max_frames", "4", "--image_resolution", "32",
            "--frame_cache", str(cache_dir), "--workers", "1"]
    assert main(argv) == 2 and "free" in capsys.readouterr().err
    monkeypatch.setattr(cache_size, "free_bytes", lambda folder: need)  # exactly enough: the raw estimate is exact
    report = build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    assert report.estimate.bytes == report.bytes == need


def test_all_frames_estimate_counts_the_frames_of_each_video(msrvtt, tmp_path):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    report = build_cache([build_split(cfg, "train")], cfg, all_frames=True)
    assert report.estimate.frames == report.frames == 30 + 5 + 13


KILLER = """
import os, signal, sys
from preprocess import cache_frames
real, calls = cache_frames.cache_video, []
def dying(*args):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard interruption: no cleanup code runs
    return real(*args)
cache_frames.cache_video = dying
sys.exit(cache_frames.main(sys.argv[1:]))
"""


def test_a_killed_build_resumes_without_redoing_finished_videos(msrvtt, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    argv = ["--datatype", "msrvtt", "--data_path", str(msrvtt.data_path), "--features_path", str(msrvtt.features_path),
            "--train_csv", str(msrvtt.train_csv), "--val_csv", str(msrvtt.val_csv), "--subsets", "train", "test",
            "--max_frames", "4", "--image_resolution", "32", "--frame_cache", str(cache_dir), "--workers", "1",
            "--all_frames"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", KILLER, *argv], env=env, cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    journaled = [json.loads(line) for line in (cache_dir / JOURNAL).read_text().splitlines()]
    assert len(journaled) == 2 and json.loads((cache_dir / MANIFEST).read_text())["entries"] == {}
    stamps = {e["file"]: (cache_dir / e["file"]).stat().st_mtime_ns for e in journaled}
    redone, real = [], cache_frames.cache_video
    monkeypatch.setattr(cache_frames, "cache_video", lambda cache, path, *a: redone.append(path.name) or real(cache, path, *a))
    cfg = dataclasses.replace(msrvtt, frame_cache=cache_dir)
    report = build_cache([build_split(cfg, "train"), build_split(cfg, "test")], cfg, all_frames=True)
    assert (report.up_to_date, report.cached) == (2, 2) and len(redone) == 2
    assert {e["source"].rsplit("/", 1)[-1] for e in journaled}.isdisjoint(redone)
    assert all((cache_dir / f).stat().st_mtime_ns == t for f, t in stamps.items())  # finished files untouched
    assert not (cache_dir / JOURNAL).exists() and len(FrameCache.open(cache_dir).entries) == 4


def test_a_manifest_without_format_reads_as_raw(msrvtt, tmp_path):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    manifest = tmp_path / "cache" / MANIFEST
    data = json.loads(manifest.read_text())
    data["settings"] = {"resolution": 32, "num_frames": 4}  # as written before the format field existed
    for entry in data["entries"].values():
        entry.pop("bytes")
    manifest.write_text(json.dumps(data))
    assert FrameCache.open(tmp_path / "cache").settings.format == "raw"
    assert VideoDataset(build_split(cfg, "test"), cfg)[0]["video"].shape == (4, 3, 32, 32)
    with pytest.raises(FrameCacheError, match="--rebuild"):
        build_cache([build_split(cfg, "test")], cfg, all_frames=False, fmt="jpeg")


def chroma_rich_frames(rng: np.random.Generator, count: int = 4, size: int = 32) -> np.ndarray:
    """uint8 [count, 3, size, size]: one-pixel stripes of saturated colours at random phases, the content
    whose colour 4:2:0 chroma averages away (the demo's small hard-edged shapes are of this kind)."""
    palette = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0], [255, 255, 0]], np.uint8)
    columns = rng.integers(0, len(palette), (count, 1, size))
    return np.ascontiguousarray(np.broadcast_to(palette[columns], (count, size, size, 3)).transpose(0, 3, 1, 2))


def jpeg_round_trip(frames: np.ndarray, subsampling: str, folder: Path) -> np.ndarray:
    path = folder / f"q90-{subsampling}.jpgs"
    path.write_bytes(encode_jpeg_stack(frames, 90, subsampling))
    return read_jpeg_stack(path)


def test_full_chroma_jpeg_keeps_colour_that_420_averages_away(tmp_path):
    """A chroma statistic with a margin chance cannot cross: on saturated one-pixel colour stripes 4:2:0
    loses most of the colour (mean error tens of levels) and 4:4:4 keeps it (a few levels)."""
    frames = chroma_rich_frames(np.random.default_rng(0))
    error = {sub: np.abs(jpeg_round_trip(frames, sub, tmp_path).astype(int) - frames).mean() for sub in ("420", "444")}
    assert error["444"] < 8 < 25 < error["420"], error


def test_full_chroma_cache_stores_its_setting_and_is_not_mixed_with_420(textured, tmp_path):
    """Each cache holds exactly what the codec gives for its recorded subsampling, applied to the raw
    cache's frames (so the option reaches the writer); the sizes order as raw > 4:4:4 > 4:2:0."""
    split = build_split(textured, "test")
    configs = {name: dataclasses.replace(textured, frame_cache=tmp_path / name) for name in ("raw", "420", "444")}
    reports = {"raw": build_cache([split], configs["raw"], all_frames=False)}
    for sub in ("420", "444"):
        reports[sub] = build_cache([split], configs[sub], all_frames=False, fmt="jpeg", jpeg_subsampling=sub)
        assert FrameCache.open(tmp_path / sub).settings.jpeg_subsampling == sub
    raw = FrameCache.open(tmp_path / "raw")
    for key, entry in raw.entries.items():
        frames = np.load(tmp_path / "raw" / entry.file)
        for sub in ("420", "444"):
            stored = read_jpeg_stack(tmp_path / sub / FrameCache.open(tmp_path / sub).entries[key].file)
            other = "444" if sub == "420" else "420"
            assert np.array_equal(stored, jpeg_round_trip(frames, sub, tmp_path)), (key, sub)
            assert not np.array_equal(stored, jpeg_round_trip(frames, other, tmp_path)), (key, sub)
    assert reports["420"].bytes < reports["444"].bytes < reports["raw"].bytes
    with pytest.raises(FrameCacheError, match=r"JPEG q90 4:4:4, not .*JPEG q90 4:2:0.*--rebuild"):
        build_cache([split], configs["444"], all_frames=False, fmt="jpeg", jpeg_subsampling="420")


def test_a_jpeg_manifest_without_subsampling_reads_as_420(msrvtt, tmp_path):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    build_cache([build_split(cfg, "test")], cfg, all_frames=False, fmt="jpeg")
    manifest = tmp_path / "cache" / MANIFEST
    data = json.loads(manifest.read_text())
    assert data["settings"].pop("jpeg_subsampling") == "420"  # as written before the option existed
    manifest.write_text(json.dumps(data))
    assert FrameCache.open(tmp_path / "cache").settings == CacheSettings.of(32, 4, "jpeg")
    with pytest.raises(FrameCacheError, match="jpeg_subsampling"):
        CacheSettings(32, 4, "raw", jpeg_subsampling="444")


def replace_keeping_size_and_mtime(path: Path, frames: int) -> None:
    """Writes another index video (fewer frames) over ``path``, zero-padded to its size, with its mtime: what a
    copy that keeps times leaves when the new file happens to have the old one's size."""
    stat = path.stat()
    write_video(path, frames, 64, 40)
    assert path.stat().st_size < stat.st_size
    with open(path, "ab") as f:
        f.write(bytes(stat.st_size - path.stat().st_size))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def test_verify_finds_a_source_replaced_with_the_same_size_and_mtime(msrvtt, tmp_path, capsys):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    split = build_split(cfg, "test")  # video3 (24 frames) and video0 (30 frames)
    assert build_cache([split], cfg, all_frames=False).cached == 2
    replace_keeping_size_and_mtime(cfg.features_path / "video3.mp4", 8)
    assert build_cache([split], cfg, all_frames=False).up_to_date == 2  # size and mtime alone: not seen
    report = build_cache([split], cfg, all_frames=False, verify=True)
    assert (report.up_to_date, report.cached, report.verified_changed) == (1, 1, 1)
    assert "(1 changed in content only)" in capsys.readouterr().err
    video = VideoDataset(split, cfg)[0]["video"]  # from the cache, as rebuilt: the 8-frame video's centres
    assert indices_of_video(video.reshape(-1, *video.shape[-3:])).tolist() == [1, 3, 5, 7]
    assert build_cache([split], cfg, all_frames=False, verify=True).up_to_date == 2
