"""Bad videos and annotation rows are caught at start-up, naming the file and row; nothing is read short."""
import csv
import json
import dataclasses
import logging
import pickle
import re
from pathlib import Path

import av
import numpy as np
import pytest

from dataloaders import VideoDataset, VideoReadError, build_split
from dataloaders.files import AnnotationError
from dataloaders.sampling import segment_centres
from dataloaders.synthetic import add_reproducible_stream, gray_level
from dataloaders.video_io import read_video
from tests import layouts
from tests.video_utils import CUT_CONTAINERS, indices_of_frames, write_cut_video


def write_gray_video(path: Path, num_frames: int, codec: str = "libx264", options: dict | None = None) -> Path:
    """Frame i is flat gray level 10 + 7 i, with B-frames allowed."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = add_reproducible_stream(container, codec, 3, 64, 48)
        stream.bit_rate = 4_000_000
        stream.codec_context.max_b_frames = 2
        for i in range(num_frames):
            image = np.full((48, 64, 3), gray_level(i), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def truncate_inside_media_data(path: Path, keep: float) -> None:
    """Cut a faststart MP4 (index first) part-way into its media data, as an interrupted copy does."""
    data = path.read_bytes()
    offset = 0
    while data[offset + 4 : offset + 8] != b"mdat":
        offset += int.from_bytes(data[offset : offset + 4], "big")
    path.write_bytes(data[: offset + 8 + int(keep * (len(data) - offset - 8))])


@pytest.fixture
def msrvtt_with_truncated_video(tmp_path):
    cfg = layouts.make_msrvtt(tmp_path)
    video = write_gray_video(cfg.features_path / "video3.mp4", 30, options={"movflags": "faststart"})
    truncate_inside_media_data(video, 0.4)
    with av.open(str(video)) as container:
        assert container.streams.video[0].frames == 30  # the index still lists every frame
    return cfg, video


def test_truncated_video_is_skipped_at_start_up_not_read_short(msrvtt_with_truncated_video, caplog):
    cfg, video = msrvtt_with_truncated_video
    size = video.stat().st_size
    with caplog.at_level(logging.WARNING):
        split = build_split(dataclasses.replace(cfg, skip_bad_videos=True), "test")
    assert split.video_ids == ["video0"] and split.dropped["unreadable video"] == 1
    assert f"file {video})" in caplog.text and "truncated: the container lists 30 frames but holds only" in caplog.text
    assert video.stat().st_size == size  # reported, never touched


def test_truncated_video_without_skipping_fails_naming_it(msrvtt_with_truncated_video):
    cfg, video = msrvtt_with_truncated_video
    split = build_split(cfg, "test")
    with pytest.raises(VideoReadError, match=r"video3\.mp4.*truncated"):
        VideoDataset(split, cfg)[0]


@pytest.mark.parametrize("suffix, codec", CUT_CONTAINERS)
def test_cut_matroska_and_webm_are_named_not_used_as_whole(tmp_path, suffix, codec, caplog):
    """Matroska/WebM list no frame count: the duration they declare (10 s) is held against the frames present."""
    cfg = layouts.make_vatex(tmp_path)
    (cfg.features_path / "part1" / "vidC.mp4").unlink()
    video = write_cut_video(cfg.features_path / "part1" / f"vidC{suffix}", codec)
    with caplog.at_level(logging.WARNING):
        split = build_split(dataclasses.replace(cfg, skip_bad_videos=True), "test")
    assert split.video_ids == ["vidD"] and split.dropped["unreadable video"] == 1
    assert str(video) in caplog.text and "truncated: the container says the video lasts 10.00 s" in caplog.text
    for backend in ("auto", "pyav", "decord"):  # decord alone reads the cut file as if whole
        with pytest.raises(VideoReadError, match=rf"vidC\{suffix}: \w+: truncated"):
            read_video(video, lambda n: np.array([0, n - 1]), backend=backend)


@pytest.mark.parametrize("suffix, codec", CUT_CONTAINERS)
def test_whole_matroska_and_webm_with_a_longer_audio_track_are_read(tmp_path, suffix, codec):
    """The duration check is not fooled by a whole file: all 30 frames read, also beside a longer audio track."""
    path = tmp_path / f"v{suffix}"
    with av.open(str(path), "w") as container:
        video = add_reproducible_stream(container, codec, 3, 64, 48)
        audio = container.add_stream("libopus" if suffix == ".webm" else "aac", rate=48000)
        for i in range(30):
            image = np.full((48, 64, 3), gray_level(i), np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        samples = np.zeros((1, 960), np.float32)
        for i in range(13 * 50):  # 13 s of silence in 20 ms frames: longer than the 10 s video
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    frames, n = read_video(path, lambda n: np.arange(n), backend="pyav")
    assert n == 30 and indices_of_frames(frames).tolist() == list(range(30))


def test_decord_is_refused_on_avi_with_b_frames(tmp_path):
    path = write_gray_video(tmp_path / "b.avi", 30, codec="mpeg4")
    asked = segment_centres(30, 12)[4:8]  # 11, 13, 16, 18
    import decord

    wrong = indices_of_frames(decord.VideoReader(str(path), num_threads=1).get_batch(asked.tolist()).asnumpy())
    assert wrong.tolist() != asked.tolist()  # what decord itself returns on this file
    frames, _ = read_video(path, lambda n: asked, backend="pyav")
    assert np.abs(indices_of_frames(frames) - asked).max() <= 1  # MPEG-4 part 2 rounds gray levels a little
    with pytest.raises(VideoReadError, match=r"b\.avi: decord: decord returns other frames .* use --video_backend pyav"):
        read_video(path, lambda n: asked, backend="decord")
    frames, _ = read_video(path, lambda n: asked, backend="auto")  # PyAV first
    assert np.abs(indices_of_frames(frames) - asked).max() <= 1


@pytest.mark.parametrize("video_id", ["../../outside", "/etc/passwd"])
def test_video_ids_cannot_leave_features_path(tmp_path, video_id):
    cfg = layouts.make_msrvtt(tmp_path)
    rows = list(csv.reader(open(cfg.val_csv)))
    rows[2][2] = video_id
    with open(cfg.val_csv, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(AnnotationError) as err:
        build_split(cfg, "test")
    message = str(err.value)
    assert message.startswith(f"{cfg.val_csv} data row 2: video {video_id + '.mp4'!r} points outside --features_path")


def test_video_paths_of_lsmdc_json_cannot_leave_features_path(tmp_path):
    cfg = layouts.make_lsmdc(tmp_path)
    paths = Path(cfg.data_path) / "video_path.json"
    paths.write_text(paths.read_text().replace("movie1/clip1.avi", "../../../clip1.avi"))
    with pytest.raises(AnnotationError, match=r"video_path.json \(entry 'clip1'\): video '../../../clip1.avi' points outside"):
        build_split(cfg, "train")


def test_csv_row_missing_a_field_fails_at_parse_time_naming_file_and_line(tmp_path):
    cfg = layouts.make_msrvtt(tmp_path)
    with open(cfg.val_csv, "a", newline="") as f:
        f.write("ret2,msr1,video1\n")  # no sentence
    with pytest.raises(AnnotationError, match=rf"{cfg.val_csv} line 4: no value for \['sentence'\]"):
        build_split(cfg, "test")


def test_empty_caption_in_a_csv_is_refused_naming_file_and_row(tmp_path):
    cfg = layouts.make_msrvtt(tmp_path)
    rows = list(csv.reader(open(cfg.val_csv)))
    rows[2][3] = "  "
    with open(cfg.val_csv, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(AnnotationError, match=rf"^{cfg.val_csv}: 1 empty caption\(s\), at data row 2\. Fix: "):
        build_split(cfg, "test")


def test_empty_captions_in_a_json_are_refused_naming_file_video_and_caption(tmp_path):
    cfg = layouts.make_vatex(tmp_path)
    captions_file = cfg.data_path / "ref_captions.json"
    captions = json.loads(captions_file.read_text())
    captions["vidC"][1], captions["vidD"][0] = "", ""
    captions_file.write_text(json.dumps(captions))
    with pytest.raises(AnnotationError, match=rf"^{captions_file}: 2 empty caption\(s\), at video 'vidC' caption 2, video 'vidD' caption 1\."):
        build_split(cfg, "test")
    assert build_split(cfg, "train").num_captions == 3  # the training list holds no empty caption


def test_non_utf8_bytes_are_named_with_file_line_and_column(tmp_path):
    """Past the first read buffer (8 KiB), where Python's own error gives a buffer position and no file."""
    cfg = layouts.make_msrvtt(tmp_path)
    rows = list(csv.reader(open(cfg.val_csv)))
    filler = [[f"ret{k}", "msr0", "video0", "a dog runs " * 10] for k in range(100)]  # ~13 KB
    with open(cfg.val_csv, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows + filler)
    with open(cfg.val_csv, "ab") as f:
        f.write(b"ret9,msr0,video0,caf\xe9 au lait\n")  # Latin-1, line 104 (header + 2 + 100 + 1)
    with pytest.raises(AnnotationError, match=rf"^MSR-VTT test CSV \(--val_csv\) {cfg.val_csv} line 104, column 21: byte b'\\xe9' is not UTF-8"):
        build_split(cfg, "test")
    lsmdc = layouts.make_lsmdc(tmp_path / "lsmdc")
    annotations = lsmdc.data_path / "LSMDC16_annos_val.csv"
    annotations.write_bytes(annotations.read_bytes() + b"clip2\t0.0\t1.0\t0.0\t1.0\tSOMEONE \xff\n")
    with pytest.raises(AnnotationError, match=rf"{annotations} line 2, column 31: byte b'\\xff' is not UTF-8"):
        build_split(lsmdc, "val")


