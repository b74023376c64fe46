"""The two released layouts of BLIP retrieval weights, mapped onto ``BlipRetrieval``'s names, and their sizes.

- Hugging Face ``BlipForImageTextRetrieval`` (``vision_model.*``, ``text_encoder.*``): sizes from the tensors'
  shapes; heads, layer-norm eps and activations from ``config.json`` (a field it leaves out takes
  transformers' default for it, as transformers itself does when it loads the folder).
- The original release (``model_*_retrieval_*.pth``: ``visual_encoder.*``, ``text_encoder.*``, ``temp``, plus
  momentum copies ``*_m`` and ITC queues): sizes from shapes; what shapes cannot tell comes from BLIP's own
  configs and is an assumption of this format (heads = width / 64, ViT eps 1e-6, BERT eps 1e-12, exact GELU),
  each overridable.
Anything else (captioning, VQA or pretraining files with a text decoder, other models) is refused.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .config import BlipConfig


class BlipLoadError(ValueError):
    """A file that is not BLIP retrieval weights, or a BLIP file with missing or unknown tensors."""


EXPECTED = ("a Hugging Face BlipForImageTextRetrieval folder (Salesforce/blip-itm-*) or an original BLIP "
            "retrieval file (model_base_retrieval_coco.pth, model_large_retrieval_coco.pth)")

# (pattern, replacement) per layout, first match wins; a key no rule matches is refused.
HF_RULES = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual.patch_embed."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual.blocks.\1.ln_1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual.blocks.\1.ln_2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.(weight|bias)$", r"visual.blocks.\1.attn.in_proj_\2"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual.blocks.\1.attn.out_proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.", r"visual.blocks.\1.mlp.\2."),
    (r"^vision_model\.post_layernorm\.", "visual.norm."),
    (r"^(text_encoder\.(?:embeddings|encoder)\.|vision_proj\.|text_proj\.|itm_head\.)", r"\1"),
]
ORIGINAL_RULES = [
    (r"^visual_encoder\.cls_token$", "visual.cls_token"),
    (r"^visual_encoder\.pos_embed$", "visual.pos_embed"),
    (r"^visual_encoder\.patch_embed\.proj\.", "visual.patch_embed."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"visual.blocks.\1.ln_1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"visual.blocks.\1.ln_2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"visual.blocks.\1.attn.in_proj_\2"),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"visual.blocks.\1.attn.out_proj."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.", r"visual.blocks.\1.mlp.\2."),
    (r"^visual_encoder\.norm\.", "visual.norm."),
    (r"^(text_encoder\.(?:embeddings|encoder)\.|vision_proj\.|text_proj\.|itm_head\.|temp$)", r"\1"),
]
DERIVED = re.compile(r"(^|\.)position_ids$")  # arange buffers some writers save; rebuilt, never read
MOMENTUM = re.compile(r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m)\.|^(image|text|idx|ptr)_queue$")
REQUIRED = ("visual.patch_embed.weight", "visual.pos_embed", "text_encoder.embeddings.word_embeddings.weight",
            "vision_proj.weight", "text_proj.weight", "itm_head.weight")

# transformers' BlipVisionConfig / BlipTextConfig defaults (configuration_blip.py), for fields a saved
# config.json leaves out.
HF_VISION_DEFAULTS = {"num_attention_heads": 12, "layer_norm_eps": 1e-5, "hidden_act": "gelu"}
HF_TEXT_DEFAULTS = {"num_attention_heads": 8, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}

# BLIP's configs (models/blip.py create_vit, configs/med_config.json): what an original file's shapes cannot say.
ORIGINAL_HEAD_WIDTH = 64
ORIGINAL_VISION_EPS = 1e-6
ORIGINAL_TEXT_EPS = 1e-12


@dataclass(frozen=True)
class Overrides:
    """Explicit values for what an original file's shapes cannot tell (None: BLIP's own configs)."""

    vision_heads: int | None = None
    text_heads: int | None = None
    vision_eps: float | None = None
    text_eps: float | None = None


def refusal(keys: Mapping[str, object], source: str) -> str | None:
    """One line naming what ``source`` is and what was expected, or None when it may be retrieval weights."""
    names = list(keys)
    if any(".text_decoder." in f".{k}" for k in names):
        return (f"{source} is a BLIP captioning, VQA or pretraining checkpoint (it has a text decoder); "
                f"expected {EXPECTED}")
    if not any(k.startswith(("visual_encoder.", "vision_model.")) for k in names):
        return f"{source} holds no BLIP vision tower (first keys: {names[:3]}); expected {EXPECTED}"
    if not any(k.startswith("itm_head.") for k in names) or not any(k.startswith("vision_proj.") for k in names):
        return f"{source} is a BLIP model without the retrieval heads (itm_head, vision_proj); expected {EXPECTED}"
    return None


def split_original(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model tensors, momentum encoders and queues) of an original retrieval state dict."""
    model = {k: v for k, v in state.items() if not MOMENTUM.search(k)}
    return model, {k: v for k, v in state.items() if MOMENTUM.search(k)}


