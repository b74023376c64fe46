"""preprocess/generate_video_path.py writes the video_path.json the LSMDC and ActivityNet loaders read, and the
loaders' error for a missing file gives the command that writes it."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from dataloaders.files import AnnotationError
from dataloaders.parsers import DATASETS
from preprocess import generate_video_path
from tests.layouts import make_activitynet, make_lsmdc
from tests.video_utils import write_index_video


def generate(cfg, datatype: str, *extra: str) -> int:
    return generate_video_path.main(["--datatype", datatype, "--features_path", str(cfg.features_path),
                                     "--data_path", str(cfg.data_path), *extra])


@pytest.mark.parametrize("make, datatype", [(make_lsmdc, "lsmdc"), (make_activitynet, "activity")])
def test_generated_file_equals_the_hand_written_one_and_loads(tmp_path, make, datatype):
    cfg = make(tmp_path)
    target = Path(cfg.data_path) / "video_path.json"
    written_by_hand = json.loads(target.read_text())
    before = {subset: DATASETS[datatype](cfg, subset) for subset in ("train", "test")}
    target.unlink()
    assert generate(cfg, datatype) == 0
    assert json.loads(target.read_text()) == written_by_hand
    for subset, split in before.items():
        after = DATASETS[datatype](cfg, subset)
        assert (after.video_ids, after.video_paths, after.captions) == (split.video_ids, split.video_paths, split.captions)


def test_activitynet_files_named_with_v_prefix_get_keys_without_it(tmp_path):
    cfg = make_activitynet(tmp_path)
    videos = Path(cfg.features_path)
    for path in list(videos.iterdir()):
        path.rename(videos / f"v_{path.name}")
    (Path(cfg.data_path) / "video_path.json").unlink()
    assert generate(cfg, "activity") == 0
    split = DATASETS["activity"](cfg, "train")
    assert split.video_ids == ["v_aaa", "v_bbb"]
    assert split.video_paths == [videos / "v_aaa.mp4", videos / "v_bbb.mkv"]


def test_missing_file_error_gives_a_command_that_fixes_it(tmp_path):
    cfg = make_lsmdc(tmp_path)
    (Path(cfg.data_path) / "video_path.json").unlink()
    with pytest.raises(AnnotationError, match=r"video_path\.json not found") as caught:
        DATASETS["lsmdc"](cfg, "test")
    command = shlex.split(str(caught.value).split("Fix: ", 1)[1])
    assert command[:2] == ["python", "preprocess/generate_video_path.py"]
    assert generate_video_path.main(command[2:]) == 0
    assert DATASETS["lsmdc"](cfg, "test").video_ids == ["clip3", "clip1"]


def test_two_files_with_one_id_are_refused_naming_both(tmp_path, capsys):
    cfg = make_lsmdc(tmp_path)
    (Path(cfg.data_path) / "video_path.json").unlink()
    write_index_video(Path(cfg.features_path) / "movie2" / "clip1.mp4", 3)
    assert generate(cfg, "lsmdc") == 2
    err = capsys.readouterr().err
    assert "movie1/clip1.avi and movie2/clip1.mp4 both have the id 'clip1'" in err
    assert not (Path(cfg.data_path) / "video_path.json").exists()


def test_an_existing_file_is_kept_unless_overwrite(tmp_path, capsys):
    cfg = make_lsmdc(tmp_path)
    target = Path(cfg.data_path) / "video_path.json"
    target.write_text('{"clip1": "elsewhere/clip1.avi"}')
    assert generate(cfg, "lsmdc") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert target.read_text() == '{"clip1": "elsewhere/clip1.avi"}'
    assert generate(cfg, "lsmdc", "--overwrite") == 0
    assert json.loads(target.read_text())["clip1"] == "movie1/clip1.avi"
    assert [p.name for p in Path(cfg.data_path).iterdir() if p.name.endswith(".tmp")] == []
