"""The contract: our DGL computes what the official code computes, on the official reference fixtures.

Everything (frames, prompt counts, layers, resolution, batch) comes from the set's config.json, so the same
tests run unchanged on any set of this layout, full or compact (``DGL_REFERENCE_FIXTURES=DIR``).
"""
import json

import pytest
import torch

from models.checkpoint import load_official_checkpoint, official_names
from models.clip import CLIP
from models.dgl import DGL, POOLED_OUTPUT_TYPES
from models.losses import contrastive_loss
from tests.reference import VARIANTS, close_errors, grad_errors, load_expected
from utils.flags import dgl_config

OUTPUT_TYPES = POOLED_OUTPUT_TYPES + ("global-local-feature",)


def build_reference(fixture_dir, variant):
    """Our model loaded from the official checkpoint, the official inputs and the expected outputs."""
    config = json.loads((fixture_dir / "config.json").read_text())
    clip = CLIP.from_pretrained(str(fixture_dir / "tiny_clip_jit.pt"))
    model = DGL(clip, dgl_config(config["variants"][variant]["args"]))
    load_official_checkpoint(model, fixture_dir / f"dgl_{variant}_ckpt.pth.tar")
    inputs = torch.load(fixture_dir / "inputs.pt", weights_only=True)
    return model, inputs["input_ids"][:, 0], inputs["video"][:, 0], load_expected(fixture_dir, variant)


@pytest.fixture(scope="module", params=VARIANTS)
def reference(request, fixture_dir):
    return build_reference(fixture_dir, request.param)


def text_errors(model, ids, expected) -> list[str]:
    with torch.no_grad():
        prompts = model.prompts()
        text = model.encode_text(ids, prompts)
    batch = ids.shape[0]
    ours_local = prompts.local.flatten(1, 2).unsqueeze(1).expand(-1, batch, -1, -1)
    errors = close_errors("text_features", text, expected["text_features"][:, 0], atol=1e-5, rtol=1e-4)
    errors += close_errors("text prompts", prompts.text.unsqueeze(1).expand(-1, batch, -1, -1),
                           expected["intermediate/unified_text_prompt"], atol=1e-5, rtol=1e-4)
    errors += close_errors("local prompts", ours_local, expected["intermediate/unified_visual_prompt"], atol=1e-5, rtol=1e-4)
    prefix = model.config.text_prompt_length // 2
    if not torch.equal(ids.argmax(-1) + prefix, expected["intermediate/text_eot_index"]):
        errors.append("text EOT index differs")
    return errors


def video_errors(model, ids, video, expected, output_type) -> list[str]:
    with torch.no_grad():
        feats = model.encode_video(video, output_type=output_type)
        ref = expected[f"visual_features_{output_type}"]
        pooled = output_type != "global-local-feature"
        errors = close_errors(f"video features {output_type}", feats, ref[:, 0] if pooled else ref, atol=1e-5, rtol=1e-4)
        if pooled:
            key = "logits" if output_type == "global_prompt0" else f"logits_{output_type}"
            errors += close_errors(key, model.logits(model.encode_text(ids), feats), expected[key], atol=1e-4)
    return errors


def training_gradients(model, ids, video) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss and each trainable tensor's gradient, under the official names."""
    model.train()
    model.zero_grad(set_to_none=True)
    text, vid = model(ids, video)
    loss = contrastive_loss(model.logits(text, vid))
    loss.backward()
    params = dict(model.named_parameters())
    grads = {theirs: params[ours].grad for ours, theirs in official_names(model).items()}
    model.zero_grad(set_to_none=True)
    model.eval()
    return loss.detach(), grads


def gradient_errors(grads, expected) -> list[str]:
    errors = [f"{name} got no gradient" for name, g in grads.items() if g is None]
    expected_names = {k[len("grads/"):] for k in expected if k.startswith("grads/")}
    if set(grads) != expected_names:
        errors.append(f"trainable tensors differ from the reference's: {sorted(set(grads) ^ expected_names)}")
    for name in sorted(set(grads) & expected_names):
        if grads[name] is not None:
            errors += grad_errors(name, grads[name], expected[f"grads/{name}"])
    return errors


def test_text_features_and_prompts(reference):
    model, ids, _, expected = reference
    assert text_errors(model, ids, expected) == []


@pytest.mark.parametrize("output_type", OUTPUT_TYPES)
def test_video_features_and_logits(reference, output_type):
    model, ids, video, expected = reference
    assert video_errors(model, ids, video, expected, output_type) == []


def test_training_loss_and_gradients(reference):
    model, ids, video, expected = reference
    loss, grads = training_gradients(model, ids, video)
    assert close_errors("train_loss", loss, expected["train_loss"], atol=2e-5) == []
    assert gradient_errors(grads, expected) == []
    for name, ref in expected.items():  # the official postfix text prompts are dead (causal mask): exactly zero
        if name.startswith("grads/") and float(ref["norm"] if isinstance(ref, dict) else ref.abs().max()) == 0:
            assert torch.count_nonzero(grads[name[len("grads/"):]]) == 0, f"{name} should get exactly zero gradient"
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
    assert close_errors("train_grad_total_norm", total, expected["train_grad_total_norm"], atol=0, rtol=1e-4) == []
