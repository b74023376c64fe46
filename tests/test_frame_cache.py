"""preprocess/cache_frames.py and the loaders reading the frame cache instead of the videos."""
import dataclasses
import os

import pytest
import torch

from dataloaders import TrainPairDataset, VideoDataset, build_split, frames
from dataloaders.frame_cache import FrameCache, FrameCacheError
from preprocess.cache_frames import build_cache, main
from tests import layouts
from tests.video_utils import indices_of_video, write_index_video


@pytest.fixture()
def msrvtt(tmp_path):
    return layouts.make_msrvtt(tmp_path / "data")


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the frame cache holds the video")

    monkeypatch.setattr(frames, "read_video", fail)


def test_evaluation_cache_gives_the_decoded_tensors(msrvtt, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    argv = [
        "--datatype", "msrvtt", "--data_path", str(msrvtt.data_path), "--features_path", str(msrvtt.features_path),
        "--val_csv", str(msrvtt.val_csv), "--train_csv", str(msrvtt.train_csv), "--max_frames", "4",
        "--image_resolution", "32", "--subsets", "test", "--frame_cache", str(cache_dir), "--workers", "1",
    ]
    assert main(argv) == 0
    assert FrameCache.open(cache_dir).settings.num_frames == 4
    split = build_split(msrvtt, "test")
    decoded = [VideoDataset(split, msrvtt)[i] for i in range(2)]
    forbid_decoding(monkeypatch)
    cached = VideoDataset(split, dataclasses.replace(msrvtt, frame_cache=cache_dir))
    for i in range(2):
        assert torch.equal(cached[i]["video"], decoded[i]["video"])
        assert torch.equal(cached[i]["video_mask"], decoded[i]["video_mask"])
    # Training cannot use evaluation frames: it decodes (and is not refused).
    train = TrainPairDataset(build_split(msrvtt, "train"), dataclasses.replace(msrvtt, frame_cache=cache_dir))
    assert train.videos.cache is None


def test_all_frames_cache_serves_training_and_any_t(msrvtt, tmp_path, monkeypatch):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    report = build_cache([build_split(cfg, "train"), build_split(cfg, "test")], cfg, all_frames=True)
    assert (report.videos, report.cached, report.up_to_date, report.failed) == (4, 4, 0, 0)  # video0 in both splits
    assert report.frames == 30 + 5 + 13 + 24
    assert report.bytes == sum(128 + n * 3 * 32 * 32 for n in (30, 5, 13, 24))  # .npy: 128-byte header + pixels
    train_split = build_split(msrvtt, "train")
    plain = TrainPairDataset(train_split, msrvtt)
    plain.set_epoch(2)
    expected = [plain[i] for i in range(len(plain))]
    forbid_decoding(monkeypatch)
    cached = TrainPairDataset(train_split, cfg)
    cached.set_epoch(2)
    for i, item in enumerate(expected):
        assert torch.equal(cached[i]["video"], item["video"]) and torch.equal(cached[i]["video_mask"], item["video_mask"])
    three = VideoDataset(build_split(msrvtt, "test"), dataclasses.replace(cfg, max_frames=3))
    assert indices_of_video(three[1]["video"]).tolist() == [5, 15, 25]  # n = 30, tick 10


def test_changed_source_makes_the_cache_stale_until_rebuilt(msrvtt, tmp_path):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    split = build_split(msrvtt, "test")
    write_index_video(msrvtt.features_path / "video3.mp4", 8)  # replaced by a shorter video
    with pytest.raises(FrameCacheError, match=r"stale: .*video3\.mp4 changed.*cache_frames"):
        VideoDataset(split, cfg)
    report = build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    assert (report.videos, report.cached, report.up_to_date, report.failed) == (2, 1, 1, 0)
    assert indices_of_video(VideoDataset(split, cfg)[0]["video"]).tolist() == [1, 3, 5, 7]  # n = 8


def test_touching_a_source_is_enough_to_detect_staleness(msrvtt, tmp_path):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    path = msrvtt.features_path / "video0.mp4"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(FrameCacheError, match="stale"):
        VideoDataset(build_split(msrvtt, "test"), cfg)


def test_mismatched_settings_are_refused(msrvtt, tmp_path):
    cfg = dataclasses.replace(msrvtt, frame_cache=tmp_path / "cache")
    build_cache([build_split(cfg, "test")], cfg, all_frames=False)
    split = build_split(msrvtt, "test")
    with pytest.raises(FrameCacheError, match="max_frames is 3"):
        VideoDataset(split, dataclasses.replace(cfg, max_frames=3))
    with pytest.raises(FrameCacheError, match="image_resolution is 64"):
        VideoDataset(split, dataclasses.replace(cfg, image_resolution=64))
    with pytest.raises(FrameCacheError, match="--rebuild"):
        build_cache([split], dataclasses.replace(cfg, max_frames=3), all_frames=False)
    assert build_cache([split], dataclasses.replace(cfg, max_frames=3), all_frames=False, rebuild=True).cached == 2
    with pytest.raises(FrameCacheError, match="no frame cache"):
        VideoDataset(split, dataclasses.replace(cfg, frame_cache=tmp_path / "elsewhere"))
