"""DGL-BLIP's video model (models/blip/dgl_video.py) on tiny random BLIP files written by transformers.

With no global prompts the model must be BLIP run frame by frame (the peer's image feature at T = 1, the
tokenmix frame mean at T > 1); with global prompts each block must equal one masked attention over the whole
video computed by ``torch.nn.MultiheadAttention``; the two training modes must train what they say.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.blip import load_blip
from models.blip.dgl_video import DGLBlip, DGLBlipConfig
from models.blip.losses import BlipLossConfig
from models.blip.objective import DGLBlipObjective
from tests.blip_files import Size, write_hf_folder

SIZE = Size(32, 2, 2, 8, 32, 32, 2, 4)  # 4x4 patches of 8 px: S = 17 tokens per frame
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def blip_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip")
    peer = write_hf_folder(folder, SIZE)
    return folder, peer


def model(folder, **config) -> DGLBlip:
    torch.manual_seed(0)
    return DGLBlip(load_blip(folder, temperature=0.07), DGLBlipConfig(**config)).eval()


def frames(batch: int, count: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_without_global_attention_one_frame_is_blips_image_feature(blip_files):
    """T = 1, no global prompts, frame-mean pooling: the video feature is the peer's image feature."""
    folder, peer = blip_files
    video = frames(3, 1)
    with torch.no_grad():
        ours = model(folder, global_prompt_length=0, video_pooling="frame_mean").encode_video(video)
        cls = peer.vision_model(pixel_values=video[:, 0]).last_hidden_state[:, 0]
        reference = F.normalize(peer.vision_proj(cls), dim=-1)
    assert (ours - reference).abs().max() < TOLERANCE
    assert (reference[0] - reference[1]).abs().max() > 0.1  # distinct images give distinct features


def test_without_global_attention_frames_are_independent_images(blip_files):
    """T = 3, no global prompts: ITM tokens are the frames' image tokens side by side (tokenmix's), and the
    frame-mean feature is tokenmix's normalised mean of the projected frame CLS tokens."""
    folder, peer = blip_files
    video = frames(2, 3)
    dgl = model(folder, global_prompt_length=0, video_pooling="frame_mean")
    with torch.no_grad():
        feature, tokens = dgl.encode_video_with_tokens(video)
        per_frame = peer.vision_model(pixel_values=video.flatten(0, 1)).last_hidden_state  # [B·T, S, D]
        reference = F.normalize(peer.vision_proj(per_frame[:, 0]).unflatten(0, (2, 3)).mean(1), dim=-1)
    assert (tokens - per_frame.unflatten(0, (2, 3)).flatten(1, 2)).abs().max() < TOLERANCE
    assert (feature - reference).abs().max() < TOLERANCE


def masked_reference(dgl: DGLBlip, video: torch.Tensor) -> torch.Tensor:
    """The video tokens by one masked attention per block over all ``G + T·S`` tokens, with
    ``torch.nn.MultiheadAttention`` holding the block's weights: frames see the globals and their own frame."""
    blip, num_global = dgl.blip, dgl.config.global_prompt_length
    batch, count = video.shape[:2]
    tokens = blip.embed_frames(video.flatten(0, 1)).unflatten(0, (batch, count))
    per_frame = tokens.shape[2]
    x = torch.cat([dgl.global_prompts.expand(batch, -1, -1), tokens.flatten(1, 2)], dim=1)
    frame_of = torch.cat([torch.full((num_global,), -1), torch.arange(count).repeat_interleave(per_frame)])
    allowed = (frame_of[:, None] == frame_of[None]) | (frame_of[None] == -1) | (frame_of[:, None] == -1)
    for block in blip.vision_blocks:
        width = x.shape[-1]
        mha = nn.MultiheadAttention(width, block.attn.heads, batch_first=True)
        mha.load_state_dict(block.attn.state_dict())
        h = block.ln_1(x)
        x = x + mha(h, h, h, attn_mask=~allowed, need_weights=False)[0]
        x = x + block.mlp(block.ln_2(x))
    return blip.vision_norm(x)


@pytest.mark.parametrize("pooling", ["global_prompt0", "frame_mean"])
def test_global_local_attention_equals_one_masked_attention(blip_files, pooling):
    folder, _ = blip_files
    dgl = model(folder, global_prompt_length=3, video_pooling=pooling)
    with torch.no_grad():
        dgl.global_prompts.normal_(0, 1)  # prompts large enough to move every token
        video = frames(2, 4)
        feature, tokens = dgl.encode_video_with_tokens(video)
        reference = masked_reference(dgl, video)
        alone = model(folder, global_prompt_length=0, video_pooling="frame_mean").video_tokens(video)
    assert tokens.shape == (2, 3 + 4 * 17, SIZE.vision_width)
    assert (tokens - reference).abs().max() < TOLERANCE
    assert (tokens[:, 3:] - alone).abs().max() > 0.1  # the globals do reach the frames
    rows = reference[:, 0] if pooling == "global_prompt0" else dgl.blip.vision_proj(reference[:, 3::17]).mean(1)
    projected = dgl.blip.vision_proj(rows) if pooling == "global_prompt0" else rows
    assert (feature - F.normalize(projected, dim=-1)).abs().max() < TOLERANCE


