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

Video (per video; S = 1 + P_local + grid^2 tokens per frame, L = G + T*S tokens per video):
    pairs   = T*S*(G + S)   (frame tokens see their frame and the video's G globals)
            + G*L           (globals see the whole video)
    The last block computes only the R = G + T rows that pooling can read (globals, frame CLS tokens):
    last    = 4*L*D^2 (keys, values of every token) + 20*R*D^2 (queries, out-proj, MLP of R rows)
            + 4*D*(G*L + T*(G + S));  last_bw = the same with 8*D*(...)
    forward = (layers_v - 1) * block(L, D_v, pairs) + last + stem 2*T*grid^2*(3*p^2)*D_v + head 2*D_v*E*k
    backward= (layers_v - 1) * block_bw(L, D_v, pairs) + last_bw + head 2*D_v*E*k; the stem gets no gradient
    (k = tokens pooled: 1 for global_prompt0.)
Text (per caption; L_t = SOT + P_text/2 prefix prompts + words actually encoded, i.e. (last EOT position in
the batch + 1) + P_text/2, as seen entering the first text block; the postfix prompts and the padding cannot
reach the EOT row and are not encoded): pairs = L_t^2 (the dense square, although the causal kernel may skip
half; < 2 % of text FLOPs),
    forward = layers_t * block(L_t, D_t, L_t^2) + head 2*D_t*E;  backward = same with block_bw.
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
                   cfg.text_prompt_length, prompt_layers, cfg.shared_latent_space, pooled, cfg.backbone)

    @property
    def tokens_per_frame(self) -> int:
        return 1 + self.local_prompts + self.grid**2

    @property
    def video_tokens(self) -> int:
        return self.global_prompts + self.frames * self.tokens_per_frame


def block_flops(tokens: int, width: int, pairs: int, backward: bool = False) -> int:
    """A frozen pre-LN block: 24·N·D² GEMM FLOPs plus 4·D·pairs attention FLOPs (backward: 1x and 2x)."""
    return 24 * tokens * width * width + (8 if backward else 4) * width * pairs


def video_flops(s: Shapes, videos: int = 1, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``videos`` videos through the visual tower.

    ``attention=False`` leaves out the score/value products (the weight GEMMs and the stem only), which is
    what ``torch.utils.flop_counter`` sees on CPU, where it has no formula for the fused attention kernel.
    """
    L, S, G, T, D = s.video_tokens, s.tokens_per_frame, s.global_prompts, s.frames, s.vision_width
    pairs = (T * S * (G + S) + G * L) if attention else 0
    last_pairs = (G * L + T * (G + S)) if attention else 0
    last_gemm = 4 * L * D * D + 20 * (G + T) * D * D
    stem = 2 * T * s.grid**2 * (3 * s.patch**2) * D
    head = 2 * D * s.embed * s.pooled_tokens
    fwd = (s.vision_layers - 1) * block_flops(L, D, pairs) + last_gemm + 4 * D * last_pairs + stem + head
    bwd = (s.vision_layers - 1) * block_flops(L, D, pairs, backward=True) + last_gemm + 8 * D * last_pairs + head
    return videos * fwd, videos * bwd


def text_flops(s: Shapes, captions: int, kept_words: int, attention: bool = True,
               tokens: int | None = None) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``captions`` captions encoded with ``kept_words`` id slots (SOT .. last EOT).

    ``tokens`` overrides the sequence length ``kept_words + P_text / 2`` (words and prefix prompts; the benchmark
    passes the length it saw entering the first text block, so the count follows the model if it changes).
    """
    L, D = tokens or kept_words + s.text_prompts // 2, s.text_width
    pairs = L * L if attention else 0
    head = 2 * D * s.embed
    fwd = s.text_layers * block_flops(L, D, pairs) + head
    bwd = s.text_layers * block_flops(L, D, pairs, backward=True) + head
    return captions * fwd, captions * bwd


def kept_words(ids: torch.Tensor) -> int:
    """Id slots the model encodes: SOT up to the batch's last EOT (padding after it is dropped)."""
    return int(ids.argmax(dim=-1).max()) + 1
