"""Synthetic MSR-VTT-layout benchmark: file formats, temporal twins, determinism, stills."""
import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from preprocess.make_synthetic import MOTIONS, ClipAttrs, SyntheticConfig, make_dataset, render_clip
from preprocess.synthetic_stills import sample_stills

CFG = dict(train_videos=6, test_pairs=3, frames=6, size=32, captions_per_video=3, workers=1)
ANNOTATIONS = ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", "MSRVTT_data.json", "twins.json",
               "synthetic_meta.json")
# Written independently of the generator's phrase tables: the only words twin captions may differ in.
TEMPORAL_WORDS = {
    "left", "right", "rightward", "leftward", "up", "down", "upward", "downward", "top", "bottom",
    "rises", "sinks", "grows", "shrinks", "bigger", "smaller", "larger", "small", "large",
    "appears", "disappears", "in", "out", "visible", "invisible", "emerges", "from", "vanishes", "into",
}
MOTION_WORDS = {"moves", "slides", "travels", "goes", "rises", "sinks", "grows", "shrinks", "appears",
                "disappears", "fades", "still", "move", "remains", "stays"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    make_dataset(SyntheticConfig(seed=0, **CFG), out)
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _json(path: Path):
    return json.loads(path.read_text())


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)


def _raw(meta: dict, vid: str, cfg: dict = CFG) -> np.ndarray:
    m = meta["videos"][vid]
    attrs = ClipAttrs(m["colour"], m["shape"], m["motion"], m["background"])
    return render_clip(attrs, cfg["frames"], cfg["size"], np.random.default_rng(m["render_seed"]))


def test_msrvtt_layout(data):
    train = _csv(data / "MSRVTT_train.9k.csv")
    test = _csv(data / "MSRVTT_JSFUSION_test.csv")
    assert list(train[0]) == ["video_id"] and list(test[0]) == ["key", "vid_key", "video_id", "sentence"]
    train_ids = [r["video_id"] for r in train]
    test_ids = [r["video_id"] for r in test]
    assert train_ids == [f"video{i}" for i in range(6)]
    assert test_ids == [f"video{i}" for i in range(6, 12)]
    assert [(r["key"], r["vid_key"]) for r in test] == [(f"ret{i}", f"msr{6 + i}") for i in range(6)]
    js = _json(data / "MSRVTT_data.json")
    records = {v["video_id"]: v for v in js["videos"]}
    assert list(records) == train_ids + test_ids
    assert all({"video_id", "url", "split"} <= set(v) for v in js["videos"])
    assert [records[v]["split"] for v in train_ids + test_ids] == ["train"] * 6 + ["test"] * 6
    caps: dict[str, list[str]] = {}
    for s in js["sentences"]:
        caps.setdefault(s["video_id"], []).append(s["caption"])
    assert len({s["sen_id"] for s in js["sentences"]}) == len(js["sentences"])
    assert all(len(c) == 3 and len(set(c)) == 3 for c in caps.values()) and set(caps) == set(records)
    assert all(r["sentence"] in caps[r["video_id"]] for r in test)
    assert sorted(p.name for p in (data / "videos").iterdir()) == sorted(f"{v}.mp4" for v in records)
    assert all((data / name).is_file() for name in ANNOTATIONS)


def test_container_is_3fps_h264(data):
    with av.open(str(data / "videos" / "video0.mp4")) as c:
        s = c.streams.video[0]
        assert (s.average_rate, s.frames, s.width, s.height) == (3, 6, 32, 32)
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_twins_are_time_reversals(data):
    meta, twins = _json(data / "synthetic_meta.json"), _json(data / "twins.json")
    assert len(twins) == 3 and sorted(sum(twins, [])) == sorted(f"video{i}" for i in range(6, 12))
    for a, b in twins:
        raw_a, raw_b = _raw(meta, a), _raw(meta, b)
        assert np.array_equal(raw_b, raw_a[::-1]) and not np.array_equal(raw_a, raw_b)
        dec_a, dec_b = _decode(data / "videos" / f"{a}.mp4"), _decode(data / "videos" / f"{b}.mp4")
        assert np.abs(dec_a - raw_a).mean() < 3.0  # lossy coding stays close to the raw render
        assert np.abs(dec_b - dec_a[::-1]).mean() < 3.0
        assert meta["videos"][a]["twin"] == b and meta["videos"][b]["twin"] == a
        assert meta["videos"][a]["motion"] != "static"


