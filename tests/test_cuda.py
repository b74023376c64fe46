"""The model on a GPU against the same model on the CPU: features, loss, gradients, bf16, the fused kernels.

Skipped where no CUDA device exists (this project's CI); `bash scripts/gpu_check.sh` runs it on a lent GPU.
DGL_TEST_DEVICE=cpu runs the same comparisons CPU against CPU, to check the test code itself without a GPU.
"""
import copy
import os

import pytest
import torch

from models.dgl import POOLED_OUTPUT_TYPES
from models.losses import contrastive_loss
from tests.test_dgl import random_ids, tiny_model
from apps.bench.naive import naive_encode_video

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
