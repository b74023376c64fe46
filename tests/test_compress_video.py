"""preprocess/compress_video.py on landscape, portrait and square inputs in nested folders."""
import hashlib

import av
import numpy as np
import pytest

from dataloaders.synthetic import write_video
from dataloaders.video_io import read_video
from preprocess.compress_video import MANIFEST, main, output_size
from tests.video_utils import CUT_CONTAINERS, corrupt_file, write_cut_video, indices_of_frames, quadrant_colours, write_rotated_video


def stream_facts(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        return stream.width, stream.height, float(stream.average_rate), stream.codec_context.name, stream.pix_fmt, frames


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def raw(tmp_path):
    root = tmp_path / "raw"
    write_video(root / "a" / "land.mp4", 36, 320, 180, fps=30)  # 1.2 s
    write_video(root / "a" / "b" / "port.mkv", 30, 180, 320, fps=25)  # 1.2 s
    write_video(root / "c" / "land.mp4", 24, 100, 100, fps=12)  # same name, other folder; 2 s
    write_video(root / "c" / "clip.webm", 10, 64, 48, fps=10, codec="libvpx-vp9")
    (root / "c" / "notes.txt").write_text("not a video")
    return root


def test_output_size_keeps_aspect_with_even_sides():
    assert output_size(1280, 720, 224) == (398, 224)
    assert output_size(720, 1280, 224) == (224, 398)  # the reference gave 224x126 here
    assert output_size(500, 500, 224) == (224, 224)
    assert output_size(300, 200, 224) == (336, 224)


def test_compresses_to_3_fps_and_224_short_side_in_mirrored_folders(raw, tmp_path):
    out = tmp_path / "out"
    before = digest(raw)
    assert main(["--input_root", str(raw), "--output_root", str(out), "--workers", "1"]) == 0
    assert digest(raw) == before  # inputs untouched
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert produced == [MANIFEST, "a/b/port.mkv", "a/land.mp4", "c/clip.webm.mp4", "c/land.mp4"]
    assert stream_facts(out / "a/land.mp4") == (398, 224, 3.0, "h264", "yuv420p", 4)
    assert stream_facts(out / "a/b/port.mkv") == (224, 398, 3.0, "h264", "yuv420p", 4)
    assert stream_facts(out / "c/land.mp4") == (224, 224, 3.0, "h264", "yuv420p", 6)
    assert stream_facts(out / "c/clip.webm.mp4")[:3] == (298, 224, 3.0)
    # 12 fps -> 3 fps, FFmpeg's fps filter: source frame i falls in output slot round(i / 4) and
    # each slot keeps its last frame: slot 0 <- {0, 1}, slot 1 <- {2..5}, ... ; 2 s -> 6 frames.
    frames, n = read_video(out / "c/land.mp4", lambda count: np.arange(count))
    assert n == 6 and indices_of_frames(frames).tolist() == [1, 5, 9, 13, 17, 21]


def test_rerun_skips_outputs_made_with_its_settings_and_refuses_or_redoes_others(raw, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--input_root", str(raw), "--output_root", str(out), "--workers", "1"]

    def stamps():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST}

    assert main(args) == 0
    first = stamps()
    assert main(args) == 0 and stamps() == first
    assert "4 already done with --fps 3 --short_side 224, 0 made with other settings" in capsys.readouterr().err
    assert main(args + ["--fps", "5"]) == 2 and stamps() == first  # refused, nothing touched
    err = capsys.readouterr().err
    assert "4 outputs under" in err and "other settings than --fps 5 --short_side 224" in err
    assert f"{out / 'a/land.mp4'}: --fps 3 --short_side 224" in err and "--redo" in err
    assert main(args + ["--fps", "6", "--short_side", "32", "--redo"]) == 0
    assert stream_facts(out / "c/land.mp4")[:3] + stream_facts(out / "c/land.mp4")[5:] == (32, 32, 6.0, 12)  # 2 s at 6 fps
    assert stream_facts(out / "a/land.mp4")[:3] == (56, 32, 6.0)
    # Outputs without a record (an older version wrote them) are read for their settings.
    (out / MANIFEST).unlink()
    redone = stamps()
    assert main(args + ["--fps", "6", "--short_side", "32"]) == 0 and stamps() == redone
    assert main(args) == 2 and "other settings than --fps 3 --short_side 224" in capsys.readouterr().err


def test_failures_are_reported_and_exit_nonzero(raw, tmp_path, capsys):
    corrupt_file(raw / "c" / "broken.mp4")
    out = tmp_path / "out"
    assert main(["--input_root", str(raw), "--output_root", str(out), "--workers", "2", "--short_side", "32"]) == 1
    err = capsys.readouterr().err
    assert "1 of 5 videos failed" in err and str(raw / "c" / "broken.mp4") in err and "InvalidDataError" in err
    assert not (out / "c" / "broken.mp4").exists()
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name != MANIFEST]  # no temporary leftovers
    assert stream_facts(out / "a/land.mp4")[:3] == (56, 32, 3.0)  # the others still done, --short_side honoured


