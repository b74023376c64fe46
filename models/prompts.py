"""DGL's shared latent space: one learned source for the text prompts and the frame (local) prompts.

Prompts do not depend on the input, so a generator is called once per forward and its output is
broadcast over the batch (the official code recomputes it for every sample).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from .clip import QuickGELU, ResidualAttentionBlock


class Prompts(NamedTuple):
    text: torch.Tensor  # [layers, P_text, text_width]; the first text_prompt_length // 2 go before the words
    local: torch.Tensor  # [layers, frames or 1, P_local, vision_width]; frame t uses local[:, t] (or local[:, 0])


def uniform_prompt_init_(tensor: torch.Tensor, patch_size: int, width: int) -> torch.Tensor:
    """VPT's Xavier-style bound sqrt(6 / (3·p² + width)), as the official code initialises its prompts."""
    bound = math.sqrt(6.0 / (3 * patch_size * patch_size + width))
    return nn.init.uniform_(tensor, -bound, bound)


class TransformerPromptGenerator(nn.Module):
    """``--shared_latent_space transformer``: one transformer block mixes, per layer, the text prompts and
    the frame-specific local prompts; the text tokens then go through an MLP into the text width."""

    def __init__(self, vision_width: int, text_width: int, layers: int, text_prompts: int, local_prompts: int, frames: int):
        super().__init__()
        self.layers, self.text_prompts = layers, text_prompts
        self.frames, self.local_prompts = frames, local_prompts
        self.embedding = nn.Parameter(torch.randn(text_prompts + local_prompts * frames, layers * vision_width))
        self.block = ResidualAttentionBlock(vision_width, vision_width // 64)
        self.text_mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(vision_width, 2 * vision_width),
                gelu=QuickGELU(),
                c_proj=nn.Linear(2 * vision_width, text_width),
            )
        )

    def forward(self) -> Prompts:
        # Row r of the table holds, for every layer l, a width-D chunk; the layers form the batch.
        per_layer = self.embedding.unflatten(1, (self.layers, -1)).transpose(0, 1)  # [layers, P, D]
        mixed = self.block(per_layer)
        text = self.text_mlp(mixed[:, : self.text_prompts])
        local = mixed[:, self.text_prompts :].unflatten(1, (self.frames, self.local_prompts))
        return Prompts(text, local)


class LinearPromptGenerator(nn.Module):
    """``--shared_latent_space linear``: the same local prompts for every frame, and text prompts that are two
    linear maps (prefix, postfix) of them."""

    def __init__(self, vision_width: int, text_width: int, layers: int, local_prompts: int, patch_size: int):
        super().__init__()
        self.layers = layers
        self.embedding = nn.Parameter(uniform_prompt_init_(torch.empty(local_prompts, layers * vision_width), patch_size, vision_width))
        self.prefix_proj = nn.Linear(vision_width, text_width)
        self.postfix_proj = nn.Linear(vision_width, text_width)

    def forward(self) -> Prompts:
        local = self.embedding.unflatten(1, (self.layers, -1)).transpose(0, 1)  # [layers, P_local, D]
        text = torch.cat([self.prefix_proj(local), self.postfix_proj(local)], dim=1)
        return Prompts(text, local.unsqueeze(1))
