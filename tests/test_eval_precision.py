"""Precision of training and evaluation: both towers keep their residual stream in the weights' dtype under
autocast (the vision tower used to carry bf16 while the text tower carried fp32); evaluation encodes in fp32 unless
--eval_precision asks otherwise; TF32 is a flag (training steps by default), never on for the similarity matrix."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models.losses import cosine_logits
from tests.test_dgl import random_ids, tiny_model
from tests.tiny_runs import data_flags
from utils.config import build_config
from utils.evaluation import Features, evaluate_features
from utils.step import tf32


def block_input_dtypes(model, run) -> dict[str, torch.dtype]:
    seen = {}
    def record(tower):
        def hook(module, args):
            seen.setdefault(tower, args[0].dtype)
        return hook

    hooks = [blocks[0].ln_1.register_forward_pre_hook(record(tower))  # the residual stream entering block 0
             for tower, blocks in (("vision", model.clip.vision_blocks), ("text", model.clip.text_blocks))]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_both_towers_carry_the_residual_stream_in_fp32_under_autocast(dtype):
    model = tiny_model()
    video = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        seen = block_input_dtypes(model, lambda: model(random_ids(2), video))
        assert model.clip.embed_frames(video[0]).dtype == torch.float32
    assert seen == {"vision": torch.float32, "text": torch.float32}


def test_tf32_context_sets_and_restores():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with tf32(True):
        assert matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
        with tf32(False):
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before


class RecordingModel:
    """Scores like DGL and records the matmul precision the similarity ran under."""

    def __init__(self):
        self.seen = []

    def logits(self, text, video):
        self.seen.append(torch.backends.cuda.matmul.fp32_precision)
        return cosine_logits(torch.tensor(4.6), text, video)


def test_similarity_matrix_never_runs_in_tf32():
    gen = torch.Generator().manual_seed(0)
    feats = Features(torch.randn(6, 8, generator=gen), torch.randn(3, 8, generator=gen))
    model, split = RecordingModel(), SimpleNamespace(caption_video=[0, 0, 1, 1, 2, 2])
    before = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"  # as a global setting would leave it
        evaluate_features(model, feats, split, dsl=True, bank=feats)
    finally:
        torch.backends.cuda.matmul.fp32_precision = before
    assert model.seen and set(model.seen) == {"ieee"}


def flags(*extra: str) -> list[str]:
    return data_flags(Path("/nonexistent")) + ["--do_eval", "1", "--output_dir", "o", *extra]


def test_precision_and_tf32_flags():
    cfg = build_config(flags())
    assert (cfg.eval.precision, cfg.eval.tf32, cfg.train.tf32, cfg.train.precision) == ("fp32", False, True, "amp")
    cfg = build_config(flags("--tf32", "all", "--eval_precision", "bf16"))
    assert (cfg.eval.precision, cfg.eval.tf32, cfg.train.tf32) == ("bf16", True, True)
    assert build_config(flags("--tf32", "off")).train.tf32 is False
