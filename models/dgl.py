"""DGL: a frozen two-tower backbone (OpenAI CLIP, or any `models.backbone.Backbone`) with deep text prompts,
frame-specific local prompts and global video prompts.

What differs between backbones (text pooling, causal text attention, where the CLS token sits, which towers take
prompts) is asked of the backbone's ``traits``; the vision tower must be a ViT of pre-LN blocks, on which the
global-local attention below runs for every backbone. Token layout per video (CLS first, as in CLIP): ``G``
global prompts, then ``T`` frames of ``S = 1 + P_local + grid²`` tokens (CLS, local prompts, patches),
frame-major. Global-local attention (paper Fig. 3) runs as two fused
attention calls per block: the frames as ``B·T`` sequences of ``S`` queries over ``G + S`` keys (the video's
globals plus their own frame), and the globals as ``B`` sequences of ``G`` queries over the whole video.
This equals one masked attention over the ``G + T·S`` tokens at ~1/T of its cost.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .backbone import DEFAULT_BACKBONE, Backbone, PromptableBlock, SplitAttention, backbone_fingerprint
from .losses import cosine_logits
from .prompts import PROMPT_GENERATORS, Prompts, uniform_prompt_init_

SHARED_LATENT_SPACES = tuple(PROMPT_GENERATORS)
POOLED_OUTPUT_TYPES = (
    "global_prompt0",
    "average_global_prompt",
    "average_frame_cls_token",
    "average_global_prompt_and_frame_cls_token",
)
# ``global-local-feature`` returns [B, 1 + T, E] token features for analysis; it has no similarity
# (the official similarity crashes on it), so it cannot be the model's training/eval output type.
VISUAL_OUTPUT_TYPES = POOLED_OUTPUT_TYPES + ("global-local-feature",)
# --model: "dgl" (this module's DGL, any backbone) or "dgl_blip" (models/blip/dgl_model.py: BLIP with global
# prompts and global-local attention only, trained with BLIP's ITC + ITM); models.factory.MODELS builds each.
MODELS = ("dgl", "dgl_blip")
DGL_BLIP_POOLINGS = ("global_prompt0", "average_frame_cls_token")  # DGL's rule; tokenmix's frame mean


@dataclass
class DGLConfig:
    """DGL's own sizes and the backbone it prompts. Defaults are the official scripts' (names shortened from the
    official flags)."""

    shared_latent_space: str = "transformer"
    max_frames: int = 12  # T; sizes the transformer variant's frame-specific prompt table
    text_prompt_length: int = 8  # --text_prompt_length; half before the words, half after
    local_prompt_length: int = 4  # --local_each_frame_prompt_length
    global_prompt_length: int = 4  # --global_visual_prompt_length
    prompt_layers: int | None = None  # --unified_transformer_layers; None: every layer (`resolve_prompt_layers`)
    visual_output_type: str = "global_prompt0"
    backbone: str = DEFAULT_BACKBONE  # --backbone: a name in models.backbones.BACKBONES
    model: str = "dgl"  # --model: a name in MODELS
    train_backbone: bool = False  # --freeze_clip 0: the backbone trains too (its tensors are then in checkpoints)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {MODELS}, got {self.model!r}")
        if self.model == "dgl_blip":
            if self.backbone != "blip":
                raise ValueError(f"--model dgl_blip runs on BLIP: pass --backbone blip (given: {self.backbone!r})")
            if self.visual_output_type not in DGL_BLIP_POOLINGS:
                raise ValueError(f"--model dgl_blip pools with --visual_output_type {' or '.join(DGL_BLIP_POOLINGS)}, "
                                 f"got {self.visual_output_type!r}")
        if self.shared_latent_space not in SHARED_LATENT_SPACES:
            raise ValueError(f"shared_latent_space must be one of {SHARED_LATENT_SPACES}, got {self.shared_latent_space!r}")
        if self.visual_output_type not in POOLED_OUTPUT_TYPES:
            raise ValueError(
                f"visual_output_type must be one of {POOLED_OUTPUT_TYPES}, got {self.visual_output_type!r} "
                "('global-local-feature' has no similarity; use encode_video(..., output_type=...) to get its tokens)"
            )
        for name in ("max_frames", "text_prompt_length", "local_prompt_length", "global_prompt_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.model == "dgl":  # DGL-BLIP has no shared latent space: its generator's sizes do not apply
            PROMPT_GENERATORS[self.shared_latent_space].check_config(self)

    @property
    def label(self) -> str:
        """The name its metrics are reported under."""
        return "DGL-BLIP" if self.model == "dgl_blip" else f"DGL-{self.shared_latent_space}"

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_prompt_layers(requested: int | None, vision_depth: int, text_depth: int) -> int:
    """How many layers get prompts: ``requested`` (--unified_transformer_layers), else every layer both towers have.

    DGL prompts every layer; the official default of 12 is the depth of ViT-B's towers. One count serves both
    towers, so the default is the shallower depth: 12 for ViT-B and for ViT-L (24 vision, 12 text layers).
    """
    deepest = min(vision_depth, text_depth)
    if requested is None:
        return deepest
    if not 1 <= requested <= deepest:
        raise ValueError(
            f"--unified_transformer_layers {requested} (prompt_layers) must lie in 1..{deepest}: this CLIP has "
            f"{vision_depth} vision and {text_depth} text layers and one count prompts both; omit the flag to prompt "
            f"all {deepest}"
        )
    return requested


def frame_rows(x: torch.Tensor, num_global: int, frames: int, rows: int) -> torch.Tensor:
    """``[B, G + T·S, D]`` -> ``[B, G + T·rows, D]``: the globals and the first ``rows`` tokens of every frame."""
    per_frame = x[:, num_global:].unflatten(1, (frames, -1))[:, :, :rows]
    return torch.cat([x[:, :num_global], per_frame.flatten(1, 2)], dim=1)


def global_local_attention(
    attn: SplitAttention, x: torch.Tensor, num_global: int, frames: int, queries_per_frame: int | None = None
) -> torch.Tensor:
    """Attention of ``x = [globals, frame-major frame tokens]`` (``[B, G + T·S, D]``, already normed).

    ``queries_per_frame``: only the globals and the first this-many tokens of each frame ask (keys and values
    still come from every token), giving ``[B, G + T·queries_per_frame, D]``; default: every token asks.
    """
    batch, length, _ = x.shape
    tokens_per_frame = (length - num_global) // frames
    asking = tokens_per_frame if queries_per_frame is None else queries_per_frame
    if asking == tokens_per_frame:
        q, k, v = attn.qkv(x)  # [B, L, heads, head_dim] each
    else:
        q, (k, v) = attn.query(frame_rows(x, num_global, frames, asking)), attn.key_value(x)
    heads, head_dim = q.shape[-2:]

    # Global prompts see the whole video.
    out_global = F.scaled_dot_product_attention(q[:, :num_global].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

    # Frame tokens see the video's global prompts and their own frame.
    def frame_keys(t: torch.Tensor) -> torch.Tensor:  # [B, L, h, hd] -> [B·T, h, G + S, hd]
        shared = t[:, :num_global].unsqueeze(1).expand(batch, frames, num_global, heads, head_dim)
        own = t[:, num_global:].unflatten(1, (frames, tokens_per_frame))
        return torch.cat([shared, own], dim=2).flatten(0, 1).transpose(1, 2)

    frame_queries = q[:, num_global:].unflatten(1, (frames, asking)).flatten(0, 1).transpose(1, 2)
    out_frames = F.scaled_dot_product_attention(frame_queries, frame_keys(k), frame_keys(v))
    out = torch.cat(
        [out_global.transpose(1, 2), out_frames.transpose(1, 2).reshape(batch, -1, heads, head_dim)], dim=1
    )
    return attn.merge(out)


def global_local_block(
    block: PromptableBlock, x: torch.Tensor, num_global: int, frames: int, queries_per_frame: int | None = None
) -> torch.Tensor:
    """One frozen block with global-local attention; with ``queries_per_frame`` only the rows that ask come out."""
    attended = global_local_attention(block.attn, block.ln_1(x), num_global, frames, queries_per_frame)
    if queries_per_frame is not None:
        x = frame_rows(x, num_global, frames, queries_per_frame)
    x = x + attended
    return x + block.mlp(block.ln_2(x))


def check_output_type(output_type: str) -> str:
    if output_type not in VISUAL_OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {VISUAL_OUTPUT_TYPES}, got {output_type!r}")
    return output_type


class DGL(nn.Module):
    """The DGL retrieval model. Only the prompt generator and the global prompts train (and, with
    ``config.train_backbone``, the backbone: models.factory.create_model sets it)."""

    objective = "contrastive"  # its training objective, a name in models.objectives.OBJECTIVES

    def __init__(self, clip: Backbone, config: DGLConfig):
        super().__init__()
        cfg, ccfg = config, clip.config
        if not clip.traits.global_prompts:
            raise ValueError(f"backbone {cfg.backbone!r}: DGL's global prompts need a ViT vision tower of pre-LN blocks")
        layers = resolve_prompt_layers(cfg.prompt_layers, ccfg.vision_layers, ccfg.text_layers)
        self.config, self.prompt_layers = cfg, layers
        self.clip = clip.requires_grad_(False)
        # What our checkpoints identify the backbone by: the weights the model was built on, so that a checkpoint
        # of a fine-tuned backbone (--freeze_clip 0) still names the file it started from.
        self.backbone_fingerprint = backbone_fingerprint(clip)
        width = ccfg.vision_width
        self.global_prompts = nn.Parameter(
            uniform_prompt_init_(torch.empty(cfg.global_prompt_length, width), ccfg.vision_patch_size, width)
        )
        self.prompt_generator = PROMPT_GENERATORS[cfg.shared_latent_space].build(
            width, ccfg.text_width, ccfg.vision_patch_size, layers, cfg
        )
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the frozen blocks in backward instead of storing their activations."""
        self.grad_checkpointing = enable

    def train(self, mode: bool = True) -> "DGL":
        super().train(mode)
        self.clip.eval()  # frozen: CLIP has no dropout/BN, but keep its mode fixed whatever the caller does
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def prompts(self) -> Prompts:
        return self.prompt_generator()

    def _block(self, fn: Callable, *args, **kwargs) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return fn(*args, **kwargs)

    # ----------------------------------------------------------------------------------------- text
    def encode_text(self, input_ids: torch.Tensor, prompts: Prompts | None = None) -> torch.Tensor:
        """``[N, L]`` token ids (SOT ... EOT, zero padded) -> ``[N, E]`` features (not normalised).

        Sequence: SOT, prefix prompts, words; the feature is read at the shifted EOT. The official model also
        appends postfix prompts, and keeps positions up to the context length, but under the causal mask
        nothing after the batch's last EOT can reach an EOT row: leaving them out gives the same features and
        the same gradients (the postfix prompts' are exactly zero either way, as the generator still makes
        them) for fewer tokens. Ids on an accelerator are taken as given (finding the last EOT there would
        make the host wait): callers trim them on the host first (`dataloaders.collate_trimmed`).

        Other backbones (``self.clip.traits``): without text prompts the words go alone; bidirectional text
        attention sees the words and prompts, not the padding; CLS pooling reads position 0.
        """
        traits = self.clip.traits
        text_prompts = (prompts or self.prompts()).text
        prefix_len = self.config.text_prompt_length // 2 if traits.text_prompts else 0
        ends = self.clip.text_end(input_ids)
        if input_ids.device.type == "cpu":  # reading is free here; on a GPU it would wait for the queue
            input_ids = input_ids[:, : int(ends.max()) + 1]
        words = self.clip.embed_text(input_ids)
        n = words.shape[0]
        prefix = text_prompts[:, :prefix_len].to(words.dtype)
        x = torch.cat([words[:, :1], prefix[0].expand(n, -1, -1), words[:, 1:]], dim=1)
        ends = ends + prefix_len
        seen = None  # bidirectional attention must not see the padding: keys up to each caption's end
        if not traits.causal_text:
            seen = (torch.arange(x.shape[1], device=x.device) <= ends.unsqueeze(1))[:, None, None, :]
        for i, block in enumerate(self.clip.text_blocks):
            if prefix_len and 0 < i < self.prompt_layers:  # deep prompts: layer i's prompts replace the carried ones
                x[:, 1 : 1 + prefix_len] = prefix[i]
            x = self._block(block, x, is_causal=traits.causal_text, attn_mask=seen)
        pooled = x[torch.arange(n, device=x.device), ends] if traits.text_pooling == "eot" else x[:, 0]
        return self.clip.project_text(pooled)

    # ---------------------------------------------------------------------------------------- video
    def encode_video(
        self, video: torch.Tensor, prompts: Prompts | None = None, output_type: str | None = None
    ) -> torch.Tensor:
        """``[B, T, 3, H, W]`` frames -> ``[B, E]`` (``[B, 1 + T, E]`` for global-local-feature)."""
        output_type = check_output_type(output_type or self.config.visual_output_type)
        x, per_frame = self.run_visual(video, prompts, global_local_block, pooled_rows_only=True)
        return self._pool(self.clip, x, self.config.global_prompt_length, per_frame, output_type)

    def run_visual(
        self, video: torch.Tensor, prompts: Prompts | None, block_fn: Callable, pooled_rows_only: bool = False
    ) -> tuple[torch.Tensor, int]:
        """The prompted vision transformer: returns the last hidden states ``[B, G + T·S, D]`` and ``S``.

        ``block_fn(block, x, num_global, frames) -> x`` runs one block; the fused ``global_local_block`` here,
        an explicit-softmax twin in ``models.attention_maps`` that also records the attention weights.
        ``pooled_rows_only``: the last block computes only the rows any pooling reads, the globals and the frame
        CLS tokens (``block_fn(..., queries_per_frame=cls index + 1)``), and ``[B, G + T, D]`` with ``S = 1`` comes
        back (CLS first):
        for ViT-B/32 at T=12 that skips 628 of 652 rows of the last block's MLP and projections.
        """
        local = (prompts or self.prompts()).local  # [layers, T or 1, P_local, D]
        batch, frames = video.shape[:2]
        if self.prompt_generator.frame_specific and frames != self.config.max_frames:
            raise ValueError(
                f"video has {frames} frames but this {self.config.shared_latent_space} model was built for "
                f"max_frames={self.config.max_frames} (its prompts are frame-specific): sample {self.config.max_frames} frames"
            )
        tokens = self.clip.embed_frames(video.flatten(0, 1)).unflatten(0, (batch, frames))  # [B, T, 1 + grid², D]
        traits = self.clip.traits
        head = traits.vision_cls_index + 1  # tokens up to the CLS stay ahead of the local prompts
        num_local, num_global = local.shape[2] if traits.frame_prompts else 0, self.config.global_prompt_length
        local = local[:, :, :num_local].to(tokens.dtype)
        frame_tokens = torch.cat(
            [tokens[:, :, :head], local[0].expand(batch, frames, -1, -1), tokens[:, :, head:]], dim=2
        )
        per_frame = frame_tokens.shape[2]
        x = torch.cat(
            [self.global_prompts.to(tokens.dtype).expand(batch, -1, -1), frame_tokens.flatten(1, 2)], dim=1
        )
        blocks = self.clip.vision_blocks
        for i, block in enumerate(blocks):
            if num_local and 0 < i < self.prompt_layers:  # deep prompts: local prompts are replaced, globals carry on
                x[:, num_global:].unflatten(1, (frames, per_frame))[:, :, head : head + num_local] = local[i]
            if pooled_rows_only and i == len(blocks) - 1:
                return self._block(block_fn, block, x, num_global, frames, queries_per_frame=head), head
            x = self._block(block_fn, block, x, num_global, frames)
        return x, per_frame

    @staticmethod
    def _pool(backbone: Backbone, x: torch.Tensor, num_global: int, per_frame: int, output_type: str):
        frame_cls = x[:, num_global + backbone.traits.vision_cls_index :: per_frame]  # [B, T, D]
        if output_type == "global-local-feature":
            return backbone.project_frames(torch.cat([x[:, :1], frame_cls], dim=1))
        chosen = {
            "global_prompt0": lambda: x[:, :1],
            "average_global_prompt": lambda: x[:, :num_global],
            "average_frame_cls_token": lambda: frame_cls,
            "average_global_prompt_and_frame_cls_token": lambda: torch.cat([x[:, :num_global], frame_cls], dim=1),
        }[output_type]()
        return backbone.project_frames(chosen).mean(dim=1)

    # ---------------------------------------------------------------------------------- similarity
    def logits(self, text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
        """CLIP's frozen temperature (the stored value, never a hard-coded 100) times the cosine similarity."""
        return cosine_logits(self.clip.logit_scale, text_features, video_features)

    def forward(self, input_ids: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text and video features of a batch of pairs, sharing one prompt computation."""
        prompts = self.prompts()
        return self.encode_text(input_ids, prompts), self.encode_video(video, prompts)
