"""What the benchmark measures on: random OpenAI-format CLIP weights of the preset shapes (DGL), or a random BLIP
of the preset ``BlipConfig`` (DGL-BLIP), and random captions.

Nothing is downloaded: a random state dict is built from the sizes and handed to ``create_model``, the path
every model takes (an official checkpoint's weights in memory go the same way).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from models.blip import BlipConfig, BlipRetrieval
from models.dgl import DGL, DGLConfig
from models.factory import create_model
from models.pretrained import CLIPConfig, expected_clip_keys

MODEL_PRESETS: dict[str, CLIPConfig] = {
    "B/32": CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                       vision_patch_size=32, grid_size=7, context_length=77, vocab_size=49408, text_width=512,
                       text_heads=8, text_layers=12),
    "B/16": CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                       vision_patch_size=16, grid_size=14, context_length=77, vocab_size=49408, text_width=512,
                       text_heads=8, text_layers=12),
    # For tests and smoke runs only: two heads in the vision tower, one in the text tower.
    "tiny": CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_heads=2,
                       vision_patch_size=8, grid_size=4, context_length=77, vocab_size=512, text_width=64,
                       text_heads=1, text_layers=2),
}
# DGL-BLIP's (``--model dgl_blip``): BLIP base (ViT-B/16, BERT-base with cross-attention; model_base_retrieval_coco's
# sizes and BLIP's eps) at the recipe's 224 px, and a tiny one for tests. Variants: the training modes.
BLIP_PRESETS: dict[str, BlipConfig] = {
    "blip-base": BlipConfig(embed_dim=256, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                            vision_patch_size=16, grid_size=14, context_length=512, vocab_size=30524, text_width=768,
                            text_heads=12, text_layers=12, vision_mlp_width=3072, text_mlp_width=3072,
                            vision_eps=1e-6, text_eps=1e-12),
    "blip-tiny": BlipConfig(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64, vision_heads=1,
                            vision_patch_size=8, grid_size=4, context_length=40, vocab_size=512, text_width=64,
                            text_heads=1, text_layers=2, vision_mlp_width=256, text_mlp_width=256, vision_eps=1e-6, text_eps=1e-12),
}


def variants(model_name: str) -> tuple[str, ...]:
    """What ``--variants`` picks from: DGL's latent spaces, or DGL-BLIP's training modes."""
    return ("full", "prompts") if model_name in BLIP_PRESETS else ("transformer", "linear")


def _block_shapes(width: int) -> dict[str, tuple[int, ...]]:
    return {
        "attn.in_proj_weight": (3 * width, width), "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width), "attn.out_proj.bias": (width,),
        "ln_1.weight": (width,), "ln_1.bias": (width,),
        "mlp.c_fc.weight": (4 * width, width), "mlp.c_fc.bias": (4 * width,),
        "mlp.c_proj.weight": (width, 4 * width), "mlp.c_proj.bias": (width,),
        "ln_2.weight": (width,), "ln_2.bias": (width,),
    }


def clip_state_dict_shapes(cfg: CLIPConfig) -> "OrderedDict[str, tuple[int, ...]]":
    """Every tensor of an OpenAI ViT CLIP state dict with its shape, in OpenAI's key order."""
    dv, dt, grid, patch = cfg.vision_width, cfg.text_width, cfg.grid_size, cfg.vision_patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (cfg.context_length, dt), "text_projection": (dt, cfg.embed_dim), "logit_scale": (),
        "visual.class_embedding": (dv,), "visual.positional_embedding": (grid * grid + 1, dv),
        "visual.proj": (dv, cfg.embed_dim), "visual.conv1.weight": (dv, 3, patch, patch),
        "visual.ln_pre.weight": (dv,), "visual.ln_pre.bias": (dv,),
        "visual.ln_post.weight": (dv,), "visual.ln_post.bias": (dv,),
        "token_embedding.weight": (cfg.vocab_size, dt), "ln_final.weight": (dt,), "ln_final.bias": (dt,),
    }
    for prefix, width, layers in (("visual.transformer", dv, cfg.vision_layers), ("transformer", dt, cfg.text_layers)):
        for i in range(layers):
            shapes.update({f"{prefix}.resblocks.{i}.{key}": shape for key, shape in _block_shapes(width).items()})
    return OrderedDict((key, shapes[key]) for key in expected_clip_keys(cfg))


def random_clip_state_dict(cfg: CLIPConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fp32 weights with CLIP-like scales: matrices N(0, 1/fan_in), LayerNorms identity, small biases."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in clip_state_dict_shapes(cfg).items():
        if key == "logit_scale":
            tensor = torch.tensor(math.log(100.0))
        elif key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            tensor = torch.ones(shape)
        elif key.endswith(".bias"):
            tensor = 0.02 * torch.randn(shape, generator=gen)
        elif key in ("token_embedding.weight", "positional_embedding"):
            tensor = 0.02 * torch.randn(shape, generator=gen)
        elif key in ("visual.class_embedding", "visual.positional_embedding"):
            tensor = cfg.vision_width**-0.5 * torch.randn(shape, generator=gen)
        else:  # weight matrices; fan_in is the input size (dim 0 for the right-multiplied projections)
            fan_in = shape[0] if key in ("text_projection", "visual.proj") else math.prod(shape[1:])
            tensor = fan_in**-0.5 * torch.randn(shape, generator=gen)
        out[key] = tensor
    return out


def random_captions(n: int, vocab_size: int, max_words: int = 32, min_len: int = 10, max_len: int = 15,
                    seed: int = 0) -> torch.Tensor:
    """``[n, max_words]`` ids: SOT, ``min_len..max_len`` random words, EOT (the largest id), zero padding."""
    gen = torch.Generator().manual_seed(seed)
    sot, eot = vocab_size - 2, vocab_size - 1
    ids = torch.zeros(n, max_words, dtype=torch.long)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen).clamp(max=max_words - 2)
    for row, length in enumerate(lengths.tolist()):
        ids[row, 0] = sot
        ids[row, 1 : 1 + length] = torch.randint(1, sot, (length,), generator=gen)
        ids[row, 1 + length] = eot
    return ids


def build_model(model_name: str, variant: str, frames: int, seed: int = 0) -> DGL:
    """A DGL of the given latent space on random CLIP weights of the preset ``model_name``; or DGL-BLIP of the
    given training mode (``full`` fine-tuning, ``prompts`` only) on a random BLIP of the preset."""
    torch.manual_seed(seed)
    if model_name in BLIP_PRESETS:
        cfg = BLIP_PRESETS[model_name]
        state_dict = BlipRetrieval(cfg).state_dict()
        config = DGLConfig(backbone="blip", model="dgl_blip", max_frames=frames, train_backbone=variant == "full")
    else:
        cfg = MODEL_PRESETS[model_name]
        state_dict = random_clip_state_dict(cfg, seed)  # its own generator: torch's stays seeded for the prompts
        config = DGLConfig(shared_latent_space=variant, max_frames=frames)
    return create_model(config.backbone, state_dict, dgl_config=config, source=f"random {model_name}",
                        backbone_config=cfg).model
