"""Build a ready DGL from either checkpoint kind, without argparse.

Our compact checkpoints carry their DGL config and backbone name; official ``ckpt.pth.tar`` files carry the
full CLIP but no config, so its sizes are read from the tensors' shapes (official flags fill what shapes
cannot tell).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from .checkpoint_file import read_checkpoint
from .checkpoint import is_compact_checkpoint, load_compact_state, load_official_state, model_from_official_state, official_state
from .clip import CLIP
from .dgl import DGL, DGLConfig
from .prompts import PROMPT_GENERATORS

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(DGLConfig))
# Compact checkpoints fix every size; only these may differ from the stored config (T: linear variant only).
COMPACT_OVERRIDABLE = ("visual_output_type", "max_frames")


def official_config_from_state(
    state: dict[str, torch.Tensor], source: str = "<checkpoint>", **overrides: Any
) -> DGLConfig:
    """DGL sizes of an official checkpoint's (``module.``-stripped) state: the overrides, the rest from the
    tensors' shapes (prompt layers, lengths; T of the transformer variant) or the official defaults."""
    _check_fields(overrides)
    o = {k: v for k, v in overrides.items() if v is not None}
    width = state["clip.visual.conv1.weight"].shape[0]
    variant = o.get("shared_latent_space") or next(
        (name for name, gen in PROMPT_GENERATORS.items() if gen.official_marker in state), None)
    if variant is None or PROMPT_GENERATORS[variant].official_marker not in state:
        raise ValueError(f"{source}: no prompt table of a known shared latent space ({sorted(PROMPT_GENERATORS)})")
    num_global = o.get("global_prompt_length") or state["clip.visual.prompt_embeddings"].shape[-2]
    text_len = o.get("text_prompt_length") or 8
    try:
        sizes = PROMPT_GENERATORS[variant].official_sizes(
            state, width, {**o, "text_prompt_length": text_len, "global_prompt_length": num_global})
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    layers, local, frames = o.get("prompt_layers") or sizes["prompt_layers"], sizes["local_prompt_length"], sizes["max_frames"]
    return DGLConfig(
        shared_latent_space=variant,
        max_frames=frames,
        text_prompt_length=text_len,
        local_prompt_length=local,
        global_prompt_length=num_global,
        prompt_layers=layers,
        visual_output_type=o.get("visual_output_type") or "global_prompt0",
    )


def load_dgl(
    checkpoint: str | os.PathLike,
    pretrained_clip_name: str | None = None,
    pretrained_dir: str | os.PathLike | None = None,
    **config_overrides: Any,
) -> DGL:
    """A DGL (CPU, train mode as built) from our compact checkpoint or an official one.

    ``config_overrides`` take `DGLConfig` field names; None means "not given". ``pretrained_clip_name``
    defaults to the compact checkpoint's backbone; for an official checkpoint it is optional and, when
    given, must equal the checkpoint's own copy of CLIP.
    """
    _check_fields(config_overrides)
    overrides = {k: v for k, v in config_overrides.items() if v is not None}
    ckpt = read_checkpoint(checkpoint)
    if is_compact_checkpoint(ckpt):
        return _compact_model(ckpt, str(checkpoint), pretrained_clip_name, pretrained_dir, overrides)
    state = official_state(ckpt, checkpoint)  # raises for anything else
    config = official_config_from_state(state, str(checkpoint), **overrides)
    if pretrained_clip_name:  # checked against the checkpoint's own copy of CLIP
        model = DGL(CLIP.from_pretrained(pretrained_clip_name, pretrained_dir), config)
        load_official_state(model, state, checkpoint, check_backbone=True)
        return model
    return model_from_official_state(state, config, checkpoint)


def _compact_model(ckpt: dict, source: str, clip_name: str | None, clip_dir: str | os.PathLike | None, overrides: dict) -> DGL:
    config = DGLConfig(**ckpt["dgl_config"])
    fixed = {k: v for k, v in overrides.items() if k not in COMPACT_OVERRIDABLE and v != getattr(config, k)}
    if fixed:
        raise ValueError(f"{source}: {fixed} differ from the checkpoint's own config {config.to_dict()}, which fixes them")
    frames = overrides.get("max_frames", config.max_frames)
    if frames != config.max_frames and PROMPT_GENERATORS[config.shared_latent_space].frame_specific:
        raise ValueError(
            f"max_frames {frames}: this transformer-variant checkpoint has frame-specific prompts "
            f"for exactly {config.max_frames} frames"
        )
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if k in COMPACT_OVERRIDABLE})
    backbone = ckpt.get("backbone", {})
    name = clip_name or backbone.get("name") or backbone.get("path")
    if not name:
        raise ValueError(f"{source}: no backbone name inside; pass --pretrained_clip_name")
    activation = backbone.get("config", {}).get("activation")  # as trained; absent in older checkpoints: the file's
    model = DGL(CLIP.from_pretrained(name, clip_dir, activation), config)
    load_compact_state(model, ckpt, source=source)
    return model


def _check_fields(overrides: dict) -> None:
    unknown = sorted(set(overrides) - set(CONFIG_FIELDS))
    if unknown:
        raise TypeError(f"unknown DGL config override(s) {unknown}; known: {CONFIG_FIELDS}")
