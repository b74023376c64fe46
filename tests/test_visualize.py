"""The attention-visualisation path: explicit softmax equals the fused model, weights are distributions,
the figure has its documented size, and the CLI runs on short videos with official and compact checkpoints."""
import json

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dataloaders.frames import read_eval_frames
from models.attention_maps import explicit_encode_video, explicit_global_local_attention
from models.checkpoint import atomic_save, compact_checkpoint, load_official_checkpoint, read_official_checkpoint
from models.clip import CLIP
from models.dgl import DGL, DGLConfig, POOLED_OUTPUT_TYPES
from models.factory import official_config_from_state
from models.pretrained import CLIPConfig
from apps.figures import attention_figure, figure_size
from utils.flags import dgl_config
import visualize

OUTPUT_TYPES = POOLED_OUTPUT_TYPES + ("global-local-feature",)


def fixture_model(fixture_dir, variant, **overrides):
    args = json.loads((fixture_dir / "config.json").read_text())["variants"][variant]["args"]
    config = dgl_config(args)
    for k, v in overrides.items():
        setattr(config, k, v)
    model = DGL(CLIP.from_pretrained(str(fixture_dir / "tiny_clip_jit.pt")), config).eval()
    load_official_checkpoint(model, fixture_dir / f"dgl_{variant}_ckpt.pth.tar")
    return model


def random_model(variant, frames, prompt_layers=None):
    """A tiny random CLIP with a 4x4 patch grid (B/16-like: more patches than the fixture's 2x2)."""
    torch.manual_seed(0)
    cfg = CLIPConfig(
        embed_dim=32, image_resolution=32, vision_layers=3, vision_width=128, vision_heads=2, vision_patch_size=8,
        grid_size=4, context_length=77, vocab_size=1000, text_width=64, text_heads=1, text_layers=3,
    )
    config = DGLConfig(shared_latent_space=variant, max_frames=frames, global_prompt_length=3, local_prompt_length=2,
                       prompt_layers=prompt_layers)
    return DGL(CLIP(cfg), config).eval()


