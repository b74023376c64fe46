"""The tiny-backbone recipe: every setting that determines the weights, its checks, and the CLIP shapes it gives
(models of other backbones take their shapes from the same fields: preprocess/tiny_backbone/backbones.py)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from models.pretrained import CLIPConfig

RECIPE_VERSION = 1  # bump when the training procedure changes, so cached files are retrained
VOCAB_SIZE = 49408  # OpenAI's BPE vocabulary, so models.tokenizer's ids index the embedding
HEAD_WIDTH = 64  # the loader infers heads as width // 64
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the weights; the cache key is this whole record."""

    steps: int = 900
    batch_size: int = 128
    seed: int = 0
    width: int = 128  # both towers
    layers: int = 3  # both towers
    resolution: int = 32
    patch: int = 8
    context: int = 32
    embed_dim: int = 128
    render_size: int = 64  # stills drawn at this size, then resized like video frames (0: draw at resolution)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.1  # fraction of the steps
    eval_size: int = 512
    # Video captions per step for the text-only paraphrase term (0: stills only). Half the batch are
    # time-reversed twins of the other half, so the text tower learns to tell "left to right" from
    # "right to left" without ever seeing a moving image.
    caption_batch: int = 64

    def clip_config(self) -> CLIPConfig:
        grid = self.resolution // self.patch
        return CLIPConfig(
            embed_dim=self.embed_dim, image_resolution=self.resolution, vision_layers=self.layers,
            vision_width=self.width, vision_heads=self.width // HEAD_WIDTH, vision_patch_size=self.patch,
            grid_size=grid, context_length=self.context, vocab_size=VOCAB_SIZE, text_width=self.width,
            text_heads=self.width // HEAD_WIDTH, text_layers=self.layers,
        )

    def validate(self) -> None:
        if self.width < HEAD_WIDTH or self.width % HEAD_WIDTH:
            raise ValueError(f"width must be a positive multiple of {HEAD_WIDTH} (heads are width/64), got {self.width}")
        if self.resolution % self.patch:
            raise ValueError(f"resolution {self.resolution} is not a multiple of patch {self.patch}")
        if min(self.steps, self.batch_size, self.layers, self.embed_dim, self.eval_size) < 1 or self.batch_size < 2:
            raise ValueError("--steps, --layers, --embed_dim, --eval_size must be >= 1 and --batch_size >= 2")
        if self.context < 8:
            raise ValueError(f"context must be >= 8 tokens, got {self.context}")
        if self.caption_batch < 0 or self.caption_batch % 2:
            raise ValueError(f"caption_batch must be an even number >= 0 (clips come in twin pairs), got {self.caption_batch}")
        if self.render_size and self.render_size < self.resolution:
            raise ValueError("render_size must be 0 or >= resolution")


DEFAULT = Recipe()
QUICK = Recipe(steps=400, batch_size=64, layers=2, embed_dim=64, eval_size=256, caption_batch=32)


def cache_key(recipe: Recipe, backbone_key: Mapping[str, object] | None = None) -> dict:
    """What a cached weight file must have been trained with to be reused: the procedure's version, the recipe
    and what names the backbone (nothing for CLIP, whose keys predate the other backbones and stay valid)."""
    return {"recipe_version": RECIPE_VERSION, **asdict(recipe), **(backbone_key or {})}
