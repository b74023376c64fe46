"""BLIP's BERT text encoder: post-LN, bidirectional, with the cross-attention to image tokens used in ITM mode.

Module and parameter names are BERT's (``embeddings.word_embeddings``, ``encoder.layer.N.attention.self.query``,
``...crossattention...``), which both the original BLIP release and Hugging Face's ``BlipTextModel`` use, so
text weights load from either by prefix alone. Attention runs through ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..clip import LayerNorm
from .vision import activation


class BertSelfAttention(nn.Module):
    """Separate query/key/value projections; keys and values come from ``context`` (the image tokens, whose
    width may differ) when given, else from ``x``."""

    def __init__(self, width: int, heads: int, context_width: int | None = None):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(context_width or width, width)
        self.value = nn.Linear(context_width or width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        q, k, v = (proj(t).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                   for proj, t in ((self.query, x), (self.key, source), (self.value, source)))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(-2)


class BertOutput(nn.Module):
    """``LayerNorm(dense(x) + residual)``: BERT's post-LN residual step."""

    def __init__(self, in_width: int, width: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_width, width)
        self.LayerNorm = LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, width: int, heads: int, eps: float, context_width: int | None = None):
        super().__init__()
        self.self = BertSelfAttention(width, heads, context_width)
        self.output = BertOutput(width, width, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.self(x, mask, context), x)


class BertIntermediate(nn.Module):
    def __init__(self, width: int, mlp_width: int, act: str):
        super().__init__()
        self.dense = nn.Linear(width, mlp_width)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention, then (ITM mode, ``image`` given) cross-attention to the image tokens, then the MLP."""

    def __init__(self, width: int, heads: int, mlp_width: int, eps: float, act: str, image_width: int | None):
        super().__init__()
        self.attention = BertAttention(width, heads, eps)
        if image_width is not None:
            self.crossattention = BertAttention(width, heads, eps, context_width=image_width)
        self.intermediate = BertIntermediate(width, mlp_width, act)
        self.output = BertOutput(mlp_width, width, eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, image: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        """``attn_mask``: bool ``[N, 1, 1, L]``, True = a key the queries see (DGL calls the text blocks of every
        backbone as ``block(x, is_causal=..., attn_mask=...)``; BERT is bidirectional, so ``is_causal`` must be
        False)."""
        if is_causal:
            raise ValueError("BLIP's BERT text encoder is bidirectional: it has no causal mode")
        x = self.attention(x, attn_mask)
        if image is not None:
            x = self.crossattention(x, context=image)  # every image token is attended (BLIP's all-ones mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    """Holds the layers under BERT's name (``encoder.layer.N``); :class:`BlipTextEncoder` runs them."""

    def __init__(self, layers: int, width: int, heads: int, mlp_width: int, eps: float, act: str,
                 image_width: int | None):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(width, heads, mlp_width, eps, act, image_width) for _ in range(layers))


class BertEmbeddings(nn.Module):
    """Word plus absolute position embeddings, then LayerNorm (BLIP's BERT has no token-type table)."""

    def __init__(self, vocab_size: int, positions: int, width: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, width)
        self.position_embeddings = nn.Embedding(positions, width)
        self.LayerNorm = LayerNorm(width, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_embeddings.weight[: input_ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(input_ids) + positions)


class BlipTextEncoder(nn.Module):
    def __init__(self, vocab_size: int, positions: int, width: int, layers: int, heads: int, mlp_width: int,
                 eps: float, act: str = "gelu", image_width: int | None = None):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, positions, width, eps)
        self.encoder = BertEncoder(layers, width, heads, mlp_width, eps, act, image_width)
        self.grad_checkpointing = False  # recompute each layer in backward (text and ITM passes alike)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, L]`` ids (and their 0/1 mask) -> ``[N, L, width]`` hidden states; with ``image`` tokens
        ``[N, M, vision width]``, the multimodal (ITM) pass through the cross-attention."""
        x = self.embeddings(input_ids)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # keys a query may see
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        for layer in self.encoder.layer:
            x = checkpoint(layer, x, mask, image, use_reentrant=False) if recompute else layer(x, mask, image)
        return x
