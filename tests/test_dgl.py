"""DGL model properties beyond the reference fixtures: sizes, freezing, generalisation, invariances."""
import re
from pathlib import Path

import pytest
import torch

from models.checkpoint import (
    export_official_checkpoint, load_official_checkpoint, load_official_state, official_names, official_state_dict,
    read_official_checkpoint,
)
from models.clip import CLIP
from models.dgl import DGL, DGLConfig, resolve_prompt_layers
from models.losses import contrastive_loss
from models.pretrained import CLIPConfig
from tests.tiny_runs import TINY

VIT_B32 = CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                     vision_patch_size=32, grid_size=7, context_length=77, vocab_size=49408, text_width=512,
                     text_heads=8, text_layers=12)


def tiny_model(seed=0, **cfg):
    torch.manual_seed(seed)
    return DGL(CLIP(TINY), DGLConfig(max_frames=4, **cfg)).eval()


def random_ids(n, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.long)
    for i, words in enumerate(torch.randint(3, length - 2, (n,), generator=g).tolist()):
        ids[i, 0], ids[i, 1 : words + 1], ids[i, words + 1] = 49406, torch.randint(1, 40000, (words,), generator=g), 49407
    return ids


def reference_key_table(path):
    rows = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {name: (tuple(int(s) for s in re.findall(r"\d+", shape)), kind) for name, shape, _, kind in rows}


@pytest.fixture(scope="module")
def vit_b32_clip():
    """A random full-size ViT-B/32, built from an OpenAI-layout state dict."""
    torch.manual_seed(0)
    return CLIP.from_state_dict(CLIP(VIT_B32).state_dict())


@pytest.mark.parametrize("variant, expected", [("transformer", 9_575_168), ("linear", 827_392)])
def test_trainable_counts_and_official_names(vit_b32_clip, variant, expected):
    model = DGL(vit_b32_clip, DGLConfig(shared_latent_space=variant, max_frames=12))
    trainable = model.trainable_parameters()
    assert sum(p.numel() for p in trainable.values()) == expected
    assert all(name.startswith(("global_prompts", "prompt_generator.")) for name in trainable)
    table = reference_key_table(Path(__file__).parent / "fixtures" / f"ref_keys_vitb32_{variant}.txt")
    official_trainable = {k: shape for k, (shape, kind) in table.items() if kind == "trainable"}
    mapped = {theirs: trainable[ours].numel() for ours, theirs in official_names(model).items()}
    assert set(mapped) == set(official_trainable)
    for name, numel in mapped.items():
        assert numel == torch.Size(official_trainable[name]).numel(), name


@pytest.mark.parametrize("variant", ["linear", "transformer"])
def test_export_has_exactly_the_official_keys_and_shapes(vit_b32_clip, variant):
    """Every key of the official ViT-B/32 checkpoint, at its listed shape, and no other."""
    model = DGL(vit_b32_clip, DGLConfig(shared_latent_space=variant, max_frames=12))
    table = reference_key_table(Path(__file__).parent / "fixtures" / f"ref_keys_vitb32_{variant}.txt")
    exported = {name: tuple(value.shape) for name, value in official_state_dict(model).items()}
    assert sorted(set(table) ^ set(exported)) == []
    assert {name: shape for name, (shape, _) in table.items()} == exported


# Our module paths -> the official names, written out from the official source (not from official_names):
# the tensors most easily confused (same shapes) are among them.
NAMED = {
    "linear": {
        "global_prompts": "clip.visual.prompt_embeddings",
        "prompt_generator.embedding": "clip.visual_prompt_embedding",
        "prompt_generator.prefix_proj.weight": "clip.prefix_text_prompt_proj_layer.weight",
        "prompt_generator.prefix_proj.bias": "clip.prefix_text_prompt_proj_layer.bias",
        "prompt_generator.postfix_proj.weight": "clip.postfix_text_prompt_proj_layer.weight",
        "prompt_generator.postfix_proj.bias": "clip.postfix_text_prompt_proj_layer.bias",
    },
    "transformer": {
        "global_prompts": "clip.visual.prompt_embeddings",
        "prompt_generator.embedding": "clip.unified_prompt_embedding.weight",
        "prompt_generator.text_mlp.c_fc.weight": "clip.unified_prompt_mlp.c_fc.weight",
        "prompt_generator.text_mlp.c_proj.bias": "clip.unified_prompt_mlp.c_proj.bias",
        "prompt_generator.block.attn.in_proj_weight": "clip.PromptTransformer.resblocks.0.attn.in_proj_weight",
        "prompt_generator.block.ln_1.weight": "clip.PromptTransformer.resblocks.0.ln_1.weight",
        "prompt_generator.block.ln_2.weight": "clip.PromptTransformer.resblocks.0.ln_2.weight",
        "prompt_generator.block.mlp.c_fc.bias": "clip.PromptTransformer.resblocks.0.mlp.c_fc.bias",
        "prompt_generator.block.mlp.c_proj.bias": "clip.PromptTransformer.resblocks.0.mlp.c_proj.bias",
    },
}