def check_weights(result, batch, layers, heads):
    g, t, s = result.num_global, result.frames, result.tokens_per_frame
    assert result.attention.shape == (batch, layers, heads, g, g + t * s)
    assert bool((result.attention >= 0).all())
    torch.testing.assert_close(result.attention.sum(-1), torch.ones(batch, layers, heads, g), atol=1e-5, rtol=0)
    for layer in ("mean", 0, -1):
        m = result.masses(layer, prompt=0)
        torch.testing.assert_close(m["global"] + m["frame"].sum(-1), torch.ones(batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_explicit_path_equals_fused_path_fixture(fixture_dir, variant):
    model = fixture_model(fixture_dir, variant)
    video = torch.load(fixture_dir / "inputs.pt", weights_only=True)["video"][:, 0]
    with torch.no_grad():
        prompts = model.prompts()
        for output_type in OUTPUT_TYPES:
            fused = model.encode_video(video, prompts, output_type=output_type)
            result = explicit_encode_video(model, video, prompts, output_type=output_type)
            torch.testing.assert_close(result.features, fused, atol=1e-5, rtol=1e-4)
    cfg = model.clip.config
    assert result.grid == (cfg.grid_size, cfg.grid_size)
    check_weights(result, video.shape[0], cfg.vision_layers, cfg.vision_heads)


@pytest.mark.parametrize("variant,frames,prompt_layers", [("transformer", 3, None), ("linear", 5, 2), ("linear", 1, 1)])
def test_explicit_path_equals_fused_path_random_clip(variant, frames, prompt_layers):
    model = random_model(variant, frames, prompt_layers)
    video = torch.randn(2, frames, 3, 32, 32)
    with torch.no_grad():
        for output_type in ("global_prompt0", "global-local-feature"):
            fused = model.encode_video(video, output_type=output_type)
            result = explicit_encode_video(model, video, output_type=output_type)
            torch.testing.assert_close(result.features, fused, atol=1e-5, rtol=1e-4)
    assert result.grid == (4, 4) and result.tokens_per_frame == 1 + 2 + 16
    check_weights(result, 2, 3, 2)


def test_weights_equal_one_masked_attention():
    """Independent check: torch's MultiheadAttention over all tokens with the global-local block mask."""
    torch.manual_seed(1)
    model = random_model("linear", 3)
    attn = model.clip.visual.transformer.resblocks[0].attn
    g, frames, s, width = 3, 3, 5, 128
    x = torch.randn(2, g + frames * s, width)
    mha = torch.nn.MultiheadAttention(width, attn.heads, batch_first=True)
    mha.load_state_dict({"in_proj_weight": attn.in_proj_weight, "in_proj_bias": attn.in_proj_bias,
                         "out_proj.weight": attn.out_proj.weight, "out_proj.bias": attn.out_proj.bias})
    frame_of = torch.cat([torch.full((g,), -1), torch.arange(frames).repeat_interleave(s)])
    allowed = (frame_of[:, None] == -1) | (frame_of[None, :] == -1) | (frame_of[:, None] == frame_of[None, :])
    with torch.no_grad():
        expected, expected_weights = mha(x, x, x, attn_mask=~allowed, need_weights=True, average_attn_weights=False)
        out, weights = explicit_global_local_attention(attn, x, g, frames)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights, expected_weights[:, :, :g], atol=1e-6, rtol=1e-4)


def test_select_and_split():
    model = random_model("transformer", 2)
    result = explicit_encode_video(model, torch.randn(1, 2, 3, 32, 32))
    per_head_mean = result.attention.mean(dim=2)
    torch.testing.assert_close(result.select(-1, prompt=1), per_head_mean[:, -1, 1])
    torch.testing.assert_close(result.select("mean", prompt=None), per_head_mean.mean(dim=(1, 2)))
    parts = result.split(result.select(0, 2))
    assert parts["patches"].shape == (1, 2, 4, 4) and parts["local"].shape == (1, 2, 2) and parts["global"].shape == (1, 3)
    with pytest.raises(ValueError):
        result.select(3)
    with pytest.raises(ValueError):
        result.select("mean", prompt=3)


def test_figure_size_is_a_function_of_frames_and_frame_size():
    # width = max(560, 10 + T·(F + 10)); height = 10+48+10 + F + 16+10+16+90+32+10
    assert figure_size(3, 64) == (560, 306)
    assert figure_size(12, 224) == (2818, 466)
    assert figure_size(12, 64) == (898, 306)
    rng = np.random.default_rng(0)
    for frames, size, grid in ((1, 48, 2), (4, 64, 2), (12, 64, 4)):
        image = attention_figure(
            rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
            rng.random((frames, grid, grid)) * 0.01,
            {k: rng.random(frames) * 0.1 for k in ("patches", "cls", "local")},
            0.1,
            title=["a very long title " * 20, "caption", "similarity"],
        )
        assert image.size == figure_size(frames, size)


def write_video(path, frames, width=80, height=56):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=3)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 40 * i, dtype=np.uint8)
            image[height // 4 : 3 * height // 4, width // 4 : width // 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_cli_official_checkpoint_short_video(fixture_dir, tmp_path):
    video, out = tmp_path / "short.mp4", tmp_path / "fig.png"
    write_video(video, 2)  # shorter than T = 4: the last frame repeats
    caption = "a white box on a dark background"
    args = visualize.build_parser().parse_args([
        "--checkpoint", str(fixture_dir / "dgl_transformer_ckpt.pth.tar"), "--video", str(video),
        "--caption", caption, "--out", str(out), "--device", "cpu",
    ])
    summary = visualize.run(args)
    assert summary["frame_indices"] == [0, 1, 1, 1]
    size = 64  # the tiny CLIP's input resolution
    assert Image.open(out).size == figure_size(4, size) == summary["size"]
    assert abs(sum(summary["frame_mass"]) + summary["global_mass"] - 1) < 1e-5
    # The similarity shown is the fused model's.
    model = fixture_model(fixture_dir, "transformer")
    frames, _ = read_eval_frames(video, 4, size)
    from models.tokenizer import ClipTokenizer

    ids, _ = ClipTokenizer()([caption], 32)
    with torch.no_grad():
        expected = F.cosine_similarity(model.encode_text(ids), model.encode_video(frames[None]))
    assert abs(summary["similarity"] - expected.item()) < 1e-5


def test_cli_compact_checkpoint_any_frame_count(fixture_dir, tmp_path):
    model = fixture_model(fixture_dir, "linear")
    ckpt_path, video, out = tmp_path / "dgl.pt", tmp_path / "v.mp4", tmp_path / "figs" / "fig.png"
    atomic_save(compact_checkpoint(model, {"name": str(fixture_dir / "tiny_clip_jit.pt")}), ckpt_path)
    write_video(video, 7)
    code = visualize.main([
        "--checkpoint", str(ckpt_path), "--video", str(video), "--out", str(out), "--max_frames", "3",
        "--layer", "-1", "--prompt", "1", "--frame_size", "48", "--device", "cpu",
    ])
    assert code == 0
    assert Image.open(out).size == figure_size(3, 48)


def test_cli_transformer_checkpoint_refuses_other_frame_count(fixture_dir, tmp_path):
    model = fixture_model(fixture_dir, "transformer")
    ckpt_path = tmp_path / "dgl.pt"
    atomic_save(compact_checkpoint(model, {"name": str(fixture_dir / "tiny_clip_jit.pt")}), ckpt_path)
    args = visualize.build_parser().parse_args(
        ["--checkpoint", str(ckpt_path), "--video", "unused.mp4", "--out", str(tmp_path / "x.png"), "--max_frames", "6"]
    )
    with pytest.raises(ValueError, match="frame-specific"):
        visualize.load_model(args)


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_official_config_read_from_checkpoint(fixture_dir, variant):
    """Without flags the sizes come from the tensors; they equal the fixture's settings (T: official default
    12 for the frame-independent linear variant)."""
    config = official_config_from_state(read_official_checkpoint(fixture_dir / f"dgl_{variant}_ckpt.pth.tar"))
    expected = dgl_config(json.loads((fixture_dir / "config.json").read_text())["variants"][variant]["args"])
    if variant == "linear":
        expected.max_frames = 12
    assert config == expected
