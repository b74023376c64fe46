"""Checkpoints: the official ``ckpt.pth.tar`` layout (read and write) and our compact format.

The official files hold the whole DDP-wrapped model (``module.clip.…``, ~160 M parameters) although only the
prompt tensors train; ours hold the trainable tensors, the configs, the backbone identity and the training
state for an exact resume.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from .checkpoint_file import CheckpointError, atomic_save, check_finite, read_checkpoint, tensor_hashes, verify_tensor_hashes
from .backbone import DEFAULT_BACKBONE, backbone_fingerprint
from .backbones import get_backbone
from .dgl import DGL
from .prompts import PROMPT_GENERATORS

COMPACT_FORMAT = "dgl-compact-v1"
_DDP_PREFIX = "module."


def official_names(model: DGL) -> dict[str, str]:
    """Our trainable parameter names -> the official state-dict names (without ``module.``)."""
    names = {"global_prompts": "clip.visual.prompt_embeddings"}
    names.update({f"prompt_generator.{ours}": theirs for ours, theirs in model.prompt_generator.official_names().items()})
    return names


def _strip_ddp(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(_DDP_PREFIX) :] if k.startswith(_DDP_PREFIX) else k: v for k, v in state_dict.items()}


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an official checkpoint, ``module.`` stripped."""
    return official_state(read_checkpoint(path), path)


