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
from preprocess.tiny_backbone import evaluation as tiny_eval
from preprocess.make_synthetic import MOTION_PHRASES, REVERSE, ClipAttrs

# Smallest model the loader accepts (heads are width/64); 16 px images in 2x2 patches of 8.
TINY = ptc.Recipe(steps=3, batch_size=8, seed=0, width=64, layers=1, resolution=16, patch=8, context=16,
                  embed_dim=32, render_size=32, eval_size=16, caption_batch=4)
METADATA = {"input_resolution", "context_length", "vocab_size"}  # OpenAI archives' 0-d int64 entries


def _silent(*_args):
    pass


def test_saved_file_loads_with_its_config_and_same_embeddings(tmp_path):
    model, losses, words = ptc.train(TINY, progress=False)
    assert len(losses) == TINY.steps and {"red", "circle", "left"} <= words["with_images"]
    # every motion phrase has a word no still caption uses ("moves", "rises", "fades", ...)
    assert words["text_only"] and words["text_only"] <= ptc.video_caption_words() - words["with_images"]
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
    assert {"i2t_r1", "t2i_r1", "zero_shot_colour", "zero_shot_shape", "zero_shot_position", "twin_caption_cosine",
            "twin_caption_accuracy"} <= set(side["held_out"])
    assert side["held_out"]["n"] == TINY.eval_size
    assert "red" in side["words_with_images"] and "red" not in side["video_words_not_trained"]
    assert not set(side["words_text_only"]) & set(side["words_with_images"])

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
    recipe = dataclasses.replace(TINY, steps=60, batch_size=16, lr=1e-3, caption_batch=16)
    _, losses, _ = ptc.train(recipe, progress=False)
    assert np.mean(losses[:5]) > np.mean(losses[-5:])
    chance = np.log(recipe.batch_size) + np.log(recipe.caption_batch)  # stills term + paraphrase term
    assert np.mean(losses[-5:]) < chance - 0.2  # better than chance, not a collapse to uniform


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
    assert tiny_eval._caption_attributes("a big yellow plus sign on the right side") == ("yellow", "cross", "right")
    assert tiny_eval._caption_attributes("there is a tiny purple box near the top") == ("purple", "square", "top")
    assert tiny_eval._caption_attributes("a big purple dot on a black background") == ("purple", "circle", None)


def test_motion_captions_pair_time_reversed_twins_worded_alike():
    first, second, keys = ptc.MotionCaptions(None).texts(40, np.random.default_rng(3))
    assert len(first) == len(second) == len(keys) == 40
    for i in range(0, 40, 2):
        clip, twin = ClipAttrs(*keys[i]), ClipAttrs(*keys[i + 1])
        assert (clip.colour, clip.shape, clip.background) == (twin.colour, twin.shape, twin.background)
        assert twin.motion == REVERSE.get(clip.motion, twin.motion) != clip.motion
        # the twin's caption is the clip's with the motion phrase swapped, nothing else
        own = [p for p in MOTION_PHRASES[clip.motion] if p in first[i]]
        other = [p for p in MOTION_PHRASES[twin.motion] if p in first[i + 1]]
        assert any(first[i].replace(a, "#") == first[i + 1].replace(b, "#") for a in own for b in other)
        assert first[i] != second[i] and first[i] != first[i + 1]


def test_paraphrase_targets_treat_equal_clips_as_positives():
    model = CLIP(TINY.clip_config()).eval()
    tokens = ptc.StillBatches(TINY).tokens
    texts = ["a red circle moves upward", "a blue box shrinks", "a red circle moves upward"]
    red = ("red", "circle", "upward", "black")
    keys = [red, ("blue", "square", "shrinking", "grey"), red]
    with torch.no_grad():
        loss = ptc.paraphrase_loss(model, tokens(texts), tokens(texts), keys)
        emb = torch.nn.functional.normalize(model.encode_text(tokens(texts)), dim=-1)
        logits = model.logit_scale.exp() * emb @ emb.t()
    target = torch.tensor([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]])
    expected = -(target * logits.log_softmax(dim=1)).sum(1).mean()  # symmetric logits: both directions agree
    torch.testing.assert_close(loss, expected)
