"""The contract: our DGL computes what the official code computes, on the official reference fixtures.

Everything (frames, prompt counts, layers, resolution, batch) comes from the fixture directory's
config.json, so the same test runs unchanged on other fixture sets of this layout.
"""
import json

import pytest
import torch

from models.checkpoint import load_official_checkpoint, official_names
from models.clip import CLIP
from models.dgl import DGL, DGLConfig, POOLED_OUTPUT_TYPES, contrastive_loss

VARIANTS = ("transformer", "linear")


def assert_close(name, ours, expected, atol, rtol=0.0):
    ours, expected = ours.detach().float(), expected.float()
    assert ours.shape == expected.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(expected.shape)}"
    err = (ours - expected).abs()
    bound = atol + rtol * expected.abs()
    assert bool((err <= bound).all()), f"{name}: max error {err.max().item():.3g} (worst excess {(err - bound).max().item():.3g})"


@pytest.fixture(scope="module", params=VARIANTS)
def reference(request, fixture_dir):
    variant = request.param
    config = json.loads((fixture_dir / "config.json").read_text())
    args = config["variants"][variant]["args"]
    clip = CLIP.from_pretrained(str(fixture_dir / "tiny_clip_jit.pt"))
    model = DGL(clip, DGLConfig.from_official_args(args))
    load_official_checkpoint(model, fixture_dir / f"dgl_{variant}_ckpt.pth.tar")
    inputs = torch.load(fixture_dir / "inputs.pt", weights_only=True)
    expected = torch.load(fixture_dir / f"expected_{variant}.pt", weights_only=True)
    return model, inputs["input_ids"][:, 0], inputs["video"][:, 0], expected


def test_text_features_and_prompts(reference):
    model, ids, _, expected = reference
    with torch.no_grad():
        prompts = model.prompts()
        text = model.encode_text(ids, prompts)
    assert_close("text_features", text, expected["text_features"][:, 0], atol=1e-5, rtol=1e-4)
    batch = ids.shape[0]
    ref_text = expected["intermediate/unified_text_prompt"]  # [layers, B, P, D], identical over B
    assert_close("text prompts", prompts.text.unsqueeze(1).expand(-1, batch, -1, -1), ref_text, atol=1e-5, rtol=1e-4)
    ref_local = expected["intermediate/unified_visual_prompt"]
    ours_local = prompts.local.flatten(1, 2).unsqueeze(1).expand(-1, batch, -1, -1)
    assert_close("local prompts", ours_local, ref_local, atol=1e-5, rtol=1e-4)
    prefix = model.config.text_prompt_length // 2
    assert torch.equal(ids.argmax(-1) + prefix, expected["intermediate/text_eot_index"])


@pytest.mark.parametrize("output_type", POOLED_OUTPUT_TYPES + ("global-local-feature",))
def test_video_features_and_logits(reference, output_type):
    model, ids, video, expected = reference
    with torch.no_grad():
        feats = model.encode_video(video, output_type=output_type)
        ref = expected[f"visual_features_{output_type}"]
        assert_close(f"video features {output_type}", feats, ref if output_type == "global-local-feature" else ref[:, 0], atol=1e-5, rtol=1e-4)
        if output_type != "global-local-feature":
            logits = model.logits(model.encode_text(ids), feats)
            key = "logits" if output_type == "global_prompt0" else f"logits_{output_type}"
            assert_close(key, logits, expected[key], atol=1e-4)


def test_training_loss_and_gradients(reference):
    model, ids, video, expected = reference
    model.train()
    model.zero_grad(set_to_none=True)
    text, vid = model(ids, video)
    loss = contrastive_loss(model.logits(text, vid))
    loss.backward()
    assert_close("train_loss", loss, expected["train_loss"], atol=2e-5)
    params = dict(model.named_parameters())
    grads = {}
    for ours, theirs in official_names(model).items():
        ref = expected[f"grads/{theirs}"]
        grad = params[ours].grad
        assert grad is not None, f"{ours} got no gradient"
        grads[theirs] = grad.reshape(ref.shape)
        err = (grads[theirs] - ref).abs()
        bound = 1e-5 * ref.abs().max() + 1e-3 * ref.abs()
        assert bool((err <= bound).all()), f"grad {theirs}: max error {err.max().item():.3g}"
    expected_grad_keys = {k[len("grads/"):] for k in expected if k.startswith("grads/")}
    assert set(grads) == expected_grad_keys, "trainable tensors differ from the reference's"
    for name in grads:  # the official postfix text prompts are dead (causal mask): exactly zero
        if torch.count_nonzero(expected[f"grads/{name}"]) == 0:
            assert torch.count_nonzero(grads[name]) == 0, f"{name} should get exactly zero gradient"
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
    assert_close("train_grad_total_norm", total, expected["train_grad_total_norm"], atol=0, rtol=1e-4)
    model.zero_grad(set_to_none=True)
    model.eval()