def test_twin_captions_differ_only_in_temporal_words(data):
    js, twins = _json(data / "MSRVTT_data.json"), _json(data / "twins.json")
    caps: dict[str, list[str]] = {}
    for s in js["sentences"]:
        caps.setdefault(s["video_id"], []).append(s["caption"])
    for a, b in twins:
        for ca, cb in zip(caps[a], caps[b]):
            rest_a = [w for w in ca.split() if w not in TEMPORAL_WORDS]
            assert ca != cb and rest_a == [w for w in cb.split() if w not in TEMPORAL_WORDS], (ca, cb)


@pytest.mark.parametrize("motion", MOTIONS)
def test_render_motion_semantics(motion):
    clip = render_clip(ClipAttrs("red", "square", motion, "black"), 8, 48, np.random.default_rng(3))
    assert clip.shape == (8, 48, 48, 3) and clip.dtype == np.uint8
    ink = clip[..., 0].astype(np.float64)  # red on black: the red channel is the shape's opacity map
    mass = ink.sum((1, 2))
    grid = np.arange(48) + 0.5
    x = (ink.sum(1) * grid).sum(1) / np.maximum(mass, 1)
    y = (ink.sum(2) * grid).sum(1) / np.maximum(mass, 1)
    trend = {"left_to_right": x, "right_to_left": -x, "upward": -y, "downward": y,
             "growing": mass, "shrinking": -mass, "appearing": mass, "disappearing": -mass}
    if motion == "static":
        assert (clip == clip[0]).all()
    else:
        assert np.all(np.diff(trend[motion]) >= 0) and trend[motion][-1] > trend[motion][0]


def test_determinism_across_seeds_and_workers(data, tmp_path):
    same = tmp_path / "same"
    make_dataset(SyntheticConfig(seed=0, **{**CFG, "workers": 2}), same)
    for name in ANNOTATIONS:
        assert (same / name).read_bytes() == (data / name).read_bytes(), name
    for vid in ("video0", "video7"):  # same library versions -> identical H.264 bytes
        assert (same / "videos" / f"{vid}.mp4").read_bytes() == (data / "videos" / f"{vid}.mp4").read_bytes()
    other = tmp_path / "other"
    make_dataset(SyntheticConfig(seed=1, **CFG), other)
    assert (other / "MSRVTT_data.json").read_bytes() != (data / "MSRVTT_data.json").read_bytes()
    meta0, meta1 = _json(data / "synthetic_meta.json"), _json(other / "synthetic_meta.json")
    assert not np.array_equal(_raw(meta0, "video0"), _raw(meta1, "video0"))


def test_stills_are_deterministic_and_motionless():
    images, captions = sample_stills(40, 32, np.random.default_rng(5))
    again, captions2 = sample_stills(40, 32, np.random.default_rng(5))
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8 and len(captions) == 40
    assert np.array_equal(images, again) and captions == captions2
    assert not any(set(c.split()) & MOTION_WORDS for c in captions)
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == corners[:, :1]).all()  # plain background, shape never touches the corners
    assert all((img != img[0, 0]).any(axis=-1).sum() > 4 for img in images)  # the shape is visible


def test_generated_videos_are_byte_reproducible_whatever_ran_before(tmp_path):
    """Tests that encode their inputs on the fly rely on this: the same frames give the same file even when
    the heap differs between encodes (libx264's default mbtree read uninitialised memory, so 96x64 textured
    clips decoded 17-24 levels apart from one encode to the next)."""
    from dataloaders.synthetic import write_video

    rng = np.random.default_rng(0)
    files = []
    for k in range(5):
        churn = [bytearray(int(n)) for n in rng.integers(1_000, 300_000, 50)]  # a different heap each time
        path = write_video(tmp_path / f"v{k}.mp4", 30, 96, 64, pattern="texture", seed=0)
        files.append(path.read_bytes())
        del churn
    assert all(f == files[0] for f in files[1:])
