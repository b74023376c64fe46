"""Checkpoints: damage, wrong content and full disks are errors naming the file; the previous file survives."""
import errno
import gc
import json
import logging
import shutil
import sys
import zipfile
from collections import namedtuple

import pytest
import torch

import models.checkpoint_file as checkpoint_file
import models.files
from models.checkpoint import (atomic_save, compact_checkpoint, load_compact_state, load_official_checkpoint,
                               read_official_checkpoint)
from models.checkpoint_file import CheckpointError, read_checkpoint
from models.clip import CLIP
from models.dgl import DGL
from utils.flags import dgl_config


def fixture_args(fixture_dir, variant="transformer"):
    return json.loads((fixture_dir / "config.json").read_text())["variants"][variant]["args"]


def fixture_model(fixture_dir, variant="transformer", **changes):
    args = {**fixture_args(fixture_dir, variant), **changes}
    return DGL(CLIP.from_pretrained(str(fixture_dir / "tiny_clip_jit.pt")), dgl_config(args))


@pytest.fixture
def official_copy(fixture_dir, tmp_path):
    path = tmp_path / "ckpt.best.pth.tar"
    shutil.copy(fixture_dir / "dgl_transformer_ckpt.pth.tar", path)
    return path


def data_offset(path, record):
    """Where the bytes of a zip record start (after its local header)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(record)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_overwritten_tensor_bytes_are_caught_by_the_zip_crc(official_copy):
    with zipfile.ZipFile(official_copy) as archive:
        biggest = max(archive.infolist(), key=lambda i: i.file_size).filename
    start, size = data_offset(official_copy, biggest)
    assert size > 16384
    with open(official_copy, "r+b") as f:
        f.seek(start + size // 2 - 8192)
        f.write(bytes(16384))  # 16 KB of zeros inside one tensor's data
    with pytest.raises(CheckpointError, match="do not match their CRC") as err:
        read_official_checkpoint(official_copy)
    assert str(official_copy) in str(err.value) and biggest in str(err.value)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "truncated or damaged"),
    (lambda data: b"", "empty file"),
    (lambda data: b"epoch,loss\n1,0.5\n", "not a PyTorch checkpoint"),
])
def test_truncated_empty_and_text_files_name_the_file(official_copy, damage, message):
    official_copy.write_bytes(damage(official_copy.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(official_copy)
    assert str(err.value).startswith(f"{official_copy}: ")


def test_compact_tensor_hashes_catch_changed_weights(fixture_dir, tmp_path):
    model = fixture_model(fixture_dir)
    ckpt = compact_checkpoint(model, {"name": "tiny"})
    ckpt["state_dict"]["global_prompts"][0, 0] += 0.5  # a consistent zip with other weights than were saved
    atomic_save(ckpt, tmp_path / "changed.pt")
    with pytest.raises(CheckpointError, match=r"tensors \['global_prompts'\] do not match their stored SHA256") as err:
        load_compact_state(model, read_checkpoint(tmp_path / "changed.pt"), source=str(tmp_path / "changed.pt"))
    assert str(tmp_path / "changed.pt") in str(err.value)


def test_compact_checkpoint_without_hashes_loads_with_a_warning(fixture_dir, caplog):
    model = fixture_model(fixture_dir)
    ckpt = compact_checkpoint(model, {"name": "tiny"})
    del ckpt["tensor_sha256"]
    with caplog.at_level(logging.WARNING):
        load_compact_state(model, ckpt, source="old.pt")
    assert "old.pt: written before checkpoints stored tensor hashes" in caplog.text


def test_nan_weights_are_refused_naming_the_tensors(fixture_dir, official_copy):
    model = fixture_model(fixture_dir)
    ckpt = compact_checkpoint(model, {"name": "tiny"})
    ckpt["state_dict"]["prompt_generator.embedding"][3, 1] = float("nan")
    ckpt["tensor_sha256"] = checkpoint_file.tensor_hashes(ckpt["state_dict"])  # a NaN that was saved as such
    with pytest.raises(CheckpointError, match=r"nan.pt: non-finite .* \['prompt_generator.embedding'\]"):
        load_compact_state(model, ckpt, source="nan.pt")
    official = torch.load(official_copy, weights_only=True)
    official["state_dict"]["module.clip.visual.prompt_embeddings"][0, 0, 0] = float("inf")
    torch.save(official, official_copy)
    with pytest.raises(CheckpointError, match=r"non-finite .*\['clip.visual.prompt_embeddings'\]") as err:
        load_official_checkpoint(model, official_copy)
    assert str(official_copy) in str(err.value)


def test_other_frame_count_for_a_transformer_checkpoint_names_the_needed_value(fixture_dir):
    """(Official checkpoints: tests/test_official_commands.py.)"""
    trained = fixture_args(fixture_dir)["max_frames"]
    model = fixture_model(fixture_dir, max_frames=trained + 2)
    compact = compact_checkpoint(fixture_model(fixture_dir), {"name": "tiny"})
    with pytest.raises(CheckpointError, match=f"dgl.pt: the checkpoint needs --max_frames {trained} \\(given: {trained + 2}\\)"):
        load_compact_state(model, compact, source="dgl.pt")


Usage = namedtuple("Usage", "total used free")


def test_full_disk_is_reported_before_writing_and_the_old_file_survives(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pt"
    atomic_save({"w": torch.ones(3)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(models.files.shutil, "disk_usage", lambda folder: Usage(10**9, 10**9 - 100, 100))
    with pytest.raises(OSError, match="No space left on device for .*checkpoint_latest.pt") as err:
        atomic_save({"w": torch.zeros(1000)}, path)
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_disk_filling_up_during_the_write_is_reported_with_the_path(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pt"
    atomic_save({"w": torch.ones(3)}, path)
    before = path.read_bytes()

    def write_to_full_device(target, write):
        with open("/dev/full", "wb", buffering=0) as f:  # every write fails with ENOSPC
            write(f)

    monkeypatch.setattr(checkpoint_file, "atomic_write", write_to_full_device)
    with pytest.raises(OSError, match=r"No space left on device while writing .*checkpoint_latest.pt") as err:
        atomic_save({"w": torch.zeros(1000)}, path)
    assert err.value.errno == errno.ENOSPC and path.read_bytes() == before


def test_a_failed_save_kept_in_a_reference_cycle_is_collected_without_an_error(tmp_path, monkeypatch):
    """A caught save error whose traceback sits in a reference cycle (common in loggers and test runners): the
    collector finalises its frame's objects in any order, and a buffer closed while still exported raised a
    BufferError no one could catch (seen on Python 3.13)."""
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: ignored.append(repr(report.exc_value)))
    monkeypatch.setattr(models.files.shutil, "disk_usage", lambda folder: Usage(10**9, 10**9 - 100, 100))
    with pytest.raises(OSError) as err:
        atomic_save({"w": torch.zeros(1000)}, tmp_path / "checkpoint_latest.pt")
    error = err.value
    error.cycle = [error]
    del err, error
    gc.collect()
    assert ignored == []


def test_retrieval_and_visualize_loader_refuses_nan_weights(fixture_dir, tmp_path):
    from models.factory import load_dgl  # what retrieve.py and visualize.py load checkpoints with

    ckpt = compact_checkpoint(fixture_model(fixture_dir), {"name": str(fixture_dir / "tiny_clip_jit.pt")})
    ckpt["state_dict"]["global_prompts"].fill_(float("nan"))
    ckpt["tensor_sha256"] = checkpoint_file.tensor_hashes(ckpt["state_dict"])
    path = tmp_path / "nan.pt"
    atomic_save(ckpt, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: non-finite \(NaN or inf\) values in \['global_prompts'\]"):
        load_dgl(path)
