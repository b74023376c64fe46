"""Attention weights of DGL's global prompts, for visualisation only.

``explicit_encode_video`` runs :meth:`models.dgl.DGL.run_visual`, the loop of ``encode_video``, with the model's own
blocks and weights, but computes every attention as an explicit ``softmax(q·kᵀ/sqrt(d))·v`` instead of the
fused kernel, so the weights of the global-prompt queries can be kept. Training and evaluation never use
this path (it materialises the weights and is slower); a test checks that both give the same features.

Key layout of the returned weights (the model's token order): ``G`` global prompts, then for each frame
``t`` its ``S = 1 + P_local + grid_h·grid_w`` tokens: CLS, local prompts, patches (row-major).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .backbone import PromptableBlock, SplitAttention
from .dgl import DGL, check_output_type
from .prompts import Prompts


@dataclass
class VideoAttention:
    """The video features and the global prompts' attention, per layer."""

    features: torch.Tensor  # as DGL.encode_video: [B, E] ([B, 1 + T, E] for global-local-feature)
    attention: torch.Tensor  # [B, layers, heads, G, G + T·S] float32; each query row sums to 1
    num_global: int  # G
    frames: int  # T
    num_local: int  # local prompts per frame
    grid: tuple[int, int]  # patch grid (rows, cols)

    @property
    def tokens_per_frame(self) -> int:
        return 1 + self.num_local + self.grid[0] * self.grid[1]

    def select(self, layer: int | str = "mean", prompt: int | None = 0) -> torch.Tensor:
        """``[B, G + T·S]`` key weights of global prompt ``prompt`` (``None``: mean over prompts), mean over heads,
        at layer ``layer`` (an index, negative counts from the end) or the mean over layers (``"mean"``)."""
        att = self.attention.mean(dim=2)  # over heads: [B, layers, G, K]
        if layer == "mean":
            att = att.mean(dim=1)
        else:
            layers = att.shape[1]
            if not -layers <= int(layer) < layers:
                raise ValueError(f"layer {layer} out of range: the vision transformer has {layers} layers")
            att = att[:, int(layer)]
        if prompt is None:
            return att.mean(dim=1)
        if not -self.num_global <= prompt < self.num_global:
            raise ValueError(f"prompt {prompt} out of range: the model has {self.num_global} global prompts")
        return att[:, prompt]

    def split(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``[B, G + T·S]`` key weights (from :meth:`select`) into the token groups.

        Returns ``global`` [B, G], ``cls`` [B, T], ``local`` [B, T, P_local], ``patches`` [B, T, rows, cols].
        """
        g, s = self.num_global, self.tokens_per_frame
        frames = weights[:, g:].unflatten(1, (self.frames, s))
        return {
            "global": weights[:, :g],
            "cls": frames[:, :, 0],
            "local": frames[:, :, 1 : 1 + self.num_local],
            "patches": frames[:, :, 1 + self.num_local :].unflatten(2, self.grid),
        }

    def masses(self, layer: int | str = "mean", prompt: int | None = 0) -> dict[str, torch.Tensor]:
        """Attention mass per token group: ``global`` [B], and per frame ``frame`` (all of the frame's tokens),
        ``cls``, ``local``, ``patches`` [B, T]. ``global + frame.sum(-1) == 1``."""
        parts = self.split(self.select(layer, prompt))
        cls, local, patches = parts["cls"], parts["local"].sum(-1), parts["patches"].flatten(2).sum(-1)
        return {"global": parts["global"].sum(-1), "frame": cls + local + patches, "cls": cls, "local": local, "patches": patches}


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., heads, Lq, d]`` queries over ``[..., heads, Lk, d]`` keys: output and float32 weights ``[..., heads, Lq, Lk]``."""
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    weights = scores.softmax(dim=-1)
    return (weights @ v.float()).to(v.dtype), weights


def explicit_global_local_attention(
    attn: SplitAttention, x: torch.Tensor, num_global: int, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`models.dgl.global_local_attention` with explicit softmax; also returns the globals' weights
    ``[B, heads, G, G + T·S]``."""
    batch, length, _ = x.shape
    per_frame = (length - num_global) // frames
    q, k, v = (t.transpose(1, 2) for t in attn.qkv(x))  # [B, heads, L, hd]
    heads, head_dim = q.shape[1], q.shape[3]

    # Global prompts: queries over the whole video.
    out_global, weights = _explicit_attention(q[:, :, :num_global], k, v)

    # Frame tokens: queries over [the video's globals, their own frame].
    def own(t: torch.Tensor) -> torch.Tensor:  # [B, h, L, hd] -> [B, T, h, S, hd]
        return t[:, :, num_global:].unflatten(2, (frames, per_frame)).transpose(1, 2)

    def keys(t: torch.Tensor) -> torch.Tensor:
        shared = t[:, :, :num_global].unsqueeze(1).expand(batch, frames, heads, num_global, head_dim)
        return torch.cat([shared, own(t)], dim=3)

    out_frames, _ = _explicit_attention(own(q), keys(k), keys(v))  # [B, T, h, S, hd]
    out = torch.cat([out_global, out_frames.transpose(1, 2).flatten(2, 3)], dim=2)  # [B, h, L, hd]
    return attn.merge(out.transpose(1, 2)), weights


def explicit_global_local_block(
    block: PromptableBlock, x: torch.Tensor, num_global: int, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    attended, weights = explicit_global_local_attention(block.attn, block.ln_1(x), num_global, frames)
    x = x + attended
    return x + block.mlp(block.ln_2(x)), weights


@torch.no_grad()
def explicit_encode_video(
    model: DGL, video: torch.Tensor, prompts: Prompts | None = None, output_type: str | None = None
) -> VideoAttention:
    """``[B, T, 3, H, W]`` frames -> the features of ``model.encode_video`` and the attention of the global
    prompts at every vision layer (the model's own visual loop, with the explicit block)."""
    output_type = check_output_type(output_type or model.config.visual_output_type)
    layer_weights = []

    def block_fn(block: PromptableBlock, x: torch.Tensor, num_global: int, frames: int) -> torch.Tensor:
        x, weights = explicit_global_local_block(block, x, num_global, frames)
        layer_weights.append(weights)
        return x

    x, per_frame = model.run_visual(video, prompts, block_fn)
    num_global, frames = model.config.global_prompt_length, video.shape[1]
    rows = cols = model.clip.config.grid_size
    patches = rows * cols
    return VideoAttention(
        features=model._pool(model.clip, x, num_global, per_frame, output_type),
        attention=torch.stack(layer_weights, dim=1),
        num_global=num_global,
        frames=frames,
        num_local=per_frame - 1 - patches,
        grid=(rows, cols),
    )
