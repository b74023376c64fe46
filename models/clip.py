"""The CLIP ViT backbone, built from any OpenAI-named state dict (Hugging Face / open_clip files are renamed on load).

Parameter names equal OpenAI's (``visual.transformer.resblocks.0.attn.in_proj_weight`` ...), so OpenAI
files load strictly and ``state_dict()`` round-trips. Unlike OpenAI's code, activations are batch-first
(``[N, L, D]``) and attention runs through ``F.scaled_dot_product_attention`` on the frozen projection
weights, which lets the DGL encoders reuse the same blocks with their own key/value layouts.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Traits
from .clip_loader import load_clip
from .pretrained import CLIPConfig, check_clip_keys, infer_clip_config, resolve_clip_path

# CLIP's pixel statistics (RGB, on [0, 1] intensities).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back, as CLIP does, so fp16/bf16 inputs stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(
            orig_type
        )


QUICK_GELU_SCALE = 1.702


class QuickGELU(nn.Module):
    """``x · sigmoid(1.702 x)``, computed as ``silu(1.702 x) / 1.702``: one fused kernel, less memory kept for
    backward (measured -5 % on a ViT-B/32 training step on CPU; equal to 2e-7 relative). Inside `Mlp` the two
    scalings ride on its two matrix products instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x * QUICK_GELU_SCALE) / QUICK_GELU_SCALE


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}  # OpenAI's CLIPs use QuickGELU, most open_clip models GELU


class _QuickGeluMlp(torch.autograd.Function):
    """``c_proj(QuickGELU(c_fc(x)))`` as ``silu(s·(x W1ᵀ + b1)) (W2ᵀ / s) + b2``, s = 1.702, on 2-D ``x``.

    The two scalings ride on the products (``addmm``'s alpha and beta) and cancel in the backward, so neither
    pass touches the hidden activation with anything but the silu, and no scaled copy of a weight is made or
    kept for backward (frozen weights are shared, not copied). Saved: the pre-activation, plus ``x`` only when
    ``W1`` trains; the activation is recomputed only when ``W2`` trains. Under autocast the products take its
    dtype as ``F.linear`` would; the backward computes in the saved activation's dtype."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        s = QUICK_GELU_SCALE
        z = torch.addmm(b1, x, w1.t(), beta=s, alpha=s)
        y = torch.addmm(b2, F.silu(z), w2.t(), alpha=1 / s)
        ctx.save_for_backward(z, w1, w2, x if w1.requires_grad else None)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        z, w1, w2, x = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        s = QUICK_GELU_SCALE
        # s · dL/dz: c_proj's 1/s and c_fc's s cancel in every gradient but W2's
        grad_z = torch.ops.aten.silu_backward(grad_y.to(z.dtype).mm(w2.to(z.dtype)), z)
        grad_x = grad_z.mm(w1.to(z.dtype)) if need_x else None
        grad_w1 = grad_z.t().mm(x.to(z.dtype)).to(w1.dtype) if need_w1 else None
        grad_b1 = grad_z.sum(0).to(w1.dtype) if need_b1 else None
        grad_w2 = (grad_y.t().to(z.dtype).mm(F.silu(z)) / s).to(w2.dtype) if need_w2 else None
        grad_b2 = grad_y.sum(0).to(w2.dtype) if need_b2 else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


class Mlp(nn.Module):
    """``c_proj(act(c_fc(x)))`` under OpenAI CLIP's parameter names. With QuickGELU the 1.702 scalings ride on the
    two products (`_QuickGeluMlp`): the widest activation of the block gets no elementwise pass but the silu,
    forward and backward, and no weight is copied."""

    def __init__(self, width: int, hidden: int, out: int, activation: str = "quick_gelu"):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = ACTIVATIONS[activation]()
        self.c_proj = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.gelu, QuickGELU):
            return self.c_proj(self.gelu(self.c_fc(x)))
        y = _QuickGeluMlp.apply(x.reshape(-1, x.shape[-1]), self.c_fc.weight, self.c_fc.bias, self.c_proj.weight,
                                self.c_proj.bias)
        return y.view(*x.shape[:-1], y.shape[-1])


class MultiheadAttention(nn.Module):
    """Self-attention holding ``nn.MultiheadAttention``'s parameters under its names.

    ``qkv`` and ``merge`` are exposed separately so that callers with a custom key layout (DGL's
    global-local attention) project once and call the fused kernel on their own views.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[..., L, D]`` -> q, k, v each ``[..., L, heads, D/heads]`` (views of one projection)."""
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return qkv.unflatten(-1, (3, self.heads, -1)).unbind(-3)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., L, D]`` -> q ``[..., L, heads, D/heads]`` alone, for rows whose keys and values are not needed."""
        width = x.shape[-1]
        q = F.linear(x, self.in_proj_weight[:width], self.in_proj_bias[:width])
        return q.unflatten(-1, (self.heads, -1))

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., L, D]`` -> k, v each ``[..., L, heads, D/heads]``, without the queries."""
        width = x.shape[-1]
        kv = F.linear(x, self.in_proj_weight[width:], self.in_proj_bias[width:])
        return kv.unflatten(-1, (2, self.heads, -1)).unbind(-3)

    def merge(self, heads_out: torch.Tensor) -> torch.Tensor:
        """``[..., L, heads, D/heads]`` -> output projection ``[..., L, D]``."""
        return self.out_proj(heads_out.flatten(-2))

    def forward(self, x: torch.Tensor, is_causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (t.transpose(-3, -2) for t in self.qkv(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.merge(out.transpose(-3, -2))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x += attn(ln_1(x)); x += mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, activation: str = "quick_gelu"):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = Mlp(width, 4 * width, width, activation)
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, is_causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), is_causal=is_causal, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, activation) for _ in range(layers))

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, is_causal=is_causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(
        self, resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int, activation: str = "quick_gelu"
    ):
        super().__init__()
        grid = resolution // patch_size
        scale = width**-0.5
        self.input_resolution = resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        # Not in the state dict: OpenAI's files have no such entries.
        self.register_buffer("pixel_mean", 255 * torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", 255 * torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, 1 + grid², width]``: CLS + patches, positions added, ``ln_pre`` applied.

        Float images are taken as already normalised; uint8 images are normalised here, on the model's device,
        so data loaders can ship 4x fewer bytes.
        """
        if images.dtype == torch.uint8:
            images = (images.float() - self.pixel_mean) / self.pixel_std
        weight_dtype = self.conv1.weight.dtype
        # Autocast runs the convolution in bf16/fp16; the residual stream stays in the weights' dtype, as the text
        # tower's (its embedding lookup is not autocast), so both towers round alike.
        patches = self.conv1(images.to(weight_dtype)).to(weight_dtype).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.positional_embedding.to(patches.dtype)
        return self.ln_pre(tokens)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """``ln_post`` then ``proj``: width-dim tokens into the joint embedding space."""
        return self.ln_post(tokens) @ self.proj

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.transformer(self.embed(images))[:, 0])