def official_state(ckpt: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``module.``-stripped model state of an already loaded official checkpoint (``path`` names it in errors)."""
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.endswith("visual.prompt_embeddings") for k in state):
        raise ValueError(f"{path}: not an official DGL checkpoint (no 'module.clip.visual.prompt_embeddings' entry)")
    return _strip_ddp(state)


_OFFICIAL_DGL_PREFIXES = (
    "clip.visual.prompt_embeddings",
    "clip.visual.position_ids",
    "clip.unified_prompt",  # embedding and MLP of the transformer variant
    "clip.PromptTransformer.",
    "clip.visual_prompt_embedding",
    "clip.prefix_text_prompt_proj_layer.",
    "clip.postfix_text_prompt_proj_layer.",
)


def backbone_state_from_official(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The frozen backbone's weights inside an official checkpoint: the entries under ``prefix`` (its registry
    entry's ``official_prefix``) that are not DGL's own, with the prefix removed."""
    return {
        k[len(prefix) :]: v.float()
        for k, v in state.items()
        if k.startswith(prefix) and not k.startswith(_OFFICIAL_DGL_PREFIXES)
    }


def official_prefix(model: DGL) -> str:
    return get_backbone(model.config.backbone).official_prefix


def load_official_checkpoint(model: DGL, path: str | os.PathLike, check_backbone: bool = True) -> None:
    """Load an official checkpoint's DGL tensors into ``model`` (in place).

    With ``check_backbone`` the checkpoint's frozen CLIP weights must equal the model's (fp16-rounding
    tolerance): evaluating released prompts on another backbone is an error, not a silent mismatch.
    """
    load_official_state(model, read_official_checkpoint(path), path, check_backbone)


def load_official_state(model: DGL, state: dict[str, torch.Tensor], path: str | os.PathLike, check_backbone: bool) -> None:
    """``load_official_checkpoint`` on an already read state dict (``path`` only names it in errors)."""
    names = official_names(model)
    missing = [theirs for theirs in names.values() if theirs not in state]
    if missing:
        variant = model.config.shared_latent_space
        raise ValueError(f"{path}: missing {missing} for shared_latent_space={variant!r}; is it the other variant?")
    check_finite({theirs: state[theirs] for theirs in names.values()}, str(path))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ours, theirs in names.items():
            value, target = state[theirs], params[ours]
            if value.numel() != target.numel():
                raise ValueError(
                    f"{path}: {theirs} has shape {list(value.shape)}, the model expects {list(target.shape)}; "
                    "check --max_frames, prompt lengths and --unified_transformer_layers"
                )
            target.copy_(value.reshape(target.shape))
    if check_backbone:
        ours_clip = model.clip.state_dict()
        bad = [
            k for k, v in backbone_state_from_official(state, official_prefix(model)).items()
            if k not in ours_clip or ours_clip[k].shape != v.shape or not torch.allclose(ours_clip[k], v, atol=1e-3, rtol=1e-3)
        ]
        if bad:
            raise ValueError(
                f"{path}: its CLIP weights differ from the loaded backbone in {len(bad)} tensors (e.g. {bad[:3]}); "
                "load the CLIP it was trained on (--pretrained_clip_name), or omit it to use the checkpoint's own copy"
            )


def official_state_dict(model: DGL) -> dict[str, torch.Tensor]:
    """``model``'s whole state under the official names and shapes (without ``module.``)."""
    params = dict(model.named_parameters())
    prefix = official_prefix(model)
    state = {f"{prefix}{k}": v.detach().clone() for k, v in model.clip.state_dict().items()}
    state["clip.visual.position_ids"] = torch.arange(1 + model.clip.config.grid_size**2).unsqueeze(0)
    for ours, theirs in official_names(model).items():
        value = params[ours].detach().clone()
        if theirs in ("clip.visual.prompt_embeddings", "clip.visual_prompt_embedding"):
            value = value.unsqueeze(0)
        state[theirs] = value
    return state


def export_official_checkpoint(model: DGL, path: str | os.PathLike, epoch: int = 0, global_step: int = 0, best_r1: float = 0.0) -> None:
    """Write ``model`` in the official layout, so the official code (and others' tools) can read our prompts."""
    state = official_state_dict(model)
    ckpt = {
        "epoch": epoch,
        "global_step": global_step,
        "arch": "CLIp4Clip",
        "state_dict": {_DDP_PREFIX + k: v for k, v in state.items()},
        "best_acc1": best_r1,
    }
    atomic_save(ckpt, path)


# ---------------------------------------------------------------------------------- our format
def compact_checkpoint(model: DGL, backbone: dict, **training_state: Any) -> dict:
    """Our format: trainable tensors (with a SHA256 each) + configs + backbone identity (+ optimizer,
    scheduler, RNG, … for resume)."""
    state = {k: v.detach().cpu().clone() for k, v in model.trainable_parameters().items()}
    return {
        "format": COMPACT_FORMAT,
        "dgl_config": model.config.to_dict(),
        "prompt_layers": model.prompt_layers,
        "backbone": {**backbone, "fingerprint": model.backbone_fingerprint,
                     "config": dataclasses.asdict(model.clip.config)},
        "state_dict": state,
        "tensor_sha256": tensor_hashes(state),
        **training_state,
    }


def is_compact_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == COMPACT_FORMAT


def load_compact_state(model: DGL, ckpt: dict, source: str = "<checkpoint>") -> None:
    """Copy a compact checkpoint's tensors into ``model``, refusing another backbone or another shape."""
    if ckpt["backbone"]["fingerprint"] != model.backbone_fingerprint:
        raise ValueError(
            f"{source}: trained on backbone {ckpt['backbone'].get('name', '?')} "
            f"(fingerprint {ckpt['backbone']['fingerprint']}), but the loaded CLIP differs "
            f"(fingerprint {model.backbone_fingerprint}); pass the same --pretrained_clip_name/--pretrained_dir"
        )
    verify_tensor_hashes(ckpt["state_dict"], ckpt.get("tensor_sha256"), source)
    check_finite(ckpt["state_dict"], source)
    _check_compact_config(ckpt, model, source)
    expected = model.trainable_parameters()
    if set(ckpt["state_dict"]) != set(expected):
        raise ValueError(
            f"{source}: tensors {sorted(set(ckpt['state_dict']) ^ set(expected))} do not match the model; "
            f"the checkpoint's config is {ckpt['dgl_config']}"
        )
    with torch.no_grad():
        for name, value in ckpt["state_dict"].items():
            if value.shape != expected[name].shape:
                raise ValueError(f"{source}: {name} has shape {list(value.shape)}, model has {list(expected[name].shape)}")
            expected[name].copy_(value)


# DGLConfig fields a trained checkpoint fixes -> the official flag that sets them (T: frame-specific variants only).
SIZE_FLAGS = {
    "backbone": "--backbone", "model": "--model",
    "shared_latent_space": "--shared_latent_space", "text_prompt_length": "--text_prompt_length",
    "local_prompt_length": "--local_each_frame_prompt_length", "global_prompt_length": "--global_visual_prompt_length",
    "prompt_layers": "--unified_transformer_layers",
}


def differing_sizes(needed: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """``--flag N (given: M)`` for each setting a checkpoint fixes (``needed``) that the model (``actual``,
    DGLConfig fields with the resolved ``prompt_layers``) does not have."""
    generator = PROMPT_GENERATORS.get(needed.get("shared_latent_space"))
    sizes = dict(SIZE_FLAGS, max_frames="--max_frames") if generator is not None and generator.frame_specific else SIZE_FLAGS
    return [f"{flag} {needed[field]} (given: {actual[field]})" for field, flag in sizes.items()
            if needed.get(field) is not None and needed[field] != actual[field]]


def _check_compact_config(ckpt: dict, model: DGL, source: str) -> None:
    needed = {"backbone": DEFAULT_BACKBONE, **ckpt["dgl_config"], "prompt_layers": ckpt.get("prompt_layers", ckpt["dgl_config"].get("prompt_layers"))}
    wrong = differing_sizes(needed, {**model.config.to_dict(), "prompt_layers": model.prompt_layers})
    if wrong:
        raise CheckpointError(f"{source}: the checkpoint needs {', '.join(wrong)}")
