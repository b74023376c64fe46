"""A CLIP file's weights together with the configuration that builds the model for them.

Sizes come from the tensor shapes (`infer_clip_config`); the attention heads and the activation come from the
file's own config where it has one (Hugging Face ``config.json``, open_clip ``open_clip_config.json``), from
OpenAI's conventions for OpenAI's format, or from the ``--clip_activation`` flag; conflicts are errors.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from .clip_formats import (
    ACTIVATION_NAMES,
    HF_CONFIG_FILE,
    OPEN_CLIP_CONFIG_FILE,
    CLIPLoadError,
    RecordedSettings,
    hf_settings,
    is_open_clip_file,
    open_clip_settings,
)
from .pretrained import CLIPConfig, infer_clip_config, read_clip_file


def load_clip(path: str | os.PathLike, activation: str | None = None) -> tuple[dict[str, torch.Tensor], CLIPConfig]:
    """Weights (`load_clip_state_dict`) and the CLIP they make: sizes from shapes, heads and activation from the
    file's config (Hugging Face ``config.json``, open_clip ``open_clip_config.json``) or, for OpenAI's format,
    OpenAI's (width / 64; QuickGELU unless ``activation`` says otherwise). ``activation`` (--clip_activation)
    is needed for an open_clip file without its config, and must agree with a config that records one.
    """
    path = Path(path).expanduser()
    state_dict, was_hf = read_clip_file(path)
    recorded = recorded_settings(path, was_hf)
    if activation is not None and activation not in ACTIVATION_NAMES:
        raise ValueError(f"--clip_activation must be one of {ACTIVATION_NAMES}, got {activation!r}")
    if activation and recorded.activation and activation != recorded.activation:
        raise CLIPLoadError(
            f"{path}: --clip_activation {activation} contradicts {recorded.source}, which says {recorded.activation}"
        )
    openai_format = not (was_hf or is_open_clip_file(path))
    chosen = activation or recorded.activation or ("quick_gelu" if openai_format else None)  # OpenAI's is QuickGELU
    if chosen is None:
        raise CLIPLoadError(
            f"{path}: an open_clip file does not record its activation (QuickGELU or GELU) and no "
            f"{OPEN_CLIP_CONFIG_FILE} lies beside it; put the model's {OPEN_CLIP_CONFIG_FILE} there or pass "
            f"--clip_activation quick_gelu|gelu (open_clip model names ending in -quickgelu, and OpenAI's weights, use quick_gelu)"
        )
    shapes = infer_clip_config(state_dict)
    config = replace(
        shapes,
        vision_heads=recorded.vision_heads or shapes.vision_heads,
        text_heads=recorded.text_heads or shapes.text_heads,
        activation=chosen,
    )
    for tower, width, heads in (("vision", config.vision_width, config.vision_heads), ("text", config.text_width, config.text_heads)):
        if heads < 1 or width % heads:
            raise CLIPLoadError(
                f"{path}: {heads} {tower} attention heads (from {recorded.source}) do not divide the width {width}"
            )
    return state_dict, config


def recorded_settings(path: Path, hf_names: bool) -> RecordedSettings:
    """What the config beside a weight file fixes (OpenAI's format has no config)."""
    if hf_names:
        config_file = path.parent / HF_CONFIG_FILE
        if not config_file.is_file():
            raise CLIPLoadError(
                f"{path}: Hugging Face CLIP weights need their {HF_CONFIG_FILE} beside them (it records the attention "
                f"heads and the activation); copy it from the same model repository into {path.parent}"
            )
        return hf_settings(config_file)
    if is_open_clip_file(path):
        config_file = path.parent / OPEN_CLIP_CONFIG_FILE
        return open_clip_settings(config_file) if config_file.is_file() else RecordedSettings()
    return RecordedSettings()
