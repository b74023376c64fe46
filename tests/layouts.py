"""Tiny datasets in each official file layout, with real index-painted videos.

Every writer returns a DataConfig (test resolution 32, T = 4) pointing at what it wrote, so a
test can parse the files exactly as a real run would.
"""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

from dataloaders import DataConfig
from tests.video_utils import write_index_video

TEST_SETTINGS = dict(max_frames=4, image_resolution=32, max_words=16)


def make_msrvtt(root: Path, frames: dict[str, int] | None = None) -> DataConfig:
    """Videos video0..video3; train CSV lists video0-2; JSFusion test CSV pairs video3 and video0."""
    frames = frames or {"video0": 30, "video1": 5, "video2": 13, "video3": 24}
    features = root / "videos"
    for video_id, n in frames.items():
        write_index_video(features / f"{video_id}.mp4", n)
    with open(root / "MSRVTT_train.9k.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video_id"], ["video0"], ["video1"], ["video2"]])
    # JSON order interleaves videos, as the real file does.
    sentences = [{"video_id": v, "caption": f"{v} caption {k}", "sen_id": 0} for k in range(2) for v in frames]
    data = {"videos": [{"video_id": v, "url": f"https://youtube/{v}"} for v in frames], "sentences": sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([
            ["key", "vid_key", "video_id", "sentence"],
            ["ret0", "msr3", "video3", "a man plays guitar"],
            ["ret1", "msr0", "video0", "a dog runs"],
        ])
    return DataConfig(
        datatype="msrvtt", data_path=root / "MSRVTT_data.json", features_path=features,
        train_csv=root / "MSRVTT_train.9k.csv", val_csv=root / "MSRVTT_JSFUSION_test.csv", **TEST_SETTINGS,
    )


VATEX_CAPTIONS = {
    "vidA": ["a cat sleeps", "the cat is asleep"],
    "vidB": ["a car drives"],
    "vidC": ["people dance", "a party", "music plays"],
    "vidD": ["rain falls", "it is raining"],
}


def make_vatex(root: Path) -> DataConfig:
    data, features = root / "data", root / "videos"
    data.mkdir(parents=True)
    (data / "train_list.txt").write_text("vidA\nvidB\n")
    (data / "test_list.txt").write_text("vidC\nvidD\n")
    (data / "ref_captions.json").write_text(json.dumps(VATEX_CAPTIONS))
    for video_id, n, folder in [("vidA", 20, "part1"), ("vidB", 9, "part2"), ("vidC", 12, "part1"), ("vidD", 3, "part2")]:
        write_index_video(features / folder / f"{video_id}.mp4", n)
    return DataConfig(datatype="vatex", data_path=data, features_path=features, **TEST_SETTINGS)


def make_lsmdc(root: Path) -> DataConfig:
    data, features = root / "data", root / "videos"
    data.mkdir(parents=True)
    rows = {
        "LSMDC16_annos_training.csv": [("clip1", "SOMEONE walks."), ("clip2", "He sits."), ("clip1", "SOMEONE runs."), ("gone", "Unlisted.")],
        "LSMDC16_annos_val.csv": [("clip2", "He sits down.")],
        "LSMDC16_challenge_1000_publictect.csv": [("clip3", "She smiles."), ("clip1", "Someone walks.")],
    }
    for name, lines in rows.items():
        (data / name).write_text("".join(f"{clip}\t0.0\t1.0\t0.0\t1.0\t{text}\n" for clip, text in lines))
    relative = {"clip1": "movie1/clip1.avi", "clip2": "movie1/clip2.avi", "clip3": "movie2/clip3.avi"}
    (data / "video_path.json").write_text(json.dumps(relative))
    for clip, n in [("clip1", 16), ("clip2", 7), ("clip3", 11)]:
        write_index_video(features / relative[clip], n)
    return DataConfig(datatype="lsmdc", data_path=data, features_path=features, **TEST_SETTINGS)


def make_activitynet(root: Path) -> DataConfig:
    """v_aaa has duration 3.2 s (window [0, 4] s = 13 of its 20 frames); v_NHznDFD3V3k is excluded by
    the official code; v_nocap has no captions; v_nopath has no path."""
    data, features = root / "data", root / "videos"
    data.mkdir(parents=True)
    (data / "train_ids.json").write_text(json.dumps(["v_aaa", "v_NHznDFD3V3k", "v_nocap", "v_nopath", "v_bbb"]))
    (data / "val_ids.json").write_text(json.dumps(["v_ccc"]))
    ann = lambda d, s: {"duration": d, "timestamps": [[0, d]] * len(s), "sentences": s}  # noqa: E731
    (data / "train.json").write_text(json.dumps({
        "v_aaa": ann(3.2, ["A man walks in.", " He sits down."]),
        "v_bbb": ann(10.0, ["Kids play."]),
        "v_NHznDFD3V3k": ann(5.0, ["Excluded."]),
        "v_nopath": ann(5.0, ["No file."]),
    }))
    (data / "val_1.json").write_text(json.dumps({"v_ccc": ann(2.0, ["A bird flies.", "It lands."])}))
    relative = {"aaa": "aaa.mp4", "bbb": "bbb.mkv", "ccc": "ccc.mp4", "NHznDFD3V3k": "NHznDFD3V3k.mp4"}
    (data / "video_path.json").write_text(json.dumps(relative))
    for video_id, n in [("aaa", 20), ("bbb", 30), ("ccc", 12), ("NHznDFD3V3k", 4)]:
        write_index_video(features / relative[video_id], n)
    return DataConfig(datatype="activity", data_path=data, features_path=features, **TEST_SETTINGS)


def make_msvd(root: Path) -> DataConfig:
    """Ships only train_list_120.txt, the name the official loader reads."""
    data, features = root / "data", root / "videos"
    data.mkdir(parents=True)
    (data / "train_list_120.txt").write_text("m1\nm2\n")
    (data / "val_list.txt").write_text("m3\n")
    (data / "test_list.txt").write_text("m3\nm1\n")
    captions = {"m1": [["a", "dog", "barks"], ["dog", "barking"]], "m2": [["a", "man", "cooks"]], "m3": [["a", "girl", "sings"], ["singing"], ["a", "song"]]}
    with open(data / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    for video_id, n in [("m1", 10), ("m2", 6), ("m3", 14)]:
        write_index_video(features / f"{video_id}.avi", n)
    return DataConfig(datatype="msvd", data_path=data, features_path=features, **TEST_SETTINGS)


def make_didemo(root: Path) -> DataConfig:
    """x2.3gp was compressed to x2.3gp.mp4; x3.mp4 has no description (dropped)."""
    data, features = root / "data", root / "videos"
    data.mkdir(parents=True)
    for subset in ("train", "val", "test"):
        (data / f"{subset}_list.txt").write_text("x1.mp4\nx2.3gp\nx3.mp4\n")
        records = [
            {"video": "x1.mp4", "description": "a man enters", "times": [[0, 1], [0, 0]]},
            {"video": "x2.3gp", "description": "a ball rolls", "times": [[2, 3]]},
            {"video": "x1.mp4", "description": "he leaves", "times": [[4, 5]]},
            {"video": "unlisted.mp4", "description": "not in the list", "times": [[0, 0]]},
        ]
        (data / f"{subset}_data.json").write_text(json.dumps(records))
    write_index_video(features / "x1.mp4", 8)
    write_index_video(features / "x2.3gp.mp4", 6)
    write_index_video(features / "x3.mp4", 6)
    return DataConfig(datatype="didemo", data_path=data, features_path=features, **TEST_SETTINGS)


def layout_maker(datatype: str):
    """The `make_<name>` writer of a `--datatype` (activity's is make_activitynet), or None."""
    return globals().get(f"make_{'activitynet' if datatype == 'activity' else datatype}")
