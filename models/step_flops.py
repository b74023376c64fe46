"""FLOPs of one DGL training step: the backbone's (registry entry, models/flops.py) plus the registered
prompt generator's (its ``flops`` method) plus the logits; and each built model's counts by section."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .backbones import get_backbone
from .blip.flops import DGLBlipFlops
from .flops import Shapes, kept_words
from .prompts import PROMPT_GENERATORS


def prompt_flops(s: Shapes, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of one prompt-generator call (trainable: backward = 2x forward)."""
    if s.variant not in PROMPT_GENERATORS:
        raise ValueError(f"no FLOP count for prompt generator {s.variant!r}; known: {sorted(PROMPT_GENERATORS)}")
    fwd = PROMPT_GENERATORS[s.variant].flops(s.vision_width, s.text_width, s.prompt_layers, s.text_prompts,
                                             s.local_prompts, s.frames, attention)
    return fwd, 2 * fwd


def train_step_flops(s: Shapes, batch: int, kept: int, attention: bool = True) -> dict[str, int]:
    """FLOPs of one training step by part; ``total`` is what the efficiency uses."""
    backbone = get_backbone(s.backbone)
    vf, vb = backbone.video_flops(s, batch, attention)
    tf, tb = backbone.text_flops(s, batch, kept, attention)
    pf, pb = prompt_flops(s, attention)
    lf, lb = 2 * batch * batch * s.embed, 4 * batch * batch * s.embed
    return {"video_fwd": vf, "video_bwd": vb, "text_fwd": tf, "text_bwd": tb, "prompt_fwd": pf, "prompt_bwd": pb,
            "logits": lf + lb, "total": vf + vb + tf + tb + pf + pb + lf + lb}


@dataclass(frozen=True)
class DGLFlops:
    """A built DGL's counts by section (the benchmark's rows): a training step, the encoders' forward."""

    shapes: Shapes

    @property
    def video_tokens(self) -> int:
        return self.shapes.video_tokens

    def train(self, batch: int, ids: Tensor) -> dict[str, int]:
        return train_step_flops(self.shapes, batch, kept_words(ids))

    def video(self, batch: int) -> int:
        return get_backbone(self.shapes.backbone).video_flops(self.shapes, batch)[0]

    def text(self, batch: int, ids: Tensor) -> int:
        return get_backbone(self.shapes.backbone).text_flops(self.shapes, batch, kept_words(ids))[0]


def model_flops(model: Any, frames: int) -> DGLFlops | DGLBlipFlops:
    """The counts of a built model at ``frames`` frames: DGL's, or DGL-BLIP's (its objective names it)."""
    return DGLBlipFlops.of(model, frames) if model.objective == "blip_itc_itm" else DGLFlops(Shapes.of(model, frames))
