"""FLOPs of one DGL training step: the backbone's (registry entry, models/flops.py) plus the registered
prompt generator's (its ``flops`` method) plus the logits."""
from __future__ import annotations

from .backbones import get_backbone
from .flops import Shapes
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