@pytest.mark.parametrize("variant", ["linear", "transformer"])
def test_official_tensors_load_into_and_export_from_the_parameters_they_name(vit_b32_clip, variant):
    """Each trainable tensor of an official state filled with its own row number of the key list: loading puts
    each number in the parameter its official name denotes, and exporting puts it back under that name."""
    model = DGL(vit_b32_clip, DGLConfig(shared_latent_space=variant, max_frames=12))
    table = reference_key_table(Path(__file__).parent / "fixtures" / f"ref_keys_vitb32_{variant}.txt")
    state = {name: torch.full(shape, float(row)) for row, (name, (shape, kind)) in enumerate(table.items())
             if kind == "trainable"}
    load_official_state(model, state, "numbered state", check_backbone=False)
    params = dict(model.named_parameters())
    exported = official_state_dict(model)
    for ours, theirs in NAMED[variant].items():
        row = list(table).index(theirs)
        assert torch.equal(params[ours], torch.full_like(params[ours], row)), (ours, theirs)
        assert torch.equal(exported[theirs], state[theirs]), theirs
    # and every parameter got exactly one official tensor
    rows = sorted(int(p.flatten()[0]) for p in model.trainable_parameters().values())
    assert rows == sorted(list(table).index(name) for name in state)


def test_deep_prompts_generalise():
    """Global and local prompt counts differ, prompts on fewer layers than the depth (official code: crash)."""
    model = tiny_model(global_prompt_length=3, local_prompt_length=2, text_prompt_length=6, prompt_layers=1)
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        for output_type in ("global_prompt0", "average_global_prompt_and_frame_cls_token"):
            assert model.encode_video(video, output_type=output_type).shape == (2, 32)
        assert model.encode_video(video, output_type="global-local-feature").shape == (2, 5, 32)
        assert model.encode_text(random_ids(2)).shape == (2, 32)
    with pytest.raises(ValueError, match="frames"):
        model.encode_video(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="prompt_layers"):
        DGL(CLIP(TINY), DGLConfig(prompt_layers=3))
    with pytest.raises(ValueError, match="global-local-feature"):
        DGLConfig(visual_output_type="global-local-feature")


def test_text_features_do_not_depend_on_batch_padding():
    """Dropping positions after the batch's last EOT is exact: a caption's feature is the same alone."""
    model = tiny_model()
    ids = random_ids(4, length=24)
    with torch.no_grad():
        together = model.encode_text(ids)
        alone = torch.cat([model.encode_text(ids[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("variant, order_blind", [("linear", True), ("transformer", False)])
def test_time_reversal(variant, order_blind):
    """Linear prompts are the same for every frame, so the video encoder cannot see frame order; the
    transformer variant's frame-specific prompts can."""
    model = tiny_model(shared_latent_space=variant)
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        forward, backward = model.encode_video(video), model.encode_video(video.flip(1))
    assert torch.allclose(forward, backward, atol=1e-5) == order_blind


def test_only_prompts_train_and_checkpointing_keeps_gradients():
    model = tiny_model().train()
    ids, video = random_ids(3), torch.randn(3, 4, 3, 32, 32)

    def grads():
        model.zero_grad(set_to_none=True)
        contrastive_loss(model.logits(*model(ids, video))).backward()
        return {n: p.grad.clone() for n, p in model.trainable_parameters().items()}

    plain = grads()
    assert all(p.grad is None for p in model.clip.parameters())
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


def test_bf16_autocast_runs_close_to_fp32():
    model = tiny_model()
    ids, video = random_ids(2), torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref_t, ref_v = model(ids, video)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t, v = model(ids, video)
    cos = torch.nn.functional.cosine_similarity
    assert cos(t.float(), ref_t).min() > 0.98 and cos(v.float(), ref_v).min() > 0.98


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_official_export_round_trip(tmp_path, variant):
    source = tiny_model(seed=1, shared_latent_space=variant)
    path = tmp_path / "ckpt.best.pth.tar"
    export_official_checkpoint(source, path, epoch=2, global_step=7, best_r1=12.5)
    state = read_official_checkpoint(path)
    assert "clip.visual.position_ids" in state and "clip.logit_scale" in state
    target = DGL(source.clip, DGLConfig(shared_latent_space=variant, max_frames=4))
    load_official_checkpoint(target, path)
    for name, value in source.trainable_parameters().items():
        assert torch.equal(value, target.trainable_parameters()[name]), name
    other = tiny_model(seed=2, shared_latent_space=variant)
    with pytest.raises(ValueError, match="differ from the loaded backbone"):
        load_official_checkpoint(other, path)


@pytest.mark.parametrize("requested, vision, text, expected", [
    (None, 12, 12, 12),  # ViT-B: the official default
    (None, 24, 12, 12),  # ViT-L/14: 24 vision layers, 12 text layers, one count for both
    (None, 32, 24, 24),  # ViT-H/14
    (None, 3, 2, 2),
    (5, 24, 12, 5),
    (12, 24, 12, 12),
])
def test_prompt_layers_default_to_every_layer_both_towers_have(requested, vision, text, expected):
    assert resolve_prompt_layers(requested, vision, text) == expected


@pytest.mark.parametrize("requested", [0, 13, 24])
def test_prompt_layers_beyond_the_depth_name_the_flag(requested):
    with pytest.raises(ValueError, match=r"--unified_transformer_layers .* 1\.\.12: this CLIP has 24 vision and 12 text"):
        resolve_prompt_layers(requested, 24, 12)


def test_default_config_prompts_every_layer_of_a_shallow_clip():
    model = DGL(CLIP(TINY), DGLConfig())
    assert model.prompt_layers == 2
