"""Hugging Face and open_clip CLIP files: their names mapped to OpenAI's, and what their configs record.

Tensor shapes give every size of a ViT CLIP except two facts: the attention heads per tower and the MLP
activation (QuickGELU in OpenAI's models, GELU in most open_clip ones). Hugging Face folders record both in
``config.json``; open_clip in ``open_clip_config.json`` (its ``model_cfg``). Nothing here guesses: a fact no
file records is left ``None`` for the caller to take from a flag or to refuse.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

HF_CONFIG_FILE = "config.json"
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"
OPEN_CLIP_PREFIX = "open_clip"  # open_clip's hub files: open_clip_pytorch_model.bin, open_clip_model.safetensors
# Weight files looked for when a folder is given, in this order.
WEIGHT_FILE_NAMES = (
    "model.safetensors", "pytorch_model.bin",
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
)
ACTIVATION_NAMES = ("quick_gelu", "gelu")
NEEDS_VIT = "DGL needs a ViT CLIP (OpenAI, Hugging Face CLIPModel or open_clip ViT)"
_LAYER_NORM_EPS = 1e-5  # CLIP's; our LayerNorm uses it

# Hugging Face transformers' CLIPConfig defaults, for fields a saved config.json leaves out.
_HF_DEFAULTS = {
    "vision_config": {"num_attention_heads": 12, "hidden_act": "quick_gelu", "layer_norm_eps": _LAYER_NORM_EPS},
    "text_config": {"num_attention_heads": 8, "hidden_act": "quick_gelu", "layer_norm_eps": _LAYER_NORM_EPS},
}
_HF_NAMES = {
    "logit_scale": "logit_scale",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: transformers' spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
}
_HF_PROJECTIONS = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}  # Linear: [out, in]
_HF_BLOCK_NAMES = {
    "self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
}
_HF_BLOCK = re.compile(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_HF_TOWER_PREFIX = {"vision": "visual.transformer", "text": "transformer"}
_HF_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")

# open_clip model_cfg options our ViT does not implement, with the value that means "off".
_OPEN_CLIP_VISION_DEFAULTS = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "final_ln_after_pool": False,
    "pool_type": "tok", "pos_embed_type": "learnable", "norm_kwargs": None, "act_kwargs": None, "timm_model_name": None,
}
_OPEN_CLIP_TEXT_DEFAULTS = {
    "ls_init_value": None, "embed_cls": False, "final_ln_after_pool": False, "pool_type": "argmax",
    "proj_bias": False, "norm_kwargs": None, "act_kwargs": None, "hf_model_name": None, "no_causal_mask": False,
}


class CLIPLoadError(ValueError):
    """A weight file that exists but is not a readable ViT CLIP."""


@dataclass(frozen=True)
class RecordedSettings:
    """What a file's configuration fixes beyond the tensor shapes; None where it records nothing."""

    vision_heads: int | None = None
    text_heads: int | None = None
    activation: str | None = None
    source: str = "width / 64, OpenAI's rule, as no config records them"  # named in messages


# ----------------------------------------------------------------------------------------- Hugging Face


def is_hf_clip(keys: Sequence[str]) -> bool:
    return any(key.startswith(("vision_model.", "text_model.")) for key in keys)


def hf_to_openai(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Rename a transformers CLIPModel state dict to OpenAI's names; q/k/v are stacked into ``in_proj``."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        block = _HF_BLOCK.fullmatch(key)
        if key.endswith("embeddings.position_ids"):  # an index buffer older transformers saved
            continue
        if key in _HF_NAMES:
            out[_HF_NAMES[key]] = value
        elif key in _HF_PROJECTIONS:
            out[_HF_PROJECTIONS[key]] = value.t()
        elif block and block[3] in _HF_QKV:
            prefix = f"{_HF_TOWER_PREFIX[block[1]]}.resblocks.{block[2]}.attn.in_proj_{block[4]}"
            qkv.setdefault((prefix, block[4]), {})[block[3]] = value
        elif block and block[3] in _HF_BLOCK_NAMES:
            out[f"{_HF_TOWER_PREFIX[block[1]]}.resblocks.{block[2]}.{_HF_BLOCK_NAMES[block[3]]}.{block[4]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CLIPLoadError(f"{path}: Hugging Face tensors that a CLIPModel does not have: {unknown[:6]}; {NEEDS_VIT}")
    for (name, _), parts in qkv.items():
        missing = [part for part in _HF_QKV if part not in parts]
        if missing:
            raise CLIPLoadError(f"{path}: {name} lacks {missing}")
        out[name] = torch.cat([parts[part] for part in _HF_QKV])
    return out


def hf_settings(config_file: Path) -> RecordedSettings:
    """Heads and activation from a transformers CLIP ``config.json``; anything but a CLIP is refused."""
    config = _read_json(config_file)
    if config.get("model_type") != "clip":
        raise CLIPLoadError(f"{config_file}: model_type {config.get('model_type')!r}, not 'clip'; {NEEDS_VIT}")
    towers = {name: {**_HF_DEFAULTS[name], **(config.get(name) or {})} for name in _HF_DEFAULTS}
    acts = {tower["hidden_act"] for tower in towers.values()}
    if len(acts) != 1 or not acts <= set(ACTIVATION_NAMES):
        raise CLIPLoadError(f"{config_file}: hidden_act {sorted(acts)}; supported: one of {ACTIVATION_NAMES} for both towers")
    eps = {tower["layer_norm_eps"] for tower in towers.values()}
    if eps != {_LAYER_NORM_EPS}:
        raise CLIPLoadError(f"{config_file}: layer_norm_eps {sorted(eps)}; CLIP's (and ours) is {_LAYER_NORM_EPS}")
    return RecordedSettings(
        vision_heads=int(towers["vision_config"]["num_attention_heads"]),
        text_heads=int(towers["text_config"]["num_attention_heads"]),
        activation=acts.pop(),
        source=str(config_file),
    )


# ----------------------------------------------------------------------------------------- open_clip


def is_open_clip_file(path: Path) -> bool:
    return path.name.startswith(OPEN_CLIP_PREFIX)


def open_clip_settings(config_file: Path) -> RecordedSettings:
    """Heads and activation from open_clip's ``open_clip_config.json``; options our ViT lacks are refused."""
    model_cfg = _read_json(config_file).get("model_cfg")
    if not isinstance(model_cfg, Mapping):
        raise CLIPLoadError(f"{config_file}: no 'model_cfg' object, so not open_clip's config file")
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    if not isinstance(vision.get("layers", 12), int):
        raise CLIPLoadError(f"{config_file}: a ResNet image tower (vision_cfg.layers {vision['layers']}); {NEEDS_VIT}")
    unsupported = [
        f"{tower}.{key}={cfg[key]!r}"
        for tower, cfg, defaults in (("vision_cfg", vision, _OPEN_CLIP_VISION_DEFAULTS), ("text_cfg", text, _OPEN_CLIP_TEXT_DEFAULTS))
        for key, off in defaults.items()
        if cfg.get(key, off) != off
    ]
    if unsupported:
        raise CLIPLoadError(f"{config_file}: options DGL's CLIP does not implement: {', '.join(unsupported)}; {NEEDS_VIT}")
    return RecordedSettings(
        vision_heads=int(vision.get("width", 768)) // int(vision.get("head_width", 64)),
        text_heads=int(text.get("heads", 8)),
        activation="quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
        source=str(config_file),
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CLIPLoadError(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(data, dict):
        raise CLIPLoadError(f"{path}: holds a JSON {type(data).__name__}, not an object")
    return data
