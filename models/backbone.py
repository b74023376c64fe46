"""The interface a frozen two-tower backbone offers DGL: what DGL asks instead of assuming OpenAI CLIP.

Backbones differ in how the text tower pools (the end-of-text token or a CLS token), whether text attention is
causal, where the vision CLS token sits and which towers take prompts; `Traits` says which, and ``models/dgl.py``
reads it. What DGL needs of every backbone is a ViT vision tower of pre-LN blocks (`PromptableBlock`): its
global prompts and global-local attention run on those blocks through one function for all backbones. The
registry of backbones by name is ``models/backbones.py``; this module holds only the interface, free of any
backbone's libraries, so that ``models/dgl.py`` can read it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

DEFAULT_BACKBONE = "openai-clip"  # official DGL checkpoints, and ours written before the name was recorded
TEXT_POOLINGS = ("eot", "cls")


@dataclass(frozen=True)
class Traits:
    """What differs between backbones, as DGL sees it."""

    text_pooling: Literal["eot", "cls"]  # "eot": the feature at each caption's last token (``text_end``); "cls": position 0
    causal_text: bool  # causal text attention (CLIP); bidirectional (BERT) gets a key mask hiding the padding
    vision_cls_index: int  # where the CLS token sits among ``embed_frames``' tokens; frame prompts follow it
    text_prompts: bool  # the text tower takes DGL's text prompts (inserted after position 0)
    frame_prompts: bool  # the vision tower takes DGL's per-frame (local) prompts
    global_prompts: bool  # the vision tower is a ViT of `PromptableBlock`s, so global prompts and global-local attention run

    def __post_init__(self):
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLINGS}, got {self.text_pooling!r}")
        if self.vision_cls_index < 0:
            raise ValueError(f"vision_cls_index must be >= 0, got {self.vision_cls_index}")


class SplitAttention(Protocol):
    """Self-attention with its projections callable apart, so a caller can choose which tokens ask and see."""

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...  # -> 3 x [..., L, heads, hd]

    def query(self, x: torch.Tensor) -> torch.Tensor: ...  # [..., L, D] -> [..., L, heads, hd]

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def merge(self, heads_out: torch.Tensor) -> torch.Tensor: ...  # [..., L, heads, hd] -> output projection [..., L, D]


class PromptableBlock(Protocol):
    """A pre-LN ViT block: ``x += attn(ln_1(x)); x += mlp(ln_2(x))``."""

    ln_1: nn.Module
    attn: SplitAttention
    ln_2: nn.Module
    mlp: nn.Module


class Backbone(Protocol):
    """What DGL uses of a frozen two-tower backbone."""

    traits: Traits
    config: object  # a dataclass with vision_width, vision_layers, vision_patch_size, grid_size, image_resolution,
    #                 text_width, text_layers, embed_dim (read by DGL, the FLOP counts and the loaders)
    fingerprint_keys: tuple[str, ...]  # state-dict entries whose hash identifies the weights (checkpoints, indexes)
    logit_scale: nn.Parameter  # the frozen temperature (log scale)
    text_blocks: nn.ModuleList  # ``block(x, is_causal=..., attn_mask=...)``; attn_mask: bool [N, 1, 1, L], True = seen
    vision_blocks: nn.ModuleList  # of `PromptableBlock`

    def text_end(self, input_ids: torch.Tensor) -> torch.Tensor: ...  # [N, L] ids -> [N] position of each last token

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor: ...  # [N, L] -> [N, L, text width]

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor: ...  # [..., text width] -> [..., embed]

    def embed_frames(self, images: torch.Tensor) -> torch.Tensor: ...  # [N, 3, H, W] -> [N, tokens, width]

    def project_frames(self, tokens: torch.Tensor) -> torch.Tensor: ...  # [..., width] -> [..., embed]

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor: ...  # unprompted features (meanP baseline)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...


def backbone_fingerprint(clip: Backbone) -> str:
    """A short hash of the frozen weights (its ``fingerprint_keys``): identifies the backbone without hashing
    150 M parameters."""
    h = hashlib.sha256()
    state = clip.state_dict()
    for name in clip.fingerprint_keys:
        h.update(state[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
