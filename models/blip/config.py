"""The sizes of a BLIP retrieval model, flat and named like ``CLIPConfig`` so code that reads CLIP's sizes reads
these too; the BLIP-only fields (layer-norm eps, MLP widths, activations, cross-attention) follow."""
from __future__ import annotations

from dataclasses import dataclass

ACTIVATION_NAMES = ("gelu", "gelu_tanh", "quick_gelu")  # "gelu" is the exact (erf) GELU both BLIP towers use


@dataclass(frozen=True)
class BlipConfig:
    embed_dim: int  # the shared ITC space (vision_proj / text_proj outputs), 256 in BLIP's releases
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_heads: int
    vision_patch_size: int
    grid_size: int
    context_length: int  # BERT's position table (512); captions are cut much shorter by the tokenizer
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    vision_mlp_width: int
    text_mlp_width: int
    vision_eps: float
    text_eps: float
    vision_activation: str = "gelu"
    text_activation: str = "gelu"
    cross_attention: bool = True  # text layers hold the cross-attention used in ITM mode

    def __post_init__(self):
        for tower, width, heads in (("vision", self.vision_width, self.vision_heads),
                                    ("text", self.text_width, self.text_heads)):
            if heads < 1 or width % heads:
                raise ValueError(f"{tower} width {width} is not divisible by {heads} heads")
        for act in (self.vision_activation, self.text_activation):
            if act not in ACTIVATION_NAMES:
                raise ValueError(f"activation must be one of {ACTIVATION_NAMES}, got {act!r}")
        if self.grid_size * self.vision_patch_size != self.image_resolution:
            raise ValueError(f"grid {self.grid_size} x patch {self.vision_patch_size} "
                             f"!= resolution {self.image_resolution}")
