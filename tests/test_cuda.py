"""The model on a GPU against the same model on the CPU: features, loss, gradients, bf16, the fused kernels.

Skipped where no CUDA device exists (this project's CI); `bash scripts/gpu_check.sh` runs it on a lent GPU.
DGL_TEST_DEVICE=cpu runs the same comparisons CPU against CPU, to check the test code itself without a GPU.
"""
import copy
import os

import pytest
import torch

from models.blip import BlipRetrieval
from models.blip.dgl_video import DGLBlip, DGLBlipConfig
from models.blip.losses import BlipLossConfig
from models.blip.objective import DGLBlipObjective
from models.dgl import POOLED_OUTPUT_TYPES
from models.losses import contrastive_loss
from tests.test_dgl import random_ids, tiny_model
from apps.bench.inputs import BLIP_PRESETS
from apps.bench.naive import naive_encode_video

TINY_BLIP = BLIP_PRESETS["blip-tiny"]  # what the GPU image can import (tests/tiny_backbones.py needs regex)

DEVICE = os.environ.get("DGL_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


def _no_tf32():
    """fp32 comparisons need full fp32 matmuls (TF32 would cost ~3 decimal digits)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.fp32_precision = "ieee"  # the API utils.step.tf32 uses (torch refuses a mix)
        torch.backends.cudnn.conv.fp32_precision = "ieee"


def _step(model, ids, video):
    model.zero_grad(set_to_none=True)
    text, vid = model(ids, video)
    loss = contrastive_loss(model.logits(text, vid))
    loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.trainable_parameters().items()}
    return text.detach().cpu(), vid.detach().cpu(), loss.detach().cpu(), grads


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_gpu_matches_cpu_in_fp32(variant):
    _no_tf32()
    cpu_model = tiny_model(shared_latent_space=variant).train()
    gpu_model = copy.deepcopy(cpu_model).to(DEVICE)
    ids, video = random_ids(4), torch.randn(4, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = _step(cpu_model, ids, video)
    out = _step(gpu_model, ids.to(DEVICE), video.to(DEVICE))
    for name, a, b in zip(("text", "video", "loss"), out[:3], ref[:3]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    for name in ref[3]:
        scale = ref[3][name].abs().max().clamp(min=1e-12)
        assert (out[3][name] - ref[3][name]).abs().max() <= 1e-4 * scale + 1e-7, name


def test_fused_attention_matches_the_block_masked_reference_on_the_device():
    """SDPA on the GPU picks other kernels than on the CPU; the frame/global layout must hold for them too."""
    _no_tf32()
    model = tiny_model().to(DEVICE)
    video = torch.randn(2, 4, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        prompts = model.prompts()
        for output_type in POOLED_OUTPUT_TYPES + ("global-local-feature",):
            ours = model.encode_video(video, prompts, output_type=output_type)
            naive = naive_encode_video(model, video, prompts, output_type=output_type)
            torch.testing.assert_close(ours, naive, atol=1e-4, rtol=1e-4, msg=output_type)


def test_bf16_autocast_on_the_device_stays_close_to_fp32():
    _no_tf32()
    model = tiny_model().to(DEVICE)
    ids, video = random_ids(4).to(DEVICE), torch.randn(4, 4, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        ref_t, ref_v = model(ids, video)
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            t, v = model(ids, video)
    cos = torch.nn.functional.cosine_similarity
    assert cos(t.float(), ref_t).min() > 0.98 and cos(v.float(), ref_v).min() > 0.98


@pytest.mark.parametrize("mode", ["full", "prompts"])
def test_dgl_blip_recipe_step_on_the_device(mode):
    """DGL-BLIP's objective built around a model on the device keeps its queue there: two ITC steps with queue and
    teacher equal the CPU's (loss, gradients), and a step with ITM on hard negatives runs (its draws come from the
    device's generator, so it is not compared)."""
    _no_tf32()
    torch.manual_seed(0)
    model = DGLBlip(BlipRetrieval(TINY_BLIP), DGLBlipConfig(2, training_mode=mode)).train()
    ids = torch.randint(5, TINY_BLIP.vocab_size, (3, 6), generator=torch.Generator().manual_seed(2))
    video = torch.randn(3, 2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    batch = (ids, torch.ones_like(ids), video, torch.arange(3))
    runs = {}
    for device in ("cpu", DEVICE):
        net = copy.deepcopy(model).to(device)
        objective = DGLBlipObjective(net, BlipLossConfig(queue_size=8, itm_weight=0.0), enc_id=4)
        for _ in range(2):
            net.zero_grad(set_to_none=True)
            losses = objective(*(t.to(device) for t in batch))
            losses["backward"].backward()
        assert objective.queue.text.device.type == torch.device(device).type and int(objective.queue.filled) == 6
        runs[device] = (losses["loss"].detach().cpu(), {n: p.grad.cpu() for n, p in net.named_parameters()
                                                        if p.grad is not None})
    torch.testing.assert_close(runs[DEVICE][0], runs["cpu"][0], atol=2e-5, rtol=1e-4)
    assert runs[DEVICE][1].keys() == runs["cpu"][1].keys()
    for name, grad in runs["cpu"][1].items():
        assert (runs[DEVICE][1][name] - grad).abs().max() <= 1e-4 * grad.abs().max().clamp(min=1e-12) + 1e-7, name
    net = copy.deepcopy(model).to(DEVICE)
    generator = torch.Generator(torch.device(DEVICE)).manual_seed(0)
    objective = DGLBlipObjective(net, BlipLossConfig(queue_size=8), enc_id=4, generator=generator)
    losses = objective(*(t.to(DEVICE) for t in batch))
    losses["backward"].backward()
    assert torch.isfinite(losses["itm"]) and net.global_prompts.grad.abs().max() > 0
