"""Frame sampling rules, video backends and the frame transform."""
import av
import numpy as np
import pytest
import torch

from dataloaders import video_io
from dataloaders.sampling import frame_mask, sample_rng, segment_centres, segment_random
from dataloaders.synthetic import add_reproducible_stream, gray_level
from dataloaders.transforms import normalize, resize_and_crop
from models.clip import CLIP_MEAN, CLIP_STD
from dataloaders.video_io import VideoReadError, read_video
from tests.video_utils import corrupt_file, indices_of_frames, quadrant_colours, write_index_video, write_rotated_video

BACKENDS = ["decord", "pyav"]


# --- sampling (spec 3.2 examples) -------------------------------------------------------------

def test_segment_centres_match_the_reference_examples():
    assert segment_centres(30, 12).tolist() == [1, 3, 6, 8, 11, 13, 16, 18, 21, 23, 26, 28]
    assert segment_centres(5, 12).tolist() == [0, 1, 2, 3, 4] + [4] * 7
    assert segment_centres(12, 12).tolist() == list(range(12))
    assert frame_mask(5, 12).tolist() == [1] * 5 + [0] * 7
    assert frame_mask(40, 12).tolist() == [1] * 12


def test_segment_random_draws_one_frame_per_segment():
    rng = np.random.default_rng(0)
    draws = np.stack([segment_random(38, 12, rng) for _ in range(300)])  # segments of 3 frames
    segment_start = np.arange(12) * 3
    assert ((draws >= segment_start) & (draws < segment_start + 3)).all()
    assert all(len(np.unique(draws[:, j])) == 3 for j in range(12))  # every offset occurs
    assert draws.max() < 36  # frames past T * (n // T) are never drawn, as in the reference
    assert segment_random(5, 12, rng).tolist() == [0, 1, 2, 3, 4] + [4] * 7
    assert segment_random(12, 12, rng).tolist() == list(range(12))


def test_sample_rng_depends_on_seed_epoch_and_index_only():
    draw = lambda *key: sample_rng(*key).integers(0, 1 << 30, 4).tolist()  # noqa: E731
    assert draw(42, 1, 7) == draw(42, 1, 7)
    assert len({tuple(draw(*key)) for key in [(42, 1, 7), (42, 2, 7), (42, 1, 8), (43, 1, 7)]}) == 4


# --- decoding -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {ext: write_index_video(root / f"v.{ext}", 30) for ext in ("mp4", "mkv", "avi")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_backends_return_exactly_the_requested_frames(videos, backend, ext):
    wanted = np.array([29, 0, 7, 7, 13])
    frames, n = read_video(videos[ext], lambda count: wanted, backend=backend)
    assert n == 30 and frames.dtype == np.uint8 and frames.shape == (5, 40, 64, 3)
    assert indices_of_frames(frames).tolist() == wanted.tolist()


def test_matroska_frame_count_comes_from_packets_not_the_container(videos):
    with av.open(str(videos["mkv"])) as container:
        assert container.streams.video[0].frames == 0  # the header has no count (reference bug 36)
    reader = video_io.PyAVReader(videos["mkv"])
    assert reader.num_frames == 30 and reader.fps == 3.0
    reader.close()


def test_backends_decode_identical_pixels(videos):
    pick = lambda n: segment_centres(n, 12)  # noqa: E731
    decord_frames, _ = read_video(videos["mp4"], pick, backend="decord")
    pyav_frames, _ = read_video(videos["mp4"], pick, backend="pyav")
    assert np.array_equal(decord_frames, pyav_frames)


