"""The input-independent prompt work DGL skips changes nothing.

Local prompts that the next layer replaces, and the text tower's SOT and prefix prompts (which under the causal
mask see only each other), are the same for every video or caption: the model computes their keys and values once
per batch and none of their discarded rows. Here the features, the loss and every gradient equal an independent
computation of every row of every layer (the block-masked global-local attention of ``apps.bench.naive`` over all
tokens; below, one plain causal pass over the whole text sequence), within 1e-6.
"""
import dataclasses

import pytest
import torch

from apps.bench.naive import naive_encode_video
from models.clip import CLIP
from models.dgl import DGL, DGLConfig
from models.losses import contrastive_loss
from tests.test_dgl import random_ids
from tests.tiny_runs import TINY

DEEP = dataclasses.replace(TINY, vision_layers=4, text_layers=4)
FRAMES = 3


def naive_encode_text(model: DGL, ids: torch.Tensor, prompts) -> torch.Tensor:
    """Every row of [SOT, prefix prompts, words] through each block's own causal forward; layer i's prompts
    overwrite the carried ones (spec 1.6, less the postfix prompts and padding, which cannot reach the EOT row)."""
    prefix_len = model.config.text_prompt_length // 2
    words = model.clip.embed_text(ids)
    prefix = prompts.text[:, :prefix_len]
    x = torch.cat([words[:, :1], prefix[0].expand(len(ids), -1, -1), words[:, 1:]], dim=1)
    for i, block in enumerate(model.clip.transformer.resblocks):
        if 0 < i < model.prompt_layers:
            x = torch.cat([x[:, :1], prefix[i].expand(len(ids), -1, -1), x[:, 1 + prefix_len :]], dim=1)
        x = block(x, is_causal=True)
    return model.clip.project_text(x[torch.arange(len(ids)), ids.argmax(dim=-1) + prefix_len])


def features_loss_grads(model: DGL, ids, video, naive: bool):
    model.zero_grad(set_to_none=True)
    prompts = model.prompts()
    if naive:
        text, vid = naive_encode_text(model, ids, prompts), naive_encode_video(model, video, prompts)
    else:
        text, vid = model.encode_text(ids, prompts), model.encode_video(video, prompts)
    loss = contrastive_loss(model.logits(text, vid))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.trainable_parameters().items()}
    return {"text": text.detach(), "video": vid.detach(), "loss": loss.detach()}, grads


def assert_close(ours: torch.Tensor, ref: torch.Tensor, name: str):
    scale = max(1.0, float(ref.abs().max()))
    error = float((ours - ref).abs().max())
    assert error <= 1e-6 * scale, f"{name}: max error {error:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("variant", ["transformer", "linear"])
@pytest.mark.parametrize("prompt_layers", [None, 3, 1])  # all 4 layers; replaced then carried; carried from layer 0
@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_forward_and_gradients_equal_every_row_computed(variant, prompt_layers, checkpointing):
    torch.manual_seed(0)
    model = DGL(CLIP(DEEP), DGLConfig(shared_latent_space=variant, max_frames=FRAMES, prompt_layers=prompt_layers))
    model = model.double().train()
    model.set_grad_checkpointing(checkpointing)
    ids = random_ids(4, seed=1)
    video = torch.randn(4, FRAMES, 3, 32, 32, dtype=torch.float64)
    ours, our_grads = features_loss_grads(model, ids, video, naive=False)
    ref, ref_grads = features_loss_grads(model, ids, video, naive=True)
    assert float(ref["loss"]) > 0.1 and any(float(g.abs().max()) > 1e-4 for g in ref_grads.values())
    for name in ref:
        assert_close(ours[name], ref[name], name)
    assert our_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        assert_close(our_grads[name], ref_grads[name], f"grad {name}")


def test_captions_must_share_their_first_id():
    """The SOT row runs once for the batch, so a batch whose first ids differ cannot be encoded."""
    model = DGL(CLIP(DEEP), DGLConfig(max_frames=FRAMES)).eval()
    ids = random_ids(2)
    ids[1, 0] = 7
    with pytest.raises(ValueError, match="start-of-text"):
        model.encode_text(ids)