def rename(state: Mapping[str, torch.Tensor], rules: list[tuple[str, str]], source: str,
           required: tuple[str, ...] = REQUIRED) -> dict[str, torch.Tensor]:
    """``state`` under our names; derived buffers dropped, the [1, ..] CLS and position tables squeezed."""
    out, unknown = {}, []
    for key, value in state.items():
        if DERIVED.search(key):
            continue
        for pattern, replacement in rules:
            new, hits = re.subn(pattern, replacement, key)
            if hits:
                if new == "visual.cls_token":
                    value = value.reshape(-1)
                elif new == "visual.pos_embed":
                    value = value.reshape(-1, value.shape[-1])
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise BlipLoadError(f"{source}: {len(unknown)} tensors no BLIP retrieval model has, e.g. {unknown[:3]}; "
                            f"expected {EXPECTED}")
    missing = [k for k in required if k not in out]
    if missing:
        raise BlipLoadError(f"{source}: missing {missing}; expected {EXPECTED}")
    return out


MOMENTUM_ENCODERS = re.compile(r"^(visual_encoder|text_encoder|vision_proj|text_proj)_m\.")


def momentum_encoders(momentum: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """An original file's momentum encoders (``visual_encoder_m.*``, ``text_encoder_m.*``, ``vision_proj_m.*``,
    ``text_proj_m.*``) under ``BlipRetrieval``'s names: every tensor but ``itm_head`` and ``temp``."""
    encoders = {MOMENTUM_ENCODERS.sub(r"\1.", k): v for k, v in momentum.items() if MOMENTUM_ENCODERS.match(k)}
    return rename(encoders, ORIGINAL_RULES, source, required=())


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise BlipLoadError(f"layers {sorted(found)} are not numbered 0..{len(found) - 1}")
    return len(found)


def shape_config(state: Mapping[str, torch.Tensor], vision_heads: int, text_heads: int, vision_eps: float,
                 text_eps: float, vision_act: str = "gelu", text_act: str = "gelu") -> BlipConfig:
    """The sizes of our-named ``state``: widths, depths, patch, grid, vocabulary and MLP widths from shapes."""
    patch_w = state["visual.patch_embed.weight"]
    positions = state["visual.pos_embed"].shape[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise BlipLoadError(f"{positions} vision positions are not 1 + a square grid")
    words = state["text_encoder.embeddings.word_embeddings.weight"]
    return BlipConfig(
        embed_dim=state["vision_proj.weight"].shape[0], image_resolution=grid * patch_w.shape[-1],
        vision_layers=_count(state, r"visual\.blocks\.(\d+)\."), vision_width=patch_w.shape[0],
        vision_heads=vision_heads, vision_patch_size=patch_w.shape[-1], grid_size=grid,
        context_length=state["text_encoder.embeddings.position_embeddings.weight"].shape[0],
        vocab_size=words.shape[0], text_width=words.shape[1], text_heads=text_heads,
        text_layers=_count(state, r"text_encoder\.encoder\.layer\.(\d+)\."),
        vision_mlp_width=state["visual.blocks.0.mlp.fc1.weight"].shape[0],
        text_mlp_width=state["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0],
        vision_eps=vision_eps, text_eps=text_eps, vision_activation=vision_act, text_activation=text_act,
        cross_attention="text_encoder.encoder.layer.0.crossattention.self.query.weight" in state,
    )


def hf_config(state: Mapping[str, torch.Tensor], config: Mapping, source: str) -> BlipConfig:
    """Sizes of an HF-layout ``state`` (already renamed) with heads, eps and activations from ``config.json``."""
    vision = {**HF_VISION_DEFAULTS, **config.get("vision_config", {})}
    text = {**HF_TEXT_DEFAULTS, **config.get("text_config", {})}
    for tower in (vision, text):
        if tower["hidden_act"] not in HF_ACTIVATIONS:
            raise BlipLoadError(f"{source}: hidden_act {tower['hidden_act']!r} is not one of {sorted(HF_ACTIVATIONS)}")
    return shape_config(state, vision["num_attention_heads"], text["num_attention_heads"],
                        vision["layer_norm_eps"], text["layer_norm_eps"],
                        HF_ACTIVATIONS[vision["hidden_act"]], HF_ACTIVATIONS[text["hidden_act"]])


def original_config(state: Mapping[str, torch.Tensor], overrides: Overrides, source: str) -> BlipConfig:
    """Sizes of an original-layout ``state`` (already renamed); BLIP's configs for heads and eps unless overridden."""
    heads = {}
    for tower, width, given in (("vision", state["visual.patch_embed.weight"].shape[0], overrides.vision_heads),
                                ("text", state["text_encoder.embeddings.word_embeddings.weight"].shape[1],
                                 overrides.text_heads)):
        if given is None and (width < ORIGINAL_HEAD_WIDTH or width % ORIGINAL_HEAD_WIDTH):
            raise BlipLoadError(f"{source}: {tower} width {width} is not a multiple of BLIP's head width "
                                f"{ORIGINAL_HEAD_WIDTH}; give its head count ({tower}_heads)")
        heads[tower] = given or width // ORIGINAL_HEAD_WIDTH
    return shape_config(
        state, heads["vision"], heads["text"],
        overrides.vision_eps if overrides.vision_eps is not None else ORIGINAL_VISION_EPS,
        overrides.text_eps if overrides.text_eps is not None else ORIGINAL_TEXT_EPS,
    )
