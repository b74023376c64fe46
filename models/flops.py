"""Analytic FLOP counts of DGL on an OpenAI ViT CLIP, split so that registries own their parts.

The benchmark divides these by measured time to report "model FLOPs utilisation". The backbone's count is
:func:`video_flops` and :func:`text_flops` here (its transformer blocks, from CLIP's sizes; the backbone registry
points at them); each prompt generator's count is its ``flops`` method (models/prompts.py); the training step's
total adds them up (models/step_flops.py).

A multiply-add is 2 FLOPs. Only matrix products are counted: no LayerNorm, softmax, GELU, elementwise,
embedding lookup, optimizer, or activation-checkpointing recomputation (so checkpointing shows up as lower
efficiency). Per frozen pre-LN block over N tokens of width D whose attention scores cover ``pairs``
(query, key) pairs in total:

    forward  = 24*N*D^2            (QKV 6ND^2 + out-proj 2ND^2 + MLP 2*4ND^2 + 2*4ND^2)
             + 4*D*pairs           (Q.K^T and P.V, all heads together)
    backward = 24*N*D^2 + 8*D*pairs

The weights are frozen, so backward computes input gradients only: each frozen GEMM costs 1x its forward
(no weight gradients); the attention products cost 2x (dQ, dK, dV and dP: four products for two).

Video (per call of the encoder on n videos; S = 1 + P_local + grid^2 tokens per frame, L = G + T*S tokens per
video; S' = S - P_local, L' = G + T*S' without the local prompts; F = T distinct local-prompt sets for the
transformer variant, 1 for linear):
    pairs   = T*S*(G + S)   (frame tokens see their frame and the video's G globals)
            + G*L           (globals see the whole video)
    A layer whose local prompts the next layer replaces (layers 0 .. NL-2; all of them when NL = layers_v, as the
    last layer's are unread) computes them as keys and values only, once per call: 4*F*P_local*D^2, and per
    video block(L', D_v, pairs') with pairs' = T*S'*(G + S) + G*L. The other layers: block(L, D_v, pairs).
    The last block computes only the R = G + T rows that pooling can read (globals, frame CLS tokens):
    last    = 4*L_in*D^2 (keys, values of its L_in = L' or L row inputs) + 20*R*D^2 (queries, out-proj, MLP of R
            rows) + 4*D*(G*L + T*(G + S));  last_bw = the same with 8*D*(...)
    plus per video the stem 2*T*grid^2*(3*p^2)*D_v (forward only: no gradient) and the head 2*D_v*E*k (k = tokens
    pooled: 1 for global_prompt0); backward = the same GEMMs once, the attention products twice.
Text (per call on n captions; W = the word slots after SOT up to the batch's last EOT, H = 1 + P_text/2: SOT and
the prefix prompts; the postfix prompts and the padding cannot reach the EOT row and are not encoded). Under the
causal mask the head H sees only itself, so it runs once per call:
    words   = n * layers_t * (24*W*D_t^2 + 4*D_t*W*(H + W))   (pairs: the dense W x (H + W) rectangle, although
              the causal kernel may skip some; < 2 % of text FLOPs)
    head    = sum over layers of 4*H*D_t^2 (keys, values) + r*(20*D_t^2 + 4*D_t*r), r the head rows read again
              (they see the r head keys up to theirs): 1 (SOT) where the next layer replaces the prompts, H where
              they carry on, 0 after the last layer
    forward = words + head + n * 2*D_t*E;  backward = the same with 8*D_t instead of 4*D_t on the pairs, less
    n * 6*W*D_t^2: the words enter as frozen embeddings, so layer 0's Q, K, V of them get no input gradient.
Prompt generator (once per step, training only; its weights train, so backward = 2x forward):
    transformer: NL * block(P_text + P_local*T, D_v, (P_text + P_local*T)^2) + NL*P_text*(4*D_v^2 + 4*D_v*D_t)
    linear:      2 * NL * P_local * 2*D_v*D_t   (prefix and postfix maps)
Logits: 2*B^2*E forward, 4*B^2*E backward.
Training step = all forwards + all backwards. Eval sections = the video or text forward only.
Without the attention products (``attention=False``) the count equals ``torch.utils.flop_counter``'s for a
whole training step (tests/test_benchmark.py); that counter has no formula for the CPU attention kernel.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .backbone import DEFAULT_BACKBONE

# Tokens each pooled visual output type projects (k in the video head count); "global-local-feature" is not a
# pooled output and has no single count.
_POOLED_TOKENS: dict[str, Callable[[int, int], int]] = {
    "global_prompt0": lambda globals_, frames: 1,
    "average_global_prompt": lambda globals_, frames: globals_,
    "average_frame_cls_token": lambda globals_, frames: frames,
    "average_global_prompt_and_frame_cls_token": lambda globals_, frames: globals_ + frames,
}


@dataclass(frozen=True)
class Shapes:
    """The sizes the FLOP count needs: CLIP's (vision/text towers) and DGL's (prompts, frames, variant)."""

    vision_width: int
    vision_layers: int
    patch: int
    grid: int
    text_width: int
    text_layers: int
    embed: int
    frames: int
    global_prompts: int
    local_prompts: int
    text_prompts: int
    prompt_layers: int
    variant: str
    pooled_tokens: int = 1
    backbone: str = DEFAULT_BACKBONE  # whose registry entry counts the towers (models/step_flops.py)
    local_prompt_sets: int = 1  # distinct local-prompt sets: T for a frame-specific generator, else 1

    @classmethod
    def of(cls, model: Any, frames: int) -> "Shapes":
        """From a built DGL (read through its ``clip.config``, ``config`` and ``prompt_layers``)."""
        return cls.of_configs(model.clip.config, model.config, model.prompt_layers, frames)

    @classmethod
    def of_configs(cls, ccfg: Any, cfg: Any, prompt_layers: int, frames: int) -> "Shapes":
        """From CLIP's and DGL's configs alone: counting needs no weights."""
        pooled = _POOLED_TOKENS[cfg.visual_output_type](cfg.global_prompt_length, frames)
        return cls(ccfg.vision_width, ccfg.vision_layers, ccfg.vision_patch_size, ccfg.grid_size, ccfg.text_width,
                   ccfg.text_layers, ccfg.embed_dim, frames, cfg.global_prompt_length, cfg.local_prompt_length,
                   cfg.text_prompt_length, prompt_layers, cfg.shared_latent_space, pooled, cfg.backbone,
                   frames if cfg.frame_specific_prompts else 1)

    @property
    def tokens_per_frame(self) -> int:
        return 1 + self.local_prompts + self.grid**2

    @property
    def video_tokens(self) -> int:
        return self.global_prompts + self.frames * self.tokens_per_frame


def block_flops(tokens: int, width: int, pairs: int, backward: bool = False) -> int:
    """A frozen pre-LN block: 24·N·D² GEMM FLOPs plus 4·D·pairs attention FLOPs (backward: 1x and 2x)."""
    return 24 * tokens * width * width + (8 if backward else 4) * width * pairs


def _fwd_bwd(gemm: int, pairs: int, width: int) -> tuple[int, int]:
    """(forward, backward) FLOPs of frozen GEMMs plus attention over ``pairs`` (query, key) pairs."""
    return gemm + 4 * width * pairs, gemm + 8 * width * pairs


def video_flops(s: Shapes, videos: int = 1, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of one encoder call on ``videos`` videos through the visual tower.

    ``attention=False`` leaves out the score/value products (the weight GEMMs and the stem only), which is
    what ``torch.utils.flop_counter`` sees on CPU, where it has no formula for the fused attention kernel.
    """
    L, S, G, T, D, P = s.video_tokens, s.tokens_per_frame, s.global_prompts, s.frames, s.vision_width, s.local_prompts
    att = 1 if attention else 0
    layers = s.vision_layers
    fixed_layers = layers if s.prompt_layers == layers else s.prompt_layers - 1  # prompts as keys/values only
    compact_tokens = L - T * P

    def block(tokens: int, asking_per_frame: int) -> tuple[int, int]:
        return _fwd_bwd(24 * tokens * D * D, att * (T * asking_per_frame * (G + S) + G * L), D)

    fixed_blocks = [block(compact_tokens, S - P)] * min(fixed_layers, layers - 1)
    full_blocks = [block(L, S)] * (layers - 1 - len(fixed_blocks))
    last_in = compact_tokens if fixed_layers == layers else L
    last = _fwd_bwd(4 * last_in * D * D + 20 * (G + T) * D * D, att * (G * L + T * (G + S)), D)
    stem, head = 2 * T * s.grid**2 * (3 * s.patch**2) * D, 2 * D * s.embed * s.pooled_tokens
    per_video = [sum(b[i] for b in fixed_blocks + full_blocks) + last[i] + head for i in (0, 1)]
    once = fixed_layers * 4 * s.local_prompt_sets * P * D * D  # the replaced prompts' keys and values
    return videos * (per_video[0] + stem) + once, videos * per_video[1] + once


def text_flops(s: Shapes, captions: int, kept_words: int, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of one encoder call on ``captions`` captions with ``kept_words`` id slots (SOT ..
    last EOT): the words per caption, SOT and the prefix prompts once."""
    W, H, D = kept_words - 1, 1 + s.text_prompts // 2, s.text_width
    att = 1 if attention else 0
    words = _fwd_bwd(24 * W * D * D, att * W * (H + W), D)
    head_proj = 2 * D * s.embed
    fwd = captions * (s.text_layers * words[0] + head_proj)
    # The words enter as frozen embeddings: the first layer's queries, keys and values of them need no gradient.
    bwd = captions * (s.text_layers * words[1] - 6 * W * D * D + head_proj)
    for layer in range(s.text_layers):
        read = 0 if layer == s.text_layers - 1 else 1 if layer + 1 < s.prompt_layers else H
        head = _fwd_bwd(4 * H * D * D + 20 * read * D * D, att * read * read, D)
        fwd, bwd = fwd + head[0], bwd + head[1]
    return fwd, bwd


def kept_words(ids: torch.Tensor) -> int:
    """Id slots the model encodes: SOT up to the batch's last EOT (padding after it is dropped)."""
    return int(ids.argmax(dim=-1).max()) + 1
