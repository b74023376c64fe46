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
DGL-BLIP (global-local video pass, a training step of BLIP's objective, either training mode): the section
below, tested against torch's counter on the real objective (tests/test_blip_flops.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .config import BlipConfig
from .losses import BlipLossConfig


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


# --------------------------------------------------------------------------------------------- DGL-BLIP
# models/blip/dgl_video.py: G global prompts lead the T frames' S = 1 + grid² tokens (L = G + T·S per video);
# frame tokens attend to the globals and their own frame, the globals to the whole video. Training
# (models/blip/objective.py) backward rules, by what requires a gradient:
#   full    (BLIP trains): every product 2x its forward (input and weight gradients; attention products
#           dQ, dK, dV and dP), except the patch stem, whose input is pixels: 1x (weight gradient only);
#   prompts (BLIP frozen, only the globals train): the vision pass 1x its GEMMs (input gradients, back to the
#           globals) and 2x its attention products, no stem; the text pass none (nothing there needs a
#           gradient); ITM the input gradients of everything downstream of the video tokens: all but layer 0's
#           self-attention (its input is the frozen embedding) and layer 0's cross-attention queries.
# An attention product is counted 2x in backward whenever any of its inputs needs a gradient (the fused kernels
# compute dQ, dK and dV together).

def pooled_tokens(pooling: str, frames: int) -> int:
    """Tokens ``vision_proj`` projects per video: 1 for ``global_prompt0``, T for ``frame_mean``."""
    return {"global_prompt0": 1, "frame_mean": frames}[pooling]


def _check_mode(mode: str) -> None:
    if mode not in ("full", "prompts"):  # models/blip/dgl_video.py TRAINING_MODES
        raise ValueError(f"training mode must be 'full' or 'prompts', got {mode!r}")


def dgl_video_flops(cfg: BlipConfig, frames: int, global_prompts: int, videos: int = 1, pooled: int = 1,
                    mode: str = "prompts", attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``videos`` DGL-BLIP videos: the stem per frame, every block over the
    ``L = G + T·S`` tokens with ``pairs = T·S·(G + S) + G·L``, ``vision_proj`` on ``pooled`` tokens."""
    _check_mode(mode)
    s, d, t = 1 + cfg.grid_size**2, cfg.vision_width, frames
    length = video_tokens(cfg, frames, global_prompts)
    pairs = t * s * (global_prompts + s) + global_prompts * length if attention else 0
    gemm = cfg.vision_layers * (8 * length * d * d + 4 * length * d * cfg.vision_mlp_width) + 2 * d * cfg.embed_dim * pooled
    att = cfg.vision_layers * 4 * d * pairs
    stem = 2 * t * cfg.grid_size**2 * 3 * cfg.vision_patch_size**2 * d
    bwd = 2 * gemm + 2 * att + stem if mode == "full" else gemm + 2 * att
    return videos * (gemm + att + stem), videos * bwd


def dgl_text_flops(cfg: BlipConfig, captions: int, tokens: int, mode: str = "prompts",
                   attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of DGL-BLIP's text pass: BLIP's unimodal BERT, trained only in ``full``."""
    _check_mode(mode)
    fwd = text_flops(cfg, captions, tokens, attention)[0]
    return fwd, 2 * fwd if mode == "full" else 0


def dgl_itm_flops(cfg: BlipConfig, pairs: int, tokens: int, memory: int, mode: str = "prompts",
                  attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of ITM training on ``pairs`` pairs of ``tokens`` ids on ``memory`` video tokens."""
    _check_mode(mode)
    fwd = itm_flops(cfg, 1, tokens, attention, memory)[0]
    if mode == "full":
        return pairs * fwd, pairs * 2 * fwd
    d, self_att = cfg.text_width, 4 * cfg.text_width * tokens * tokens if attention else 0
    cross_att = 4 * d * tokens * memory if attention else 0
    per_layer = 12 * tokens * d * d + 4 * tokens * d * cfg.text_mlp_width + 4 * memory * cfg.vision_width * d
    layer0_skipped = 8 * tokens * d * d + 2 * self_att + 2 * tokens * d * d  # self-attention, cross queries
    bwd = cfg.text_layers * (per_layer + 2 * self_att + 2 * cross_att) - layer0_skipped + 2 * d * 2
    return pairs * fwd, pairs * bwd


def dgl_train_step_flops(cfg: BlipConfig, batch: int, tokens: int, frames: int, global_prompts: int,
                         pooled: int, mode: str, loss: BlipLossConfig, queued: int,
                         attention: bool = True) -> dict[str, int]:
    """FLOPs of one DGL-BLIP training forward and backward on one process (``DGLBlipObjective``) by part;
    ``total`` is what the efficiency uses. ``queued``: entries in the queue (``loss.queue_size`` once full).

    Covered: the online video and text passes (forward, backward); the momentum copy's video and text forward
    (when ``loss.needs_momentum_encoder``); ITC's similarities against the momentum keys plus the queue and the
    teacher's (alpha > 0), with their backward; with ITM, the hard-negative similarities (no gradient) and the
    multimodal pass over 3·B pairs (B positives, B hard negative videos, B hard negative texts) with its
    backward. Not covered: LayerNorm, softmax, GELU, the EMA update, clipping and AdamW (no matrix products).
    """
    e = cfg.embed_dim
    vf, vb = dgl_video_flops(cfg, frames, global_prompts, batch, pooled, mode, attention)
    tf, tb = dgl_text_flops(cfg, batch, tokens, mode, attention)
    momentum = loss.needs_momentum_encoder
    parts = {"video_fwd": vf, "video_bwd": vb, "text_fwd": tf, "text_bwd": tb,
             "momentum_fwd": vf + tf if momentum else 0}
    keys = batch + min(queued, loss.queue_size) if momentum else batch
    product = 2 * batch * keys * e  # one [B, E] x [E, keys] similarity
    # Backward: one product per operand that needs a gradient. t2v = text · video_keys, v2t = video · text_keys;
    # momentum keys need none, online keys do; the text side trains only in full mode.
    text_grad = mode == "full"
    grads = (text_grad + (not momentum)) + (1 + (not momentum and text_grad))
    parts["itc"] = 2 * product + (2 * product if loss.alpha else 0) + grads * product
    if loss.itm_weight:
        mf, mb = dgl_itm_flops(cfg, 3 * batch, tokens, video_tokens(cfg, frames, global_prompts), mode, attention)
        parts.update(itm_negatives=2 * 2 * batch * batch * e, itm_fwd=mf, itm_bwd=mb)
    parts["total"] = sum(parts.values())
    return parts


@dataclass(frozen=True)
class DGLBlipFlops:
    """A built DGL-BLIP's counts by section (the benchmark's rows). ``train`` is one step of ``loss`` (the
    recipe's by default) with its queue full; ``ids`` give the caption width (BERT encodes every slot)."""

    cfg: BlipConfig
    frames: int
    global_prompts: int
    pooled: int
    mode: str
    loss: BlipLossConfig = BlipLossConfig()

    @classmethod
    def of(cls, model: Any, frames: int) -> "DGLBlipFlops":
        """From a ``DGLBlipModel`` (models/blip/dgl_model.py)."""
        net = model.net.config
        return cls(model.clip.config, frames, net.global_prompt_length, pooled_tokens(net.video_pooling, frames),
                   net.training_mode)

    @property
    def video_tokens(self) -> int:
        return video_tokens(self.cfg, self.frames, self.global_prompts)

    def train(self, batch: int, ids: Tensor) -> dict[str, int]:
        return dgl_train_step_flops(self.cfg, batch, ids.shape[-1], self.frames, self.global_prompts, self.pooled,
                                    self.mode, self.loss, self.loss.queue_size)

    def video(self, batch: int) -> int:
        return dgl_video_flops(self.cfg, self.frames, self.global_prompts, batch, self.pooled)[0]

    def text(self, batch: int, ids: Tensor) -> int:
        return text_flops(self.cfg, batch, ids.shape[-1])[0]

    def itm(self, pairs: int, tokens: int) -> int:
        return itm_flops(self.cfg, pairs, tokens, memory=self.video_tokens)[0]

    def rerank(self, texts: int, videos: int, k: int, tokens: int) -> int:
        return rerank_flops(self.cfg, texts, videos, k, tokens, self.video_tokens)
