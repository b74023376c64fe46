"""preprocess/check_dataset.py reports a prepared dataset as it is: counts, missing and corrupt files by name,
distributions and what needs compressing, with a non-zero exit status when a video is unusable."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dataloaders.parsers import DATASETS
from dataloaders.synthetic import write_video
from dataloaders.video_io import VideoProbe, window_frames
from preprocess import check_dataset
from tests.layouts import layout_maker, make_msrvtt


def flags(cfg) -> list[str]:
    return ["--datatype", "msrvtt", "--data_path", str(cfg.data_path), "--features_path", str(cfg.features_path),
            "--train_csv", str(cfg.train_csv), "--val_csv", str(cfg.val_csv), "--workers", "1"]


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    status = check_dataset.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def row(out: str, split: str) -> list[int]:
    line = next(line for line in out.splitlines() if line.startswith(split + " "))
    return [int(x) for x in line.split()[1:]]


def test_healthy_dataset_counts_and_distributions(tmp_path, capsys):
    # make_msrvtt: train lists video0-2 (2 captions each), the test CSV pairs video3 and video0;
    # frames 30, 5, 13, 24 at 3 fps, 64x40.
    cfg = make_msrvtt(tmp_path)
    status, out, _ = run(capsys, flags(cfg))
    assert status == 0
    assert row(out, "msrvtt/train") == [6, 3, 0, 0]
    assert row(out, "msrvtt/test") == [2, 2, 0, 0]
    assert "distinct video files: 4: 4 readable, 0 missing, 0 unreadable" in out
    assert "frames in its window:  min 5 / median 18.5 / max 30; 72 in all" in out
    assert "short side (px):       min 40 / median 40 / max 40" in out
    assert "need compressing:      0 of 4" in out
    # raw cache at 224 px: 3 * 224^2 bytes per frame plus a 128-byte header per video
    assert f"12 evaluation frames per video, raw: 48 frames, {(48 * 3 * 224**2 + 4 * 128) / 1e6:.3g} MB" in out
    assert out.rstrip().endswith("OK: every video file is readable.")


def test_two_missing_and_one_corrupt_video_are_reported_by_name(tmp_path, capsys):
    cfg = make_msrvtt(tmp_path)
    videos = Path(cfg.features_path)
    (videos / "video1.mp4").unlink()
    (videos / "video2.mp4").unlink()
    whole = (videos / "video3.mp4").read_bytes()
    (videos / "video3.mp4").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    write_video(videos / "video0.mp4", 30, 320, 240, fps=30)  # readable, above both compression defaults
    status, out, _ = run(capsys, flags(cfg))
    assert status == 1
    assert row(out, "msrvtt/train") == [6, 3, 2, 0]
    assert row(out, "msrvtt/test") == [2, 2, 0, 1]
    assert "distinct video files: 4: 1 readable, 2 missing, 1 unreadable" in out
    missing = out.split("missing (2):\n")[1].split("unreadable (1):")[0].splitlines()
    assert missing == [f"  {videos / 'video1.mp4'} (msrvtt/train id 'video1')",
                       f"  {videos / 'video2.mp4'} (msrvtt/train id 'video2')"]
    unreadable = out.split("unreadable (1):\n")[1].splitlines()[0]
    assert unreadable.startswith(f"  {videos / 'video3.mp4'} (msrvtt/test id 'video3'): cannot decode")
    assert "frame rate (fps):      min 30 / median 30 / max 30" in out
    assert "need compressing:      1 of 1 (1 above 3 fps, 1 with a short side above 224 px" in out
    assert "FAIL: 2 missing and 1 unreadable video files" in out


def test_a_video_used_by_two_splits_is_probed_and_listed_once(tmp_path, capsys):
    cfg = make_msrvtt(tmp_path)
    (Path(cfg.features_path) / "video0.mp4").unlink()  # in the train list and in the test CSV
    status, out, _ = run(capsys, flags(cfg))
    assert status == 1
    assert f"{Path(cfg.features_path) / 'video0.mp4'} (msrvtt/train id 'video0'; msrvtt/test id 'video0')" in out
    assert row(out, "msrvtt/train")[2] == 1 and row(out, "msrvtt/test")[2] == 1
    assert "distinct video files: 4: 3 readable, 1 missing, 0 unreadable" in out


@pytest.mark.parametrize("broken", ["annotations", "videos"])
def test_unreadable_annotations_or_video_folder_are_one_line_errors(tmp_path, capsys, broken):
    cfg = make_msrvtt(tmp_path)
    argv = flags(cfg)
    if broken == "annotations":
        Path(cfg.train_csv).unlink()
    else:
        argv[argv.index("--features_path") + 1] = str(tmp_path / "nowhere")
    status, out, err = run(capsys, argv)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert re.search(r"MSRVTT_train\.9k\.csv|--features_path .*nowhere", err)


def test_cache_forecast_after_compression_counts_frames_at_3_fps(tmp_path, capsys):
    cfg = make_msrvtt(tmp_path)
    write_video(Path(cfg.features_path) / "video0.mp4", 30, 64, 40, fps=30)  # 1 s at 30 fps -> 3 frames at 3 fps
    status, out, _ = run(capsys, flags(cfg))
    assert status == 0
    # frames of video0-3 as they are: 30 + 5 + 13 + 24 = 72; after compressing video0 to 3 fps: 3 + 5 + 13 + 24 = 45
    assert "every frame (--all_frames), raw: 72 frames" in out
    assert "every frame, raw, after compressing to 3 fps: 45 frames" in out


def data_flags(cfg) -> list[str]:
    argv = ["--datatype", cfg.datatype, "--data_path", str(cfg.data_path), "--features_path", str(cfg.features_path)]
    if cfg.datatype == "msrvtt":
        argv += ["--train_csv", str(cfg.train_csv), "--val_csv", str(cfg.val_csv)]
    return argv + ["--workers", "1"]


@pytest.mark.parametrize("datatype", sorted(DATASETS))
def test_every_dataset_layout_is_checked_with_the_loaders_counts(tmp_path, capsys, datatype):
    cfg = layout_maker(datatype)(tmp_path)
    expected = {subset: DATASETS[datatype](cfg, subset) for subset in ("train", "test")}
    status, out, _ = run(capsys, data_flags(cfg))
    assert status == 0, out
    for split in expected.values():
        assert row(out, split.name) == [split.num_captions, split.num_videos, 0, 0]
    distinct = {(p, s.window(i)) for s in expected.values() for i, p in enumerate(s.video_paths)}
    assert f"distinct video files: {len(distinct)}: {len(distinct)} readable, 0 missing, 0 unreadable" in out


def test_the_longest_video_is_not_decoded_whole_for_the_forecast(tmp_path):
    """The build-time sample is a median-length video, cut to its first SAMPLE_FRAMES frames."""
    probe = VideoProbe(frames=check_dataset.SAMPLE_FRAMES * 10, fps=30.0, height=40, width=64)
    video = check_dataset.VideoCheck(tmp_path / "long.mp4", (None, None), [], probe=probe)
    start, end = check_dataset.sample_window(video)
    assert window_frames(probe.frames, probe.fps, (start, end)) == (0, check_dataset.SAMPLE_FRAMES - 1)
