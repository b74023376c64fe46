"""The tiny-CLIP pretraining script: OpenAI-format output that our loader reads, caching, and learning."""
import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from models.clip import CLIP
from models.pretrained import infer_clip_config, load_clip_state_dict
from preprocess import pretrain_tiny_clip as ptc

# Smallest model the loader accepts (heads are width/64); 16 px images in 2x2 patches of 8.
TINY = ptc.Recipe(steps=3, batch_size=8, seed=0, width=64, layers=1, resolution=16, patch=8, context=16,
                  embed_dim=32, render_size=32, eval_size=16)
METADATA = {"input_resolution", "context_length", "vocab_size"}  # OpenAI archives' 0-d int64 entries


def _silent(*_args):
    pass


def test_saved_file_loads_with_its_config_and_same_embeddings(tmp_path):
    model, losses, words = ptc.train(TINY, progress=False)
    assert len(losses) == TINY.steps and {"red", "circle", "left"} <= words
    out = tmp_path / "tiny.pt"
    ptc.save(model, out, {"note": "test"})

    raw = torch.load(out, weights_only=True)
    for key, value in (("input_resolution", 16), ("context_length", 16), ("vocab_size", 49408)):
        assert raw[key].dtype == torch.int64 and raw[key].ndim == 0 and raw[key].item() == value
    assert [k for k in raw if k not in METADATA] == list(model.state_dict())

    loaded = CLIP.from_pretrained(str(out)).eval()
    assert loaded.config == TINY.clip_config() == infer_clip_config(load_clip_state_dict(out))
    data = ptc.StillBatches(TINY)
    images, ids, _ = data.sample(6, np.random.default_rng(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids), rtol=0, atol=0)
    assert json.loads((tmp_path / "tiny.pt.json").read_text())["note"] == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt", "tiny.pt.json"]  # no temp files left


def test_cache_skips_same_recipe_and_retrains_a_changed_one(tmp_path, monkeypatch):
    out = tmp_path / "clip.pt"
    first = ptc.pretrain(out, TINY, progress=False, log=_silent)
    assert not first["skipped"]
    side = json.loads((tmp_path / "clip.pt.json").read_text())
    assert side["config"] == dataclasses.asdict(TINY.clip_config())
    assert (side["steps"], side["seed"]) == (TINY.steps, TINY.seed)
    assert {"i2t_r1", "t2i_r1", "zero_shot_colour", "zero_shot_shape", "zero_shot_position"} <= set(side["held_out"])
    assert side["held_out"]["n"] == TINY.eval_size
    assert "moves" in side["video_words_not_trained"] and "red" not in side["video_words_not_trained"]

    calls = []
    real_train = ptc.train
    monkeypatch.setattr(ptc, "train", lambda *a, **k: calls.append(a) or real_train(*a, **k))
    messages = []
    start = time.perf_counter()
    again = ptc.pretrain(out, TINY, progress=False, log=messages.append)
    assert again["skipped"] and not calls and time.perf_counter() - start < 2.0
    assert "skipping" in messages[0]
    assert again["held_out"] == first["held_out"]

    changed = dataclasses.replace(TINY, steps=TINY.steps + 1)
    assert not ptc.pretrain(out, changed, progress=False, log=_silent)["skipped"] and len(calls) == 1
    assert json.loads((tmp_path / "clip.pt.json").read_text())["steps"] == TINY.steps + 1

    out.write_bytes(out.read_bytes() + b"\0")  # a file that no longer matches its sidecar's hash is retrained
    assert not ptc.pretrain(out, changed, progress=False, log=_silent)["skipped"] and len(calls) == 2


def test_loss_decreases_on_a_tiny_model():
    recipe = dataclasses.replace(TINY, steps=60, batch_size=16, lr=1e-3)
    _, losses, _ = ptc.train(recipe, progress=False)
    assert np.mean(losses[:5]) > np.mean(losses[-5:])
    assert np.mean(losses[-5:]) < np.log(recipe.batch_size) - 0.1  # better than chance, not a collapse to uniform


def test_command_line_presets_and_overrides(tmp_path):
    args, recipe = ptc.parse_recipe(["--out", str(tmp_path / "a.pt")])
    assert recipe == ptc.DEFAULT
    args, recipe = ptc.parse_recipe(["--out", "x.pt", "--quick", "--steps", "7", "--lr", "0.002"])
    assert recipe == dataclasses.replace(ptc.QUICK, steps=7, lr=0.002)
    with pytest.raises(SystemExit):
        ptc.parse_recipe(["--out", "x.pt", "--width", "100"])  # not a multiple of 64


def test_main_writes_a_loadable_file(tmp_path):
    out = tmp_path / "cli.pt"
    argv = ["--out", str(out), "--steps", "2", "--batch_size", "4", "--width", "64", "--layers", "1",
            "--resolution", "16", "--context", "16", "--embed_dim", "32", "--eval_size", "8", "--no_progress"]
    summary = ptc.main(argv)
    assert not summary["skipped"] and CLIP.from_pretrained(str(out)).config.context_length == 16
    assert ptc.main(argv)["skipped"]


def test_caption_attributes_are_read_from_still_captions():
    assert ptc._caption_attributes("a big yellow plus sign on the right side") == ("yellow", "cross", "right")
    assert ptc._caption_attributes("there is a tiny purple box near the top") == ("purple", "square", "top")
    assert ptc._caption_attributes("a big purple dot on a black background") == ("purple", "circle", None)
