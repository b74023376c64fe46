"""The backbone seam: one construction path (`create_model`), the backbone's name in configs, checkpoints and
indexes (older ones read as OpenAI CLIP), the registry entry's official prefix, and DGL asking the backbone's
traits instead of assuming CLIP's. A second backbone is registered here as the same CLIP under another name and
official prefix, so that every door is shown to follow the name rather than a constant."""
import copy
import dataclasses
import json

import pytest
import torch

from apps.retrieval import IndexModelMismatch, Retriever, VideoIndex
from models.backbone import Traits
from models.backbones import BACKBONES
from models.checkpoint import (
    CheckpointError, atomic_save, compact_checkpoint, export_official_checkpoint, load_compact_state, read_official_checkpoint,
)
from models.clip import CLIP
from models.dgl import DGL, DGLConfig, POOLED_OUTPUT_TYPES
from models.factory import create_model, load_dgl
from tests.tiny_backbones import TINY_BACKBONES, tiny_backbone
from tests.tiny_runs import data_flags
from utils.config import build_config

OTHER = "other-clip"
# DGLConfig's fields before the backbone's name was one of them: what our checkpoints of that time hold.
FIELDS_BEFORE_NAMES = {"shared_latent_space", "max_frames", "text_prompt_length", "local_prompt_length",
                       "global_prompt_length", "prompt_layers", "visual_output_type"}


@pytest.fixture
def other_backbone(monkeypatch):
    monkeypatch.setitem(BACKBONES, OTHER, dataclasses.replace(BACKBONES["openai-clip"], official_prefix="backbone."))
    monkeypatch.setitem(TINY_BACKBONES, OTHER, TINY_BACKBONES["openai-clip"])
    return OTHER


def caption_ids(lengths, width=14):
    """SOT, ``n`` words, EOT, zero padding, for each ``n``."""
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0], ids[row, 1 : n + 1], ids[row, n + 1] = 49406, torch.randint(1, 40000, (n,), generator=g), 49407
    return ids


