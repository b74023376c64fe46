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

Work that does not depend on the input is done once per batch, and rows nobody reads are not computed: local
prompts that the next layer replaces are keys and values only, and the causal text tower's SOT and prefix prompts
(which see only each other) run once for all captions. ``tests/test_exact_savings.py`` checks both against every
row computed.
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

    @property
    def frame_specific_prompts(self) -> bool:
        """Whether the generator makes one set of local prompts per frame (else one set for every frame)."""
        return PROMPT_GENERATORS[self.shared_latent_space].frame_specific

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
    attn: SplitAttention, x: torch.Tensor, num_global: int, frames: int, queries_per_frame: int | None = None,
    fixed: tuple[torch.Tensor, torch.Tensor] | None = None, fixed_at: int = 1,
) -> torch.Tensor:
    """Attention of ``x = [globals, frame-major frame tokens]`` (``[B, G + T·S, D]``, already normed).

    ``queries_per_frame``: only the globals and the first this-many tokens of each frame ask (keys and values
    still come from every token), giving ``[B, G + T·queries_per_frame, D]``; default: every token asks.
    ``fixed``: keys and values ``[T or 1, P, heads, head_dim]`` of tokens that are the same in every video and
    whose outputs nobody reads (this layer's local prompts): they answer at frame position ``fixed_at`` but
    ask nothing, and ``x`` holds the frames without them.
    """
    batch, length, _ = x.shape
    tokens_per_frame = (length - num_global) // frames
    asking = tokens_per_frame if queries_per_frame is None else queries_per_frame
    if asking == tokens_per_frame:
        q, k, v = attn.qkv(x)  # [B, L, heads, head_dim] each
    else:
        q, (k, v) = attn.query(frame_rows(x, num_global, frames, asking)), attn.key_value(x)
    heads, head_dim = q.shape[-2:]

    def own_frames(t: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:  # -> [B, T, S (+ P), h, hd]
        own = t[:, num_global:].unflatten(1, (frames, tokens_per_frame))
        if shared is None:
            return own
        shared = shared.expand(batch, frames, -1, -1, -1)
        return torch.cat([own[:, :, :fixed_at], shared, own[:, :, fixed_at:]], dim=2)

    shared_k, shared_v = (None, None) if fixed is None else fixed
    k_frames, v_frames = own_frames(k, shared_k), own_frames(v, shared_v)
    if fixed is not None:
        k, v = (torch.cat([t[:, :num_global], f.flatten(1, 2)], dim=1) for t, f in ((k, k_frames), (v, v_frames)))

    # Global prompts see the whole video.
    out_global = F.scaled_dot_product_attention(q[:, :num_global].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

    # Frame tokens see the video's global prompts and their own frame.
    def frame_keys(t: torch.Tensor, per_frame: torch.Tensor) -> torch.Tensor:  # -> [B·T, h, G + S, hd]
        shared = t[:, :num_global].unsqueeze(1).expand(batch, frames, num_global, heads, head_dim)
        return torch.cat([shared, per_frame], dim=2).flatten(0, 1).transpose(1, 2)

    frame_queries = q[:, num_global:].unflatten(1, (frames, asking)).flatten(0, 1).transpose(1, 2)
    out_frames = F.scaled_dot_product_attention(frame_queries, frame_keys(k, k_frames), frame_keys(v, v_frames))
    out = torch.cat(
        [out_global.transpose(1, 2), out_frames.transpose(1, 2).reshape(batch, -1, heads, head_dim)], dim=1
    )
    return attn.merge(out)


def global_local_block(
    block: PromptableBlock, x: torch.Tensor, num_global: int, frames: int, queries_per_frame: int | None = None,
    fixed: torch.Tensor | None = None, fixed_at: int = 1,
) -> torch.Tensor:
    """One frozen block with global-local attention; with ``queries_per_frame`` only the rows that ask come out.

    ``fixed`` ``[T or 1, P, D]``: tokens shared by every video whose outputs are discarded (local prompts that the
    next layer replaces): their keys and values are computed once for the batch and inserted at frame position
    ``fixed_at``; no query, attention output or MLP row is computed for them.
    """
    fixed_kv = None if fixed is None else block.attn.key_value(block.ln_1(fixed))
    attended = global_local_attention(block.attn, block.ln_1(x), num_global, frames, queries_per_frame, fixed_kv, fixed_at)
    if queries_per_frame is not None:
        x = frame_rows(x, num_global, frames, queries_per_frame)
    x = x + attended
    return x + block.mlp(block.ln_2(x))


def causal_head_block(
    block: PromptableBlock, words: torch.Tensor, head: torch.Tensor, head_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One causal text block over ``[head, words]`` where the head ``[1, H, D]`` (SOT and prefix prompts) is the
    same for every caption: it cannot see the words, so it runs once for the batch.

    The words ``[N, W, D]`` ask over the head's keys and their own (causally); only the first ``head_rows`` head
    rows ask and come out (0: none is read again).
    """
    attn, size = block.attn, head.shape[1]
    normed = block.ln_1(head)
    k_head, v_head = attn.key_value(normed)  # [1, H, heads, hd]
    q, k, v = attn.qkv(block.ln_1(words))
    n, w = words.shape[:2]
    sees = torch.arange(size + w, device=words.device) <= torch.arange(size, size + w, device=words.device)[:, None]
    k, v = (torch.cat([h.expand(n, -1, -1, -1), t], dim=1).transpose(1, 2) for h, t in ((k_head, k), (v_head, v)))
    words = words + attn.merge(F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=sees).transpose(1, 2))
    words = words + block.mlp(block.ln_2(words))
    if not head_rows:
        return words, head[:, :0]
    q_head = attn.query(normed[:, :head_rows]).transpose(1, 2)
    k_seen, v_seen = (t[:, :head_rows].transpose(1, 2) for t in (k_head, v_head))  # causal: rows see no later keys
    out = F.scaled_dot_product_attention(q_head, k_seen, v_seen, is_causal=True)
    head = head[:, :head_rows] + attn.merge(out.transpose(1, 2))
    return words, head + block.mlp(block.ln_2(head))


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
        them) for fewer tokens. Causal text runs SOT and the prefix prompts once for the batch (`_causal_text`):
        every caption starts with the same SOT id. Ids on an accelerator are taken as given (finding the last EOT
        there would make the host wait): callers trim them on the host first (`dataloaders.collate_trimmed`).

        Other backbones (``self.clip.traits``): without text prompts the words go alone; bidirectional text
        attention sees the words and prompts, not the padding; CLS pooling reads position 0.
        """
        traits = self.clip.traits
        text_prompts = (prompts or self.prompts()).text
        prefix_len = self.config.text_prompt_length // 2 if traits.text_prompts else 0
        ends = self.clip.text_end(input_ids)
        if input_ids.device.type == "cpu":  # reading is free here; on a GPU it would wait for the queue
            input_ids = input_ids[:, : int(ends.max()) + 1]
            if traits.causal_text and not bool((input_ids[:, 0] == input_ids[0, 0]).all()):
                raise ValueError("captions must all start with the start-of-text id (as the tokenizer writes them): "
                                 f"first ids {sorted(set(input_ids[:, 0].tolist()))[:4]} differ")
        words = self.clip.embed_text(input_ids)
        n = words.shape[0]
        prefix = text_prompts[:, :prefix_len].to(words.dtype)
        if traits.causal_text and traits.text_pooling == "eot":
            return self.clip.project_text(self._causal_text(words, prefix, ends))
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

    def _causal_text(self, words: torch.Tensor, prefix: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """The rows at the ends (EOT) of ``[SOT, prefix prompts, words]`` through the causal text tower.

        SOT and the prefix prompts see only each other, so they are the same for every caption: they run once
        for the batch (`causal_head_block`), and only as far as they are read: not the prefix rows that the next
        layer replaces, nothing after the last layer.
        """
        blocks, prefix_len = self.clip.text_blocks, prefix.shape[1]
        head, words = words[:1, :1], words[:, 1:]
        for i, block in enumerate(blocks):
            if i < self.prompt_layers:  # deep prompts: layer i's prompts replace the carried ones
                head = torch.cat([head[:, :1], prefix[i : i + 1]], dim=1)
            replaced_next = i + 1 < self.prompt_layers
            head_rows = 0 if i == len(blocks) - 1 else 1 if replaced_next else 1 + prefix_len
            words, head = self._block(causal_head_block, block, words, head, head_rows)
        return words[torch.arange(words.shape[0], device=words.device), ends - 1]

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
        an explicit-softmax twin in ``models.attention_maps`` that also records the attention weights (and needs
        every row of every layer).
        ``pooled_rows_only``: compute only what pooling reads, with ``global_local_block``. The last block computes
        only the globals and the frame CLS tokens (``queries_per_frame=cls index + 1``), and ``[B, G + T, D]`` with
        ``S = 1`` comes back (CLS first): for ViT-B/32 at T=12 that skips 628 of 652 rows of the last block's MLP
        and projections. Local prompts whose outputs the next layer replaces (or nobody reads after the last)
        are keys and values only, computed once for the batch (``fixed=``): 48 of 652 rows per layer.
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
        blocks = self.clip.vision_blocks
        # Layers before `as_rows` take their local prompts as keys and values only: all of them when the last
        # layer is prompted (its prompts are unread), else up to the last prompted layer, whose prompts carry on.
        as_rows = 0
        if num_local and pooled_rows_only:
            as_rows = len(blocks) if self.prompt_layers == len(blocks) else self.prompt_layers - 1
        x = torch.cat([self.global_prompts.to(tokens.dtype).expand(batch, -1, -1), tokens.flatten(1, 2)], dim=1)
        per_frame = tokens.shape[2]
        for i, block in enumerate(blocks):
            fixed = {}
            if num_local and i < self.prompt_layers:  # deep prompts: local prompts are replaced, globals carry on
                if i < as_rows:
                    fixed = {"fixed": local[i], "fixed_at": head}
                elif i == as_rows:  # the prompts become rows of x
                    frame_tokens = x[:, num_global:].unflatten(1, (frames, per_frame))
                    frame_tokens = torch.cat([frame_tokens[:, :, :head], local[i].expand(batch, frames, -1, -1),
                                              frame_tokens[:, :, head:]], dim=2)
                    per_frame = frame_tokens.shape[2]
                    x = torch.cat([x[:, :num_global], frame_tokens.flatten(1, 2)], dim=1)
                else:
                    x[:, num_global:].unflatten(1, (frames, per_frame))[:, :, head : head + num_local] = local[i]
            if pooled_rows_only and i == len(blocks) - 1:
                return self._block(block_fn, block, x, num_global, frames, queries_per_frame=head, **fixed), head
            x = self._block(block_fn, block, x, num_global, frames, **fixed)
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
