"""DGL's shared latent space: one learned source for the text prompts and the frame (local) prompts.

Prompts do not depend on the input, so a generator is called once per forward and its output is
broadcast over the batch (the official code recomputes it for every sample).

Generators are registered by their ``--shared_latent_space`` name in ``PROMPT_GENERATORS``. Each one says how to
build itself from the model sizes, whether its prompts are frame-specific, how its parameters are named in an
official checkpoint, and how to read its sizes back from such a checkpoint.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .clip import Mlp, ResidualAttentionBlock
from .flops import block_flops


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

    frame_specific = True  # built for exactly max_frames frames
    official_marker = "clip.unified_prompt_embedding.weight"  # the key that identifies it in an official checkpoint

    @staticmethod
    def check_config(config) -> None:
        """Any sizes work: the block mixes text_prompt_length + local·T rows."""

    @staticmethod
    def flops(vision_width: int, text_width: int, layers: int, text_prompts: int, local_prompts: int, frames: int,
              attention: bool = True) -> int:
        """Forward FLOPs (models/flops.py's rules): one block over the text and frame prompts per layer, then the
        maps of the text prompts into the text width."""
        n = text_prompts + local_prompts * frames
        mix = block_flops(n, vision_width, n * n if attention else 0)
        return layers * mix + layers * text_prompts * (4 * vision_width * vision_width + 4 * vision_width * text_width)

    @classmethod
    def build(cls, vision_width: int, text_width: int, patch_size: int, layers: int, config) -> "TransformerPromptGenerator":
        return cls(vision_width, text_width, layers, config.text_prompt_length, config.local_prompt_length, config.max_frames)

    def official_names(self) -> dict[str, str]:
        names = {"embedding": "clip.unified_prompt_embedding.weight"}
        names.update({f"block.{key}": f"clip.PromptTransformer.resblocks.0.{key}" for key in self.block.state_dict()})
        names.update({f"text_mlp.{key}": f"clip.unified_prompt_mlp.{key}" for key in self.text_mlp.state_dict()})
        return names

    @staticmethod
    def official_sizes(state: Mapping[str, torch.Tensor], width: int, given: Mapping[str, Any]) -> dict[str, int]:
        """Prompted layers, local prompts and T of an official checkpoint: its table has
        ``text_prompt_length + local·T`` rows (the official code needs local == global)."""
        table = state[TransformerPromptGenerator.official_marker]
        local = given.get("local_prompt_length") or given["global_prompt_length"]
        frames = given.get("max_frames") or (table.shape[0] - given["text_prompt_length"]) // local
        if given["text_prompt_length"] + local * frames != table.shape[0]:
            raise ValueError(
                f"its prompt table has {table.shape[0]} rows, not text_prompt_length + local_prompt_length·max_frames "
                f"= {given['text_prompt_length']} + {local}·{frames}; give text_prompt_length / local_prompt_length / "
                "max_frames (flags --text_prompt_length / --local_each_frame_prompt_length / --max_frames)"
            )
        return {"prompt_layers": table.shape[-1] // width, "local_prompt_length": local, "max_frames": frames}

    def __init__(self, vision_width: int, text_width: int, layers: int, text_prompts: int, local_prompts: int, frames: int):
        super().__init__()
        self.layers, self.text_prompts = layers, text_prompts
        self.frames, self.local_prompts = frames, local_prompts
        self.embedding = nn.Parameter(torch.randn(text_prompts + local_prompts * frames, layers * vision_width))
        self.block = ResidualAttentionBlock(vision_width, vision_width // 64)
        self.text_mlp = Mlp(vision_width, 2 * vision_width, text_width)

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

    frame_specific = False  # one set of local prompts serves any number of frames
    official_marker = "clip.visual_prompt_embedding"

    @staticmethod
    def check_config(config) -> None:
        """Its text prompts are the 2·local projections, of which the first text_prompt_length // 2 go before
        the words: a longer prefix cannot be made."""
        if config.text_prompt_length // 2 > 2 * config.local_prompt_length:
            raise ValueError(
                f"the linear latent space makes 2 x local_prompt_length = {2 * config.local_prompt_length} text prompts, "
                f"fewer than the text_prompt_length // 2 = {config.text_prompt_length // 2} placed before the words; "
                "need text_prompt_length // 2 <= 2 x local_each_frame_prompt_length"
            )

    @staticmethod
    def flops(vision_width: int, text_width: int, layers: int, text_prompts: int, local_prompts: int, frames: int,
              attention: bool = True) -> int:
        """Forward FLOPs: the prefix and postfix maps of the local prompts (same arguments as the transformer's)."""
        return 2 * layers * local_prompts * 2 * vision_width * text_width

    @classmethod
    def build(cls, vision_width: int, text_width: int, patch_size: int, layers: int, config) -> "LinearPromptGenerator":
        return cls(vision_width, text_width, layers, config.local_prompt_length, patch_size)

    def official_names(self) -> dict[str, str]:
        names = {"embedding": "clip.visual_prompt_embedding"}
        for ours, theirs in (("prefix_proj", "prefix_text_prompt_proj_layer"), ("postfix_proj", "postfix_text_prompt_proj_layer")):
            names.update({f"{ours}.{key}": f"clip.{theirs}.{key}" for key in ("weight", "bias")})
        return names

    @staticmethod
    def official_sizes(state: Mapping[str, torch.Tensor], width: int, given: Mapping[str, Any]) -> dict[str, int]:
        table = state[LinearPromptGenerator.official_marker]
        return {"prompt_layers": table.shape[-1] // width,
                "local_prompt_length": given.get("local_prompt_length") or table.shape[-2],
                "max_frames": given.get("max_frames") or 12}

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


PROMPT_GENERATORS: dict[str, type[TransformerPromptGenerator] | type[LinearPromptGenerator]] = {
    "transformer": TransformerPromptGenerator,
    "linear": LinearPromptGenerator,
}