def frames(batch=2, count=3, size=32, seed=2):
    return torch.randint(0, 256, (batch, count, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ older files
def test_checkpoint_without_a_backbone_name_loads_as_openai_clip(fixture_dir, tmp_path):
    """A compact checkpoint in the layout our code wrote before names were recorded loads, as OpenAI CLIP."""
    model = load_dgl(fixture_dir / "dgl_transformer_ckpt.pth.tar").eval()
    ckpt = compact_checkpoint(model, {"name": str(fixture_dir / "tiny_clip_jit.pt")})
    recorded_now = {"backbone": "openai-clip", "model": "dgl", "train_backbone": False}
    assert {k: ckpt["dgl_config"].pop(k) for k in recorded_now} == recorded_now
    assert set(ckpt["dgl_config"]) == FIELDS_BEFORE_NAMES
    atomic_save(ckpt, tmp_path / "old.pt")
    loaded = load_dgl(tmp_path / "old.pt").eval()
    assert loaded.config == model.config and loaded.config.backbone == "openai-clip"
    ids, video = caption_ids([3, 8]), frames(count=model.config.max_frames, size=model.clip.config.image_resolution)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
        assert torch.equal(loaded.encode_video(video), model.encode_video(video))


def test_index_without_a_backbone_name_opens_as_openai_clip(gallery, transformer, tmp_path):
    out = tmp_path / "index"
    retriever = Retriever(transformer, "cpu", {"checkpoint": "test-model"}, workers=0, batch_size=5)
    retriever.index(gallery, out, progress=False)
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["model"]["dgl_config"]["backbone"] == "openai-clip"
    del manifest["model"]["dgl_config"]["backbone"]  # as indexes were written before
    (out / "index.json").write_text(json.dumps(manifest))
    again = Retriever(transformer, "cpu", {"checkpoint": "test-model"}, workers=0)
    again.open(out)
    assert len(VideoIndex.load(out)) == 10
    assert [h.path for h in again.search(["a red circle"], 3)[0]] == [h.path for h in retriever.search(["a red circle"], 3)[0]]
    retrained = copy.deepcopy(transformer)
    with torch.no_grad():
        retrained.global_prompts.add_(1e-3)
    with pytest.raises(IndexModelMismatch, match=r"test-model \(prompts \w+, openai-clip backbone "):
        Retriever(retrained, "cpu", {"checkpoint": "test-model"}, workers=0).open(out)


# --------------------------------------------------------------------------------------- a second name
def test_backbone_flag_reaches_the_model_and_data_configs(other_backbone, tmp_path):
    base = data_flags(tmp_path) + ["--do_eval", "1", "--output_dir", str(tmp_path / "out")]
    assert build_config(base).model.backbone == "openai-clip"  # the default: official checkpoints are OpenAI CLIP
    cfg = build_config(base + ["--backbone", OTHER])
    assert cfg.model.backbone == cfg.data.backbone == OTHER
    with pytest.raises(SystemExit):
        build_config(base + ["--backbone", "no-such-backbone"])


def test_create_model_builds_what_the_name_says(other_backbone, fixture_dir):
    built = create_model(OTHER, fixture_dir / "tiny_clip_jit.pt", dgl_config=DGLConfig(backbone=OTHER, max_frames=4))
    assert built.model.config.backbone == OTHER and built.weights.name == "tiny_clip_jit.pt"
    assert built.preprocess.resolution == built.model.clip.config.image_resolution
    assert isinstance(create_model(OTHER, fixture_dir / "tiny_clip_jit.pt", baseline="meanp").model.clip, CLIP)
    with pytest.raises(ValueError, match=r"for backbone 'openai-clip', not 'other-clip'"):
        create_model(OTHER, fixture_dir / "tiny_clip_jit.pt", dgl_config=DGLConfig(max_frames=4))
    with pytest.raises(ValueError, match=r"unknown backbone 'nope' \(--backbone\)"):
        create_model("nope", fixture_dir / "tiny_clip_jit.pt")


def test_checkpoints_carry_the_name_and_the_entrys_official_prefix(other_backbone, fixture_dir, tmp_path):
    torch.manual_seed(0)
    clip_file = fixture_dir / "tiny_clip_jit.pt"
    model = create_model(OTHER, clip_file, dgl_config=DGLConfig(backbone=OTHER, max_frames=4)).model.eval()
    atomic_save(compact_checkpoint(model, {"name": str(clip_file)}), tmp_path / "ours.pt")
    assert load_dgl(tmp_path / "ours.pt").config.backbone == OTHER
    with pytest.raises(ValueError, match="'backbone': 'openai-clip'"):
        load_dgl(tmp_path / "ours.pt", backbone="openai-clip")
    # main.py --resume: the model of the flags is built first, then the checkpoint names the flag it needs.
    as_clip = create_model("openai-clip", clip_file, dgl_config=DGLConfig(max_frames=4)).model
    with pytest.raises(CheckpointError, match=r"needs --backbone other-clip \(given: openai-clip\)"):
        load_compact_state(as_clip, torch.load(tmp_path / "ours.pt", weights_only=True), "ours.pt")
    # The official layout: the backbone's weights under its entry's prefix, DGL's own tensors where DGL keeps them.
    export_official_checkpoint(model, tmp_path / "official.pth.tar")
    state = read_official_checkpoint(tmp_path / "official.pth.tar")
    assert "backbone.visual.conv1.weight" in state and not any(k.startswith("clip.visual.conv1") for k in state)
    assert "clip.visual.prompt_embeddings" in state
    again = load_dgl(tmp_path / "official.pth.tar", backbone=OTHER, max_frames=4).eval()
    assert again.config.backbone == OTHER
    ids, video = caption_ids([2, 6]), frames(count=4, size=model.clip.config.image_resolution)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(ids), model.encode_text(ids), atol=0, rtol=0)
        torch.testing.assert_close(again.encode_video(video), model.encode_video(video), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- traits
def tiny_with(**traits):
    """The tiny CLIP with other traits (an instance attribute over the class's); same weights every call."""
    torch.manual_seed(0)
    clip = tiny_backbone()
    clip.traits = dataclasses.replace(CLIP.traits, **traits)
    return clip


def dgl_on(clip, **config):
    torch.manual_seed(3)
    return DGL(clip, DGLConfig(max_frames=3, prompt_layers=2, **config)).eval()


class ClsLastCLIP(CLIP):
    """CLIP whose frames come out with the CLS token after the patches: the same tokens in another order."""

    def embed_frames(self, images):
        tokens = super().embed_frames(images)
        return torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1)


@pytest.mark.parametrize("output_type", POOLED_OUTPUT_TYPES)
def test_the_vision_cls_is_found_where_the_backbone_puts_it(output_type):
    """Attention within a frame does not depend on token order, so CLS-last with the right index must give the
    CLS-first features; with the wrong index (CLS assumed first) the frame CLS read is a patch. (The global
    prompts see a frame as a set: outputs of globals alone cannot tell.)"""
    first = dgl_on(tiny_with(), visual_output_type=output_type)
    torch.manual_seed(0)
    last_clip = ClsLastCLIP(first.clip.config)
    last_clip.load_state_dict(first.clip.state_dict())
    last_clip.traits = dataclasses.replace(CLIP.traits, vision_cls_index=first.clip.config.grid_size**2)
    last = dgl_on(last_clip, visual_output_type=output_type)
    video = frames()
    with torch.no_grad():
        expected = first.encode_video(video)
        torch.testing.assert_close(last.encode_video(video), expected, atol=1e-5, rtol=1e-5)
        last_clip.traits = CLIP.traits  # CLS assumed at position 0: prompts and pooling at a patch
        wrong = last.encode_video(video)
    if "frame_cls" in output_type:
        assert (wrong - expected).abs().max() > 1e-2


def test_bidirectional_text_with_cls_pooling_equals_each_caption_alone():
    """Batched with padding, a bidirectional tower must give each caption's features as if encoded alone
    (no padding at all), read at position 0."""
    model = dgl_on(tiny_with(causal_text=False, text_pooling="cls"))
    ids = caption_ids([2, 9, 5])
    prompts = model.prompts()
    prefix = prompts.text[:, : model.config.text_prompt_length // 2]
    with torch.no_grad():
        batched = model.encode_text(ids, prompts)
        for row, n in enumerate([2, 9, 5]):
            words = model.clip.embed_text(ids[row : row + 1, : n + 2])
            x = torch.cat([words[:, :1], prefix[0][None], words[:, 1:]], dim=1)
            for i, block in enumerate(model.clip.text_blocks):
                if 0 < i < model.prompt_layers:
                    x[:, 1 : 1 + prefix.shape[1]] = prefix[i]
                x = block(x)
            torch.testing.assert_close(batched[row], model.clip.project_text(x[0, 0]), atol=1e-5, rtol=1e-5)
        causal_eot = dgl_on(tiny_with()).encode_text(ids, prompts)
    assert (causal_eot - batched).abs().max() > 1e-2  # the traits change the computation


def test_towers_without_prompts_take_none():
    video, ids = frames(), caption_ids([4, 7])
    text_free = dgl_on(tiny_with(text_prompts=False))
    with torch.no_grad():
        torch.testing.assert_close(text_free.encode_text(ids), text_free.clip.encode_text(ids), atol=1e-6, rtol=1e-6)
        frame_free, with_frames = dgl_on(tiny_with(frame_prompts=False)), dgl_on(tiny_with())
        prompts = frame_free.prompts()
        shifted = prompts._replace(local=prompts.local + torch.randn(prompts.local.shape))  # not a constant: LayerNorm removes those
        assert torch.equal(frame_free.encode_video(video, prompts), frame_free.encode_video(video, shifted))
        assert (with_frames.encode_video(video, prompts) - with_frames.encode_video(video, shifted)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="global prompts need a ViT vision tower"):
        dgl_on(tiny_with(global_prompts=False))


def test_traits_refuse_unknown_values():
    with pytest.raises(ValueError, match="text_pooling must be one of"):
        dataclasses.replace(CLIP.traits, text_pooling="mean")
    assert isinstance(CLIP.traits, Traits) and CLIP.traits.vision_cls_index == 0


@pytest.mark.parametrize("name", ["openai-clip", "blip"])
def test_a_fine_tuned_backbone_reloads_from_its_checkpoint(name):
    """--freeze_clip 0 (train_backbone): the checkpoint holds the trained backbone and names the weights the run
    started from, so the model rebuilt from those weights takes it back (and refuses other starting weights)."""
    backbone = tiny_backbone(name)
    model_name = "dgl_blip" if name == "blip" else "dgl"
    config = DGLConfig(backbone=name, model=model_name, train_backbone=True, max_frames=2)
    built = create_model(name, backbone.state_dict(), dgl_config=config, backbone_config=backbone.config).model
    assert all(p.requires_grad for p in built.clip.parameters())
    with torch.no_grad():
        for p in built.clip.parameters():  # "training" moves every backbone weight
            p.add_(0.01)
    ckpt = compact_checkpoint(built, {"name": "tiny"})
    fresh = create_model(name, backbone.state_dict(), dgl_config=config, backbone_config=backbone.config).model
    load_compact_state(fresh, ckpt)
    for (key, trained), loaded in zip(built.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(trained, loaded), key
    other = tiny_backbone(name)
    with torch.no_grad():
        other.visual.pos_embed.add_(1.0) if name == "blip" else other.visual.positional_embedding.add_(1.0)
    stranger = create_model(name, other.state_dict(), dgl_config=config, backbone_config=other.config).model
    with pytest.raises(ValueError, match="but the loaded CLIP differs"):
        load_compact_state(stranger, ckpt)
