"""The one way to build a model: `create_model` (backbone name + weights -> model, tokenizer, preprocessing),
and `load_dgl`, which builds a ready DGL through it from either checkpoint kind, without argparse.

Our compact checkpoints carry their DGL config (with the backbone's registry name) and the backbone's file;
official ``ckpt.pth.tar`` files carry the full CLIP but no config, so its sizes are read from the tensors'
shapes (official flags fill what shapes cannot tell).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .backbone import DEFAULT_BACKBONE
from .backbones import Tokenizer, get_backbone
from .baseline import MeanPoolCLIP
from .checkpoint import (
    backbone_state_from_official, is_compact_checkpoint, load_compact_state, load_official_state, official_state,
)
from .checkpoint_file import read_checkpoint
from .blip.dgl_model import DGLBlipModel
from .dgl import DGL, DGLConfig
from .prompts import PROMPT_GENERATORS

BASELINES = ("meanp",)
# DGLConfig.model -> the class built on the backbone (both take (backbone, config)).
MODELS = {"dgl": DGL, "dgl_blip": DGLBlipModel}

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(DGLConfig))
# Compact checkpoints fix every size; only these may differ from the stored config (T: linear variant only).
COMPACT_OVERRIDABLE = ("visual_output_type", "max_frames")


@dataclass(frozen=True)
class Preprocess:
    """What frames must be for this model: ``resolution`` px squares, normalised with ``mean``/``std`` (RGB, on
    [0, 1] pixels). The model normalises uint8 frames itself; the loaders read the resolution from here."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resolution: int


class CreatedModel(NamedTuple):
    model: DGL | DGLBlipModel | MeanPoolCLIP
    tokenizer: Tokenizer | None  # None: the backbone's vocabulary is a file beside weights that came from memory
    preprocess: Preprocess
    weights: Path | None  # the backbone's file (None: built from weights in memory)


def create_model(
    backbone: str = DEFAULT_BACKBONE,
    pretrained: str | os.PathLike | Mapping[str, torch.Tensor] = "ViT-B/32",
    pretrained_dir: str | os.PathLike | None = None,
    dgl_config: DGLConfig | None = None,
    baseline: str | None = None,
    activation: str | None = None,
    source: str = "<state dict>",
    backbone_config: Any = None,
    image_resolution: int | None = None,
) -> CreatedModel:
    """The frozen ``backbone`` (a `models.backbones.BACKBONES` name) from ``pretrained`` (a name or path its
    entry resolves, looked up in ``pretrained_dir``; or weights already in memory, named ``source`` in errors,
    built as ``backbone_config`` says or, without one, as their shapes say),
    with the model of ``dgl_config`` (``MODELS[dgl_config.model]``; default: DGL of the official sizes) on top,
    or the zero-shot ``baseline``
    (``"meanp"``). Returns the model (CPU, as built), its tokenizer, its preprocessing and the weights' file.
    ``activation``: --clip_activation, for files that do not record theirs. ``image_resolution``
    (--image_resolution): frames of another size than the weights', for a backbone whose entry can ``resize``.
    """
    entry = get_backbone(backbone)
    if dgl_config is not None and dgl_config.backbone != backbone:
        raise ValueError(f"the DGL config is for backbone {dgl_config.backbone!r}, not {backbone!r} (--backbone)")
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if isinstance(pretrained, Mapping):
        weights, net = None, entry.from_state_dict(pretrained, source, backbone_config)
    else:
        weights = entry.resolve(str(pretrained), pretrained_dir)
        net = entry.load(weights, activation)
    native = net.config.image_resolution
    if image_resolution is not None and image_resolution != native:
        if entry.resize is None:
            name = source if weights is None else weights
            raise ValueError(f"--image_resolution {image_resolution}: the backbone {name} takes {native} px frames; "
                             "drop the flag or pass that value")
        net = entry.resize(net, image_resolution)
    config = dgl_config or DGLConfig(backbone=backbone)
    model = MeanPoolCLIP(net) if baseline else MODELS[config.model](net, config)
    if not baseline and config.train_backbone:
        model.clip.requires_grad_(True)  # --freeze_clip 0
    preprocess = Preprocess(entry.mean, entry.std, net.config.image_resolution)
    return CreatedModel(model, entry.tokenizer(net), preprocess, weights)


def official_config_from_state(
    state: dict[str, torch.Tensor], source: str = "<checkpoint>", **overrides: Any
) -> DGLConfig:
    """DGL sizes of an official checkpoint's (``module.``-stripped) state: the overrides, the rest from the
    tensors' shapes (prompt layers, lengths; T of the transformer variant) or the official defaults."""
    _check_fields(overrides)
    o = {k: v for k, v in overrides.items() if v is not None}
    width = state["clip.visual.prompt_embeddings"].shape[-1]  # the global prompts: DGL's own, whatever the backbone
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
        backbone=o.get("backbone") or DEFAULT_BACKBONE,  # official DGL checkpoints are OpenAI CLIP
    )


def load_dgl(
    checkpoint: str | os.PathLike,
    pretrained_clip_name: str | None = None,
    pretrained_dir: str | os.PathLike | None = None,
    **config_overrides: Any,
) -> DGL | DGLBlipModel:
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
        model = create_model(config.backbone, pretrained_clip_name, pretrained_dir, config).model
        load_official_state(model, state, checkpoint, check_backbone=True)
        return model
    return model_from_official_state(state, config, checkpoint)


def model_from_official_state(state: dict[str, torch.Tensor], config: DGLConfig, path: str | os.PathLike) -> DGL:
    """CLIP and DGL from an official checkpoint's (stripped) state alone: it carries the full frozen CLIP."""
    prefix = get_backbone(config.backbone).official_prefix
    model = create_model(config.backbone, backbone_state_from_official(state, prefix), dgl_config=config, source=str(path)).model
    load_official_state(model, state, path, check_backbone=False)
    return model


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
    resolution = backbone.get("config", {}).get("image_resolution")  # as trained (BLIP may run resized)
    model = create_model(config.backbone, name, clip_dir, config, activation=activation,
                         image_resolution=resolution).model
    load_compact_state(model, ckpt, source=source)
    return model


def _check_fields(overrides: dict) -> None:
    unknown = sorted(set(overrides) - set(CONFIG_FIELDS))
    if unknown:
        raise TypeError(f"unknown DGL config override(s) {unknown}; known: {CONFIG_FIELDS}")