@pytest.mark.parametrize("pooling", ["global_prompt0", "frame_mean"])
def test_the_video_feature_is_blind_to_frame_order(blip_files, pooling):
    """No token carries its frame's index (frames share BLIP's spatial positions, the globals are one set), so
    reversing the frames permutes the frame tokens and leaves the globals and the feature as they were: DGL-BLIP
    cannot tell a video from its time reversal (docs/demo.md, the demo on BLIP). Shuffling within a frame can."""
    folder, _ = blip_files
    dgl = model(folder, global_prompt_length=3, video_pooling=pooling)
    with torch.no_grad():
        dgl.global_prompts.normal_(0, 1)
        video = frames(2, 4)
        feature, tokens = dgl.encode_video_with_tokens(video)
        reversed_feature, reversed_tokens = dgl.encode_video_with_tokens(video.flip(1))
        transposed = dgl.encode_video(video.transpose(-1, -2))  # the same pixels, another spatial order
    assert (reversed_tokens[:, :3] - tokens[:, :3]).abs().max() < TOLERANCE
    frame_tokens = tokens[:, 3:].unflatten(1, (4, 17))
    assert (reversed_tokens[:, 3:].unflatten(1, (4, 17)) - frame_tokens.flip(1)).abs().max() < TOLERANCE
    assert (reversed_feature - feature).abs().max() < TOLERANCE
    assert (transposed - feature).abs().max() > 0.01


def test_gradient_checkpointing_keeps_gradients(blip_files):
    folder, _ = blip_files
    video = frames(2, 2)
    direction = torch.randn(2, SIZE.embed_dim, generator=torch.Generator().manual_seed(2))
    grads = []
    for enable in (False, True):
        dgl = model(folder, global_prompt_length=2)
        dgl.set_grad_checkpointing(enable)
        (dgl.encode_video(video) * direction).sum().backward()
        grads.append(torch.cat([dgl.global_prompts.grad.flatten(),
                                dgl.blip.vision_blocks[0].attn.in_proj_weight.grad.flatten()]))
    assert grads[0].abs().max() > 1e-3 and (grads[0] - grads[1]).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["full", "prompts"])
def test_training_modes_train_what_they_say(blip_files, mode):
    folder, _ = blip_files
    dgl = model(folder, global_prompt_length=2, training_mode=mode)
    groups = dgl.param_groups(backbone_lr=1e-5, prompt_lr=1e-3, weight_decay=0.05)
    assert [g["name"] for g in groups] == (["backbone", "prompts"] if mode == "full" else ["prompts"])
    if mode == "full":
        assert groups[0]["lr"] == 1e-5 and groups[0]["lr_mult"] == pytest.approx(1e-2)
        assert len(groups[0]["params"]) == len(list(dgl.blip.parameters()))  # temperature included
        assert any(p is dgl.temp for p in groups[0]["params"])
    assert groups[-1]["params"] == [dgl.global_prompts] and groups[-1]["lr"] == 1e-3
    before = {k: v.clone() for k, v in dgl.state_dict().items()}
    optimizer = torch.optim.AdamW(groups)
    ids = torch.randint(5, 60, (2, 8))
    text, video = dgl(ids, torch.ones_like(ids), frames(2, 2))
    (text @ video.t() / dgl.temp).diagonal().sum().backward()
    optimizer.step()
    changed = {k for k, v in dgl.state_dict().items() if not torch.equal(v, before[k])}
    assert "global_prompts" in changed
    if mode == "full":
        assert {"blip.visual.blocks.0.attn.in_proj_weight",
                "blip.text_encoder.encoder.layer.0.attention.self.query.weight",
                "blip.temp"} <= changed
    else:
        assert changed == {"global_prompts"}


def test_config_refusals():
    with pytest.raises(ValueError, match="video_pooling must be one of"):
        DGLBlipConfig(video_pooling="mean")
    with pytest.raises(ValueError, match="reads the first global prompt: give global_prompt_length >= 1"):
        DGLBlipConfig(global_prompt_length=0)
    with pytest.raises(ValueError, match="training_mode must be one of"):
        DGLBlipConfig(training_mode="frozen")


def test_gradient_checkpointing_covers_both_towers_and_itm(blip_files):
    """A full-recipe step (full fine-tuning, ITC with queue and teacher, ITM) gives the same gradient of every
    parameter with and without checkpointing (float64, 1e-6), and with it every vision block and every BERT layer
    of the text and ITM passes runs again in backward while far fewer activations are kept for it."""
    folder, _ = blip_files
    video, ids = frames(3, 2).double(), torch.randint(5, 60, (3, 8), generator=torch.Generator().manual_seed(3))
    grads, runs, saved = [], [], []
    for enable in (False, True):
        dgl = model(folder, global_prompt_length=2, training_mode="full").double().train()
        dgl.set_grad_checkpointing(enable)
        objective = DGLBlipObjective(dgl, BlipLossConfig(queue_size=6), enc_id=4,
                                     generator=torch.Generator().manual_seed(0))
        layers = [b.ln_1 for b in dgl.blip.vision_blocks] + [layer.intermediate for layer in dgl.blip.text_blocks]
        calls = [0]
        for module in layers:
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        kept = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            kept[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = objective(ids, torch.ones_like(ids), video, torch.arange(3))
        forward_calls = calls[0]
        losses["backward"].backward()
        grads.append({n: p.grad.clone() for n, p in dgl.named_parameters() if p.grad is not None})
        runs.append((forward_calls, calls[0] - forward_calls))
        saved.append(kept[0])
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(dgl.parameters()))
    for name, grad in grads[0].items():
        assert (grad - grads[1][name]).abs().max() < 1e-6, name
    vision, text = len(dgl.blip.vision_blocks), len(dgl.blip.text_blocks)
    # Forward: online video, text and ITM passes, then the momentum copy's video and text (hooks only on the online
    # model). Backward without checkpointing runs nothing again; with it, the three online passes once more.
    assert runs == [(vision + 2 * text, 0), (vision + 2 * text, vision + 2 * text)]
    assert saved[1] < 0.3 * saved[0]
