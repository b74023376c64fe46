"""Analytic FLOP counts of BLIP's towers, in models/flops.py's convention.

A multiply-add is 2 FLOPs; only matrix products count (no LayerNorm, softmax, GELU, embedding lookup, bias).
The backbone is frozen, so backward computes input gradients only: weight GEMMs cost 1x their forward, the
attention products (scores, weighted values) 2x, and the patch stem nothing. Per layer over N tokens of width
D with MLP width M whose attention covers ``pairs`` (query, key) pairs:

    forward = 8*N*D^2 (q, k, v, out-proj) + 4*N*D*M (MLP) + 4*D*pairs        (= models/flops.py's block for M = 4D)

Vision (per frame, N = 1 + grid^2, pairs = N^2): layers_v * layer + stem 2*grid^2*(3*p^2)*D_v + head 2*D_v*E
(``vision_proj`` on CLS).
Text (per caption of L ids, pairs = L^2): layers_t * layer + head 2*D_t*E (``text_proj`` on CLS).
ITM (per pair: L ids cross-attending to N_i image tokens of width D_v; the image tokens are the vision
tower's, counted there): layers_t * (layer(L, D_t, M_t, L^2) + cross) + head 2*D_t*2, where
    cross = 4*L*D_t^2 (queries, out-proj) + 4*N_i*D_v*D_t (keys, values of the image tokens) + 4*D_t*L*N_i.
For a DGL-BLIP video, N_i = G + T*(1 + grid^2) (``video_tokens``). ITM re-ranking (``rerank_flops``) runs the
ITM forward on each text's top-K videos and each video's top-K texts; the top-K selection is no matrix product.
"""
from __future__ import annotations

from .config import BlipConfig


def layer_flops(tokens: int, width: int, mlp_width: int, pairs: int, backward: bool = False) -> int:
    return 8 * tokens * width * width + 4 * tokens * width * mlp_width + (8 if backward else 4) * width * pairs


def vision_flops(cfg: BlipConfig, frames: int = 1, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``frames`` images through the ViT and ``vision_proj``.

    ``attention=False`` leaves out the score/value products, as ``torch.utils.flop_counter`` does on CPU."""
    n, d = 1 + cfg.grid_size**2, cfg.vision_width
    pairs = n * n if attention else 0
    stem = 2 * cfg.grid_size**2 * 3 * cfg.vision_patch_size**2 * d
    head = 2 * d * cfg.embed_dim
    fwd = cfg.vision_layers * layer_flops(n, d, cfg.vision_mlp_width, pairs) + stem + head
    bwd = cfg.vision_layers * layer_flops(n, d, cfg.vision_mlp_width, pairs, backward=True) + head
    return frames * fwd, frames * bwd


def text_flops(cfg: BlipConfig, captions: int, tokens: int, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``captions`` captions of ``tokens`` ids through BERT and ``text_proj``."""
    d = cfg.text_width
    pairs = tokens * tokens if attention else 0
    head = 2 * d * cfg.embed_dim
    fwd = cfg.text_layers * layer_flops(tokens, d, cfg.text_mlp_width, pairs) + head
    bwd = cfg.text_layers * layer_flops(tokens, d, cfg.text_mlp_width, pairs, backward=True) + head
    return captions * fwd, captions * bwd


def itm_flops(cfg: BlipConfig, pairs: int, tokens: int, attention: bool = True,
              memory: int | None = None) -> tuple[int, int]:
    """(forward, backward) FLOPs of the multimodal pass and ITM head over ``pairs`` (caption, image) pairs of
    ``tokens`` ids each, cross-attending to ``memory`` vision tokens (default an image's ``1 + grid²``)."""
    d, dv, image = cfg.text_width, cfg.vision_width, memory or 1 + cfg.grid_size**2
    self_pairs, cross_pairs = (tokens * tokens, tokens * image) if attention else (0, 0)
    cross_gemm = 4 * tokens * d * d + 4 * image * dv * d
    head = 2 * d * 2
    fwd = cfg.text_layers * (layer_flops(tokens, d, cfg.text_mlp_width, self_pairs) + cross_gemm
                             + 4 * d * cross_pairs) + head
    bwd = cfg.text_layers * (layer_flops(tokens, d, cfg.text_mlp_width, self_pairs, backward=True) + cross_gemm
                             + 8 * d * cross_pairs) + head
    return pairs * fwd, pairs * bwd


def video_tokens(cfg: BlipConfig, frames: int, global_prompts: int) -> int:
    """Vision tokens of one DGL-BLIP video, what its ITM cross-attends to: ``G + T·(1 + grid²)``."""
    return global_prompts + frames * (1 + cfg.grid_size**2)


def rerank_flops(cfg: BlipConfig, texts: int, videos: int, k: int, tokens: int, memory: int,
                 attention: bool = True) -> int:
    """Forward FLOPs of ITM re-ranking a ``[texts, videos]`` similarity: ``texts·min(k, videos)`` plus
    ``videos·min(k, texts)`` pairs of ``tokens`` ids on ``memory`` vision tokens (``video_tokens``)."""
    pairs = texts * min(k, videos) + videos * min(k, texts)
    return itm_flops(cfg, pairs, tokens, attention, memory)[0]
