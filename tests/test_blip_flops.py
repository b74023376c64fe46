"""BLIP's FLOP counts (models/blip/flops.py) against a hand count, against torch's FLOP counter on the real
forward passes (which sees the weight GEMMs and the stem, not the CPU attention kernel), and against the
project's per-block convention (models/flops.py) where BLIP's MLP is 4x wide."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.blip import BlipConfig, BlipRetrieval
from models.blip.dgl_video import DGLBlip, DGLBlipConfig
from models.blip.flops import (dgl_train_step_flops, dgl_video_flops, itm_flops, layer_flops, pooled_tokens,
                               rerank_flops, text_flops, video_tokens, vision_flops)
from models.blip.losses import BlipLossConfig
from models.blip.objective import DGLBlipObjective
from models.flops import block_flops
from utils.itm_rerank import blip_pair_scorer, itm_rerank

# Vision: width 8, 2 layers, MLP 16, patch 4 at 8 px (grid 2: 5 tokens), embed 4; text: width 6, 1 layer, MLP 12.
CFG = BlipConfig(embed_dim=4, image_resolution=8, vision_layers=2, vision_width=8, vision_heads=2, vision_patch_size=4,
                 grid_size=2, context_length=10, vocab_size=20, text_width=6, text_heads=3, text_layers=1,
                 vision_mlp_width=16, text_mlp_width=12, vision_eps=1e-6, text_eps=1e-12)


def test_hand_count():
    # Vision layer, 5 tokens: qkv+out 8*5*8*8 = 2560, MLP 4*5*8*16 = 2560, attention 4*8*5*5 = 800 -> 5920.
    # Per frame: 2 layers 11840 + stem 2*4 patches*(3*4*4)*8 = 3072 + vision_proj 2*8*4 = 64 -> 14976.
    assert vision_flops(CFG, frames=3) == (3 * 14976, 3 * (2 * (2560 + 2560 + 1600) + 64))
    # Text, 5 tokens: 8*5*36 = 1440, 4*5*6*12 = 1440, attention 4*6*25 = 600; text_proj 2*6*4 = 48.
    assert text_flops(CFG, captions=2, tokens=5) == (2 * 3528, 2 * (1440 + 1440 + 1200 + 48))
    # ITM, 5 tokens on 5 image tokens: self part 3480; cross q+out 4*5*36 = 720, k+v 4*5*8*6 = 960,
    # attention 4*6*5*5 = 600; itm_head 2*6*2 = 24.
    assert itm_flops(CFG, pairs=2, tokens=5) == (2 * (3480 + 720 + 960 + 600 + 24),
                                                 2 * (1440 + 1440 + 1200 + 720 + 960 + 1200 + 24))


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def test_equals_torch_flop_counter_without_attention_products():
    torch.manual_seed(0)
    model = BlipRetrieval(CFG).eval()
    images, ids, mask = torch.randn(3, 3, 8, 8), torch.randint(0, 20, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    assert counted(lambda: model.image_features(images)) == vision_flops(CFG, 3, attention=False)[0]
    assert counted(lambda: model.text_features(ids, mask)) == text_flops(CFG, 2, 5, attention=False)[0]
    tokens = model.image_tokens(images[:2])
    assert counted(lambda: model.itm_logits(ids, mask, tokens)) == itm_flops(CFG, 2, 5, attention=False)[0]


@pytest.mark.parametrize("backward", [False, True])
def test_layer_is_the_projects_block_at_4x_mlp(backward):
    assert layer_flops(50, 64, 256, 2500, backward) == block_flops(50, 64, 2500, backward)


def test_rerank_hand_count():
    # A DGL-BLIP video of 2 frames with 2 global prompts: 2 + 2*5 = 12 vision tokens.
    assert video_tokens(CFG, frames=2, global_prompts=2) == 12
    # Per pair (5 ids on 12 tokens): self part 3480; cross q+out 4*5*36 = 720, k+v 4*12*8*6 = 2304,
    # attention 4*6*5*12 = 1440; itm_head 24 -> 7968. 3 texts x min(4, 2) + 2 videos x min(4, 3) = 12 pairs.
    assert rerank_flops(CFG, texts=3, videos=2, k=4, tokens=5, memory=12) == 12 * 7968
    assert rerank_flops(CFG, texts=3, videos=2, k=1, tokens=5, memory=12) == 5 * 7968


def test_rerank_equals_torch_flop_counter_without_attention_products():
    torch.manual_seed(0)
    model = BlipRetrieval(CFG).eval()
    texts, videos, memory = 4, 3, video_tokens(CFG, frames=2, global_prompts=2)
    ids, mask = torch.randint(0, 20, (texts, 5)), torch.ones(texts, 5, dtype=torch.long)
    scorer = blip_pair_scorer(model.itm_logits, ids, mask, torch.randn(videos, memory, CFG.vision_width))
    sim = torch.rand(texts, videos)
    assert counted(lambda: itm_rerank(sim, k=2, score=scorer, chunk=3)) == rerank_flops(
        CFG, texts, videos, k=2, tokens=5, memory=memory, attention=False)


def test_dgl_video_hand_count():
    # G = 2 globals, T = 2 frames of S = 5 tokens: L = 12; pairs = T*S*(G + S) + G*L = 70 + 24 = 94.
    # Per layer: q, k, v, out 8*12*8*8 = 6144, MLP 4*12*8*16 = 6144, attention 4*8*94 = 3008; 2 layers; head
    # 2*8*4 = 64 (one pooled token); stem 2*T*grid²*(3*4*4)*8 = 6144 (backward: its weight gradient, full only).
    gemm, att, stem = 2 * (6144 + 6144) + 64, 2 * 3008, 6144
    assert dgl_video_flops(CFG, 2, 2, mode="prompts") == (gemm + att + stem, gemm + 2 * att)
    assert dgl_video_flops(CFG, 2, 2, videos=3, mode="full") == (3 * (gemm + att + stem), 3 * (2 * gemm + 2 * att + stem))
    # The frame mean projects the T = 2 frame CLS tokens: one more head (64).
    assert dgl_video_flops(CFG, 2, 2, pooled=pooled_tokens("frame_mean", 2))[0] == gemm + att + stem + 64
    # Without globals at T = 1 it is BLIP's image pass, frozen (the backbone's own count).
    assert dgl_video_flops(CFG, 1, 0, mode="prompts") == vision_flops(CFG, 1)


def test_dgl_train_step_hand_count():
    # B = 2 captions of 5 ids, 1 frame, 1 global (6 video tokens), full mode, queue of 4 with 3 entries, alpha > 0.
    # ITC: keys B + 3 = 5; one product 2*2*5*4 = 80; forward 2 + teacher 2, backward text and video side: 6 * 80.
    # Negatives 4*B*B*E = 64. ITM on 3B = 6 pairs of 5 ids on 6 tokens (full: backward 2x).
    loss = BlipLossConfig(alpha=0.4, queue_size=4, itm_weight=1.0)
    flops = dgl_train_step_flops(CFG, 2, 5, 1, 1, 1, "full", loss, queued=3)
    vf, vb = dgl_video_flops(CFG, 1, 1, 2, 1, "full")
    tf = text_flops(CFG, 2, 5)[0]
    itm = itm_flops(CFG, 6, 5, memory=6)[0]
    assert flops["itc"] == 6 * 80 and flops["itm_negatives"] == 64
    assert flops["total"] == vf + vb + 3 * tf + (vf + tf) + 6 * 80 + 64 + 3 * itm
    # Prompt-only: no text backward, ITC backward on the video side only; no queue or teacher: keys are the batch.
    plain = dgl_train_step_flops(CFG, 2, 5, 1, 1, 1, "prompts", BlipLossConfig(alpha=0, queue_size=0), queued=0)
    assert plain["text_bwd"] == plain["momentum_fwd"] == 0
    assert plain["itc"] == (2 + 2) * (2 * 2 * 2 * 4)  # online keys need gradients: t2v's video, v2t's video


@pytest.mark.parametrize("mode", ["full", "prompts"])
@pytest.mark.parametrize("pooling", ["global_prompt0", "frame_mean"])
def test_dgl_train_step_equals_torch_flop_counter(mode, pooling):
    """One objective forward and backward (ITC with queue and teacher, ITM) against the counter, which sees every
    GEMM and convolution of forward and backward but not the CPU attention kernels."""
    torch.manual_seed(0)
    batch, frames, globals_, words = 3, 2, 2, 5
    model = DGLBlip(BlipRetrieval(CFG), DGLBlipConfig(globals_, pooling, mode))
    loss = BlipLossConfig(alpha=0.4, queue_size=8, itm_weight=1.0)
    objective = DGLBlipObjective(model, loss, enc_id=19, generator=torch.Generator().manual_seed(0))
    ids, mask = torch.randint(1, 19, (batch, words)), torch.ones(batch, words, dtype=torch.long)
    video, video_ids = torch.randn(batch, frames, 3, 8, 8), torch.arange(batch)
    for queued in (0, batch):  # the second step's ITC also reads the first step's queued keys
        with FlopCounterMode(display=False) as counter:
            objective(ids, mask, video, video_ids)["backward"].backward()
        expected = dgl_train_step_flops(CFG, batch, words, frames, globals_, pooled_tokens(pooling, frames), mode,
                                        loss, queued, attention=False)
        assert counter.get_total_flops() == expected["total"]
