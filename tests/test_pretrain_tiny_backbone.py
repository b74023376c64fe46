"""The tiny-backbone pretraining on BLIP: the same stack as the tiny CLIP's, writing an original-layout BLIP file
with its vocab.txt that `create_model("blip", FILE)` (and so `--backbone blip --pretrained_clip_name FILE`) loads."""
import dataclasses
import json
import string

import numpy as np
import pytest
import torch

from dataloaders.transforms import resize_and_crop
from models.blip import BlipRetrieval
from models.factory import create_model
from preprocess import pretrain_tiny_clip as ptc
from preprocess.synthetic_stills import sample_stills
from preprocess.tiny_backbone import backbones as tiny_backbones
from preprocess.tiny_backbone.vocabulary import still_caption_words, video_caption_words

# The tiny-CLIP tests' reduced recipe (tests/test_pretrain_tiny_clip.py): heads of 64, one layer per tower.
TINY = ptc.Recipe(steps=3, batch_size=8, seed=0, width=64, layers=1, resolution=16, patch=8, context=16,
                  embed_dim=32, render_size=32, eval_size=16, caption_batch=4)


def _silent(*_args):
    pass


def test_short_blip_pretraining_lowers_the_contrastive_loss():
    recipe = dataclasses.replace(TINY, steps=60, batch_size=16, caption_batch=16)
    model, losses, words = ptc.train(recipe, progress=False, backbone="blip")
    assert isinstance(model, BlipRetrieval) and len(losses) == recipe.steps
    chance = np.log(recipe.batch_size) + np.log(recipe.caption_batch)  # stills term + paraphrase term
    assert np.mean(losses[-5:]) < min(np.mean(losses[:5]), chance) - 0.2  # learnt, not a collapse to uniform
    assert {"red", "circle", "left"} <= words["with_images"] and words["text_only"]


def test_written_blip_loads_through_the_registry_with_the_same_features(tmp_path):
    model, _, _ = ptc.train(TINY, progress=False, backbone="blip")
    out = tmp_path / "tiny_blip.pth"
    ptc.save(model, out, {"note": "test"}, backbone="blip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_blip.pth", "tiny_blip.pth.json", "vocab.txt"]

    created = create_model("blip", out, baseline="meanp")
    loaded = created.model.clip.eval()
    assert created.weights == out.resolve() and loaded.config == model.config
    assert loaded.temp.item() == model.temp.item()  # the trained temperature travels in the file
    data = ptc.StillBatches(TINY, "blip")
    images, ids, captions = data.sample(6, np.random.default_rng(5))
    file_ids, _ = created.tokenizer(captions, TINY.context)  # the vocab.txt beside the file tokenises alike
    torch.testing.assert_close(file_ids[:, : ids.shape[1]], ids, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids), rtol=0, atol=0)
        # trained on BLIP's pixel normalisation: the one BLIP's ViT applies itself to uint8 frames
        raw, _ = sample_stills(6, TINY.render_size, np.random.default_rng(5))
        frames = resize_and_crop(raw, TINY.resolution)
        torch.testing.assert_close(model.encode_image(frames), model.encode_image(data.images(raw)), rtol=0, atol=1e-5)


def test_blip_cache_is_its_own_and_follows_the_vocabulary(tmp_path):
    out = tmp_path / "tiny.pth"
    first = ptc.pretrain(out, TINY, progress=False, log=_silent, backbone="blip")
    side = json.loads((tmp_path / "tiny.pth.json").read_text())
    assert not first["skipped"] and side["backbone"] == "blip" and set(side["files_beside"]) == {"vocab.txt"}
    assert side["cache_key"]["vocabulary_sha256"] == tiny_backbones.VOCAB_SHA256
    assert ptc.pretrain(out, TINY, progress=False, log=_silent, backbone="blip")["skipped"]
    # the same recipe on CLIP is another model: never a cache hit for the BLIP file, nor the reverse
    assert not ptc.pretrain(out, TINY, progress=False, log=_silent)["skipped"]
    assert not ptc.pretrain(out, TINY, progress=False, log=_silent, backbone="blip")["skipped"]
    (tmp_path / "vocab.txt").write_text((tmp_path / "vocab.txt").read_text() + "extra\n")
    with pytest.raises(FileExistsError, match=r"vocab\.txt holds another vocabulary.*its own folder"):
        ptc.pretrain(out, TINY, progress=False, log=_silent, backbone="blip")  # not a hit, and not overwritten
    assert (tmp_path / "vocab.txt").read_text().endswith("extra\n")


def test_vocabulary_has_every_caption_word_whole_in_berts_layout():
    vocab = tiny_backbones.VOCAB
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(set(vocab)) == len(vocab)
    assert set(string.ascii_lowercase) | {f"##{c}" for c in string.ascii_lowercase} <= set(vocab)
    tokenizer = tiny_backbones.blip_tokenizer()
    _, stills = sample_stills(64, 16, np.random.default_rng(0))
    first, second, _ = ptc.MotionCaptions(None).texts(64, np.random.default_rng(1))
    for caption in stills + first + second:
        row, mask = tokenizer(caption, 40)
        words = caption.split()
        assert int(mask.sum()) == len(words) + 2, caption  # [CLS], one token per word, [SEP]: no word split
        assert row[0, 0] == tokenizer.cls_id and row[0, len(words) + 1] == tokenizer.sep_id
        assert [vocab[i] for i in row[0, 1 : len(words) + 1].tolist()] == words
    assert still_caption_words() | video_caption_words() <= set(vocab)


def test_command_line_takes_the_backbone_and_its_recipes(tmp_path):
    _, recipe = ptc.parse_recipe(["--out", "x.pth", "--backbone", "blip", "--quick", "--steps", "7"])
    assert recipe == dataclasses.replace(tiny_backbones.BLIP_ENTRY.quick, steps=7)
    _, recipe = ptc.parse_recipe(["--out", "x.pt"])
    assert recipe == ptc.DEFAULT  # CLIP stays the default backbone and recipe
    with pytest.raises(SystemExit):
        ptc.parse_recipe(["--out", "x.pt", "--backbone", "no-such"])
    out = tmp_path / "blip" / "tiny_blip.pth"
    argv = ["--backbone", "blip", "--out", str(out), "--steps", "2", "--batch_size", "4", "--width", "64",
            "--layers", "1", "--resolution", "16", "--context", "16", "--embed_dim", "32", "--eval_size", "8",
            "--caption_batch", "4", "--no_progress"]
    summary = ptc.main(argv)
    assert not summary["skipped"] and summary["config"]["text_width"] == 64
    assert create_model("blip", out, baseline="meanp").model.clip.config.context_length == 16
    assert ptc.main(argv)["skipped"]