class WritesMarker:
    """Unpickling this calls ``pathlib.Path.touch`` on the marker: a harmless stand-in for ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_msvd_captions_pickle_that_would_run_code_is_refused_naming_it(tmp_path):
    cfg = layouts.make_msvd(tmp_path)
    captions_file, marker = cfg.data_path / "raw-captions.pkl", tmp_path / "ran"
    pickle.loads(pickle.dumps(WritesMarker(marker)))  # what plain pickle.load does with it
    assert marker.exists()
    marker.unlink()
    captions = pickle.loads(captions_file.read_bytes())
    captions["m1"].append(WritesMarker(marker))
    captions_file.write_bytes(pickle.dumps(captions))
    asked = re.escape(f"{Path.__module__}.Path.touch")  # pathlib.Path's home is pathlib._local from Python 3.13
    with pytest.raises(AnnotationError, match=rf"^MSVD captions {captions_file} is not a readable pickle of plain data: "
                                              rf"it asks for {asked};"):
        build_split(cfg, "train")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_msvd_captions_pickle_of_plain_data_loads(tmp_path, protocol):
    """The real file's shape (video id -> list of token lists), in the oldest, Python 2's and the newest protocol."""
    cfg = layouts.make_msvd(tmp_path)
    captions_file = cfg.data_path / "raw-captions.pkl"
    captions_file.write_bytes(pickle.dumps(pickle.loads(captions_file.read_bytes()), protocol=protocol))
    split = build_split(cfg, "test")
    assert split.captions == ["a girl sings", "singing", "a song", "a dog barks", "dog barking"]
