"""Reference formulation of the visual global-local attention, timed by ``--naive`` and checked by the tests.

One block-masked attention over all G + T·S tokens of a video, reusing the model's frozen blocks: it costs
O((G + T·S)²) attention per video instead of the model's O(T·S·(G + S) + G·(G + T·S)), so its rows show what
the model's factored attention saves at the same useful-FLOP count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.clip import ResidualAttentionBlock
from models.dgl import DGL
from models.prompts import Prompts


def global_local_mask(num_global: int, frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """``[L, L]`` bool (True = may attend): globals see all; frame tokens see the globals and their own frame."""
    length = num_global + frames * tokens_per_frame
    frame_of = torch.arange(frames * tokens_per_frame, device=device) // tokens_per_frame
    mask = torch.ones(length, length, dtype=torch.bool, device=device)
    mask[num_global:, num_global:] = frame_of[:, None] == frame_of[None, :]
    return mask


def naive_global_local_block(block: ResidualAttentionBlock, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The block with one masked attention over the whole video sequence (same frozen weights)."""
    q, k, v = (t.transpose(1, 2) for t in block.attn.qkv(block.ln_1(x)))  # [B, heads, L, head_dim]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + block.attn.merge(out.transpose(1, 2))
    return x + block.mlp(block.ln_2(x))


def naive_encode_video(model: DGL, video: torch.Tensor, prompts: Prompts | None = None,
                       output_type: str | None = None) -> torch.Tensor:
    """Reference for ``model.encode_video``: the global-local attention as one block-masked attention."""
    output_type = output_type or model.config.visual_output_type
    local = (prompts or model.prompts()).local  # [layers, T or 1, P_local, D]
    visual = model.clip.visual
    batch, frames = video.shape[:2]
    tokens = visual.embed(video.flatten(0, 1)).unflatten(0, (batch, frames))  # [B, T, 1 + grid², D]
    local = local.to(tokens.dtype).expand(-1, frames, -1, -1)
    num_global, num_local = model.config.global_prompt_length, local.shape[2]
    per_frame = tokens.shape[2] + num_local

    def with_local(frame_tokens: torch.Tensor, layer: int) -> torch.Tensor:  # [B, T, S', D] -> [B, T, S, D]
        prompts_i = local[layer].expand(batch, -1, -1, -1)
        return torch.cat([frame_tokens[:, :, :1], prompts_i, frame_tokens[:, :, -(per_frame - 1 - num_local):]], dim=2)

    x = torch.cat([model.global_prompts.to(tokens.dtype).expand(batch, -1, -1),
                   with_local(tokens, 0).flatten(1, 2)], dim=1)
    mask = global_local_mask(num_global, frames, per_frame, device=x.device)
    for i, block in enumerate(visual.transformer.resblocks):
        if 0 < i < model.prompt_layers:
            frame_part = with_local(x[:, num_global:].unflatten(1, (frames, per_frame)), i)
            x = torch.cat([x[:, :num_global], frame_part.flatten(1, 2)], dim=1)
        if model.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(naive_global_local_block, block, x, mask, use_reentrant=False)
        else:
            x = naive_global_local_block(block, x, mask)
    return DGL._pool(model.clip, x, num_global, per_frame, output_type)  # the model's own pooling


class NaiveNet(nn.Module):
    """DGL's forward with the reference video encoder: what the trainer's step runs for ``train_step_naive``."""

    def __init__(self, model: DGL):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = self.model.prompts()
        return self.model.encode_text(input_ids, prompts), naive_encode_video(self.model, video, prompts)