class CLIP(nn.Module):
    # The Backbone interface (models/backbone.py): causal text read at the end-of-text token, CLS first in every
    # frame, prompts in both towers; and the tensors whose hash identifies the weights.
    traits = Traits(text_pooling="eot", causal_text=True, vision_cls_index=0, text_prompts=True, frame_prompts=True,
                    global_prompts=True)
    fingerprint_keys = ("visual.class_embedding", "visual.positional_embedding", "positional_embedding",
                        "text_projection", "visual.proj")

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.config = cfg
        self.visual = VisionTransformer(
            cfg.image_resolution, cfg.vision_patch_size, cfg.vision_width, cfg.vision_layers, cfg.vision_heads,
            cfg.embed_dim, cfg.activation,
        )
        self.transformer = Transformer(cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.activation)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.ln_final = LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(torch.empty(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.text_width**-0.5)

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, torch.Tensor], source: str = "<state dict>", config: CLIPConfig | None = None
    ) -> "CLIP":
        """Build a CLIP of ``config`` (default: sizes read from the tensors' shapes), then load the weights strictly."""
        check_clip_keys(state_dict, source)
        model = cls(config or infer_clip_config(state_dict))
        model.load_state_dict(state_dict, strict=True)
        return model

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, pretrained_dir: str | os.PathLike | None = None, activation: str | None = None
    ) -> "CLIP":
        """``"ViT-B/32"`` (looked up in ``pretrained_dir``), a file or a folder: OpenAI, Hugging Face or open_clip
        weights; ``activation`` (--clip_activation) for files that do not record theirs."""
        path = resolve_clip_path(name_or_path, pretrained_dir)
        state_dict, config = load_clip(path, activation)
        return cls.from_state_dict(state_dict, source=str(path), config=config)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token plus positional embedding for ``[N, L]`` ids (L <= context length)."""
        return self.token_embedding(input_ids) + self.positional_embedding[: input_ids.shape[1]]

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ln_final(tokens) @ self.text_projection

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    # The Backbone interface of models/backbones.py, which DGL uses.
    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def embed_frames(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual.embed(images)

    def project_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.visual.project(tokens)

    def text_end(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Position of each caption's EOT token: the largest id."""
        return input_ids.argmax(dim=-1)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Features at the EOT token, through the causal text transformer."""
        hidden = self.transformer(self.embed_text(input_ids), is_causal=True)
        eot = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.text_end(input_ids)]
        return self.project_text(eot)