def test_cut_matroska_and_webm_are_refused_naming_them(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    cut = [write_cut_video(raw / f"cut{k}{suffix}", codec) for k, (suffix, codec) in enumerate(CUT_CONTAINERS)]
    write_video(raw / "whole.mkv", 30, 64, 48, fps=3)
    assert main(["--input_root", str(raw), "--output_root", str(out), "--workers", "1", "--short_side", "32"]) == 1
    err = capsys.readouterr().err
    assert "3 of 4 videos failed" in err
    for path in cut:
        assert f"{path}: TruncatedVideo: truncated: the container says the video lasts 10.00 s" in err
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [MANIFEST, "whole.mkv"]


def test_output_inside_input_is_refused(raw):
    with pytest.raises(SystemExit):
        main(["--input_root", str(raw), "--output_root", str(raw / "compressed")])


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_burnt_in(tmp_path, rotation):
    """As the ffmpeg command line: the output is upright, sized by its displayed shape, and has no rotation."""
    expected = write_rotated_video(tmp_path / "raw" / "phone.mp4", rotation)
    assert main(["--input_root", str(tmp_path / "raw"), "--output_root", str(tmp_path / "out"), "--workers", "1"]) == 0
    out = tmp_path / "out" / "phone.mp4"
    height, width = expected.shape[:2]
    assert stream_facts(out)[:2] == output_size(width, height, 224)
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert frame.rotation == 0
    assert np.abs(quadrant_colours(frame.to_ndarray(format="rgb24")) - quadrant_colours(expected)).max() < 40


def test_partial_files_of_dead_runs_are_removed_live_ones_kept(raw, tmp_path, capsys):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / "a" / f".land.partial-{int(dead.stdout)}.mp4"
    live = out / "c" / f".other.partial-{os.getpid()}.mp4"  # this process is alive: a concurrent run
    for path in (stale, live):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a video")
    assert main(["--input_root", str(raw), "--output_root", str(out), "--workers", "1"]) == 0
    assert not stale.exists() and live.read_bytes() == b"half a video"
    assert f"removed {stale}" in capsys.readouterr().err


def test_fps_flag_sets_the_output_rate_on_a_fresh_output(tmp_path):
    """--fps 6 on a 12 fps, 2 s input: a 6 fps output with half the frames (the fps filter may keep one
    more at an end), each two source frames after the one before."""
    write_video(tmp_path / "raw" / "clip.mp4", 24, 64, 48, fps=12)
    assert main(["--input_root", str(tmp_path / "raw"), "--output_root", str(tmp_path / "out"), "--workers", "1",
                 "--fps", "6", "--short_side", "32"]) == 0
    width, height, fps, _, _, count = stream_facts(tmp_path / "out" / "clip.mp4")
    assert (width, height, fps) == (42, 32, 6.0) and abs(count - 12) <= 1
    frames, n = read_video(tmp_path / "out" / "clip.mp4", lambda total: np.arange(total))
    steps = np.diff(indices_of_frames(frames))
    assert n == count and (steps[1:-1] == 2).all(), indices_of_frames(frames).tolist()