# Pure red, green, blue, then yellow (red + green: catches a swap of red and blue that leaves green alone).
PRIMARIES = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_backends_return_rgb_channel_order(tmp_path, backend, ext):
    """Grey test videos cannot tell RGB from BGR: coloured frames can."""
    path = tmp_path / f"colours.{ext}"
    with av.open(str(path), "w") as container:
        stream = add_reproducible_stream(container, "libx264", 3, 32, 32)
        for colour in PRIMARIES:
            image = np.broadcast_to(colour, (32, 32, 3)).copy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    frames, n = read_video(path, lambda count: np.arange(count), backend=backend)
    assert n == len(PRIMARIES)
    means = frames.reshape(n, -1, 3).mean(axis=1)
    # yuv420p limited range rounds a primary by a few levels; a channel swap moves one by 255
    assert np.abs(means - PRIMARIES).max() < 12, means.round().tolist()


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_pyav_seeks_across_many_keyframes(tmp_path, ext):
    """Keyframe every 4 frames, B-frames on: random access must still hit the exact frames."""
    path = tmp_path / f"gop.{ext}"
    with av.open(str(path), "w") as container:
        stream = add_reproducible_stream(container, "libx264", 30, 32, 32)
        stream.codec_context.gop_size = 4
        for i in range(36):
            image = np.full((32, 32, 3), gray_level(i), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    rng = np.random.default_rng(1)
    for _ in range(10):
        wanted = np.sort(rng.choice(36, size=6))
        frames, _ = read_video(path, lambda n: wanted, backend="pyav")
        assert indices_of_frames(frames).tolist() == wanted.tolist()


def test_pyav_counts_frames_in_avi_whose_timestamps_are_made_up(videos):
    wanted = np.array([0, 5, 17, 29])
    frames, n = read_video(videos["avi"], lambda count: wanted, backend="pyav")
    assert n == 30 and indices_of_frames(frames).tolist() == wanted.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_window_selects_frames_by_frame_rate(videos, backend):
    # [2.0, 4.5] s at 3 fps: frames floor(6) .. floor(13.5) = 6..13 (n = 8)
    frames, n = read_video(videos["mp4"], lambda count: np.arange(count), window=(2.0, 4.5), backend=backend)
    assert n == 8 and indices_of_frames(frames).tolist() == list(range(6, 14))
    _, n = read_video(videos["mp4"], lambda count: np.arange(count), window=(0.0, 100.0), backend=backend)
    assert n == 30
    with pytest.raises(VideoReadError, match="selects none"):
        read_video(videos["mp4"], lambda count: np.arange(count), window=(20.0, 30.0), backend=backend)


def test_unreadable_file_reports_every_backend(tmp_path):
    path = corrupt_file(tmp_path / "broken.mp4")
    with pytest.raises(VideoReadError) as info:
        read_video(path, lambda n: np.zeros(1, int))
    assert str(path) in str(info.value) and "decord:" in str(info.value) and "pyav:" in str(info.value)


def test_auto_falls_back_when_the_first_backend_fails(videos, monkeypatch):
    def refuse(path):
        raise RuntimeError("backend refuses")

    first = video_io.AUTO_ORDER[0]
    monkeypatch.setitem(video_io._BACKENDS, first, (video_io._BACKENDS[first][0], refuse))
    frames, _ = read_video(videos["mp4"], lambda n: np.array([4]), backend="auto")
    assert indices_of_frames(frames).tolist() == [4]
    with pytest.raises(VideoReadError, match="refuses"):
        read_video(videos["mp4"], lambda n: np.array([4]), backend=first)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown video backend"):
        video_io.backend_order("opencv")


# --- transform ------------------------------------------------------------------------------

def test_crop_only_when_short_side_already_matches():
    frames = np.arange(2 * 6 * 10 * 3, dtype=np.uint8).reshape(2, 6, 10, 3)
    out = resize_and_crop(frames, 6)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 6, 6)
    # torchvision CenterCrop: left = round((10 - 6) / 2) = 2
    assert torch.equal(out, torch.from_numpy(frames[:, :, 2:8]).permute(0, 3, 1, 2))


@pytest.mark.parametrize("height,width", [(40, 80), (80, 40), (16, 16)])
def test_short_side_is_resized_then_centre_cropped(height, width):
    """A centred vertical bar stays centred; a stripe at the left edge survives only when the
    width is the short side (landscape crops cut it away)."""
    frames = np.zeros((1, height, width, 3), np.uint8)
    frames[:, :, width // 2 - 2 : width // 2 + 2] = 255
    frames[:, :, :2] = 128
    out = resize_and_crop(frames, 32)
    assert out.shape == (1, 3, 32, 32) and out.dtype == torch.uint8
    columns = out[0, 0].float().mean(dim=0)
    bright = torch.nonzero(columns > 200).flatten().float()
    assert 15.0 <= bright.mean() <= 16.5
    if width > height:
        assert columns[:8].max() < 40
    else:
        assert 100 < columns[0] < 160


def test_normalize_uses_clip_statistics():
    frames = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(frames)
    assert out.dtype == torch.float32
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [90, -90, 180, 0])
def test_display_rotation_is_applied(tmp_path, backend, rotation):
    """Phone videos store landscape pixels plus a rotation; readers return what a player shows."""
    expected = write_rotated_video(tmp_path / "phone.mp4", rotation)
    frames, n = read_video(tmp_path / "phone.mp4", lambda n: np.array([0, n - 1]), backend=backend)
    assert n == 6 and frames.shape == (2, *expected.shape) and frames.flags["C_CONTIGUOUS"]
    for frame in frames:
        assert np.abs(quadrant_colours(frame) - quadrant_colours(expected)).max() < 40
