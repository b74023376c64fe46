"""``load_blip(path)``: a BLIP retrieval model from a Hugging Face folder or an original BLIP release file."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from .formats import (EXPECTED, HF_RULES, ORIGINAL_RULES, BlipLoadError, Overrides, hf_config, original_config,
                      refusal, rename, split_original)
from .model import INITIAL_TEMPERATURE, BlipRetrieval

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_ARCHITECTURE = "BlipForImageTextRetrieval"


class BlipTemperatureWarning(UserWarning):
    """The weights carry no trained temperature (Hugging Face drops BLIP's ``temp``)."""


def load_blip(path: str | os.PathLike, overrides: Overrides = Overrides(),
              temperature: float | None = None) -> BlipRetrieval:
    """Build and strictly load BLIP from ``path``: a Hugging Face ``BlipForImageTextRetrieval`` folder (or its
    weight file), or an original ``model_*_retrieval_*.pth``. ``overrides`` replace an original file's assumed
    heads and eps; ``temperature`` replaces the file's ``temp`` (needed to train from an HF folder knowingly)."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in HF_WEIGHT_FILES and (path.parent / "config.json").is_file():
        path = path.parent
    if path.is_dir():
        state, config, momentum = _read_hf_folder(path, overrides)
    elif path.is_file():
        state, momentum = split_original(_read_original(path))
        state = rename(state, ORIGINAL_RULES, str(path))
        config = original_config(state, overrides, str(path))
    else:
        raise BlipLoadError(f"{path} does not exist; expected {EXPECTED}")
    file_temp = state.pop("temp", None)
    if file_temp is None and temperature is None:
        warnings.warn(f"{path} carries no trained temperature; using BLIP's initial {INITIAL_TEMPERATURE} "
                      "(pass temperature= to set it)", BlipTemperatureWarning, stacklevel=2)
    model = BlipRetrieval(config)
    state["temp"] = torch.tensor(temperature if temperature is not None else
                                 float(file_temp) if file_temp is not None else INITIAL_TEMPERATURE)
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise BlipLoadError(f"{path}: missing {len(missing)} tensors, e.g. {missing[:3]}; expected {EXPECTED}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shapes that contradict the sizes read from other tensors
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise BlipLoadError(f"{path}: inconsistent tensor shapes: {detail}") from err
    model.momentum_state = momentum
    return model


def interpolate_positions(positions: torch.Tensor, grid: int) -> torch.Tensor:
    """BLIP's ``interpolate_pos_embed``: the CLS position kept, the patch positions resized bicubically
    (``align_corners=False``) to ``grid x grid``. ``[1 + g², D]`` or ``[1, 1 + g², D]`` (an original file's)."""
    batched = positions if positions.dim() == 3 else positions[None]
    old = math.isqrt(batched.shape[1] - 1)
    if old == grid:
        return positions
    patches = batched[:, 1:].reshape(-1, old, old, batched.shape[-1]).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    resized = torch.cat([batched[:, :1], patches.permute(0, 2, 3, 1).flatten(1, 2).to(positions.dtype)], dim=1)
    return resized if positions.dim() == 3 else resized[0]


def at_resolution(model: BlipRetrieval, resolution: int) -> BlipRetrieval:
    """``model`` for ``resolution`` px frames, its position embeddings (and its file's momentum encoder's)
    interpolated as BLIP's ``load_checkpoint`` does: tokenmix runs BLIP's 384 px COCO weights at 224 px."""
    cfg = model.config
    if resolution < cfg.vision_patch_size or resolution % cfg.vision_patch_size:
        raise ValueError(f"--image_resolution {resolution}: BLIP's ViT needs a multiple of its patch size "
                         f"{cfg.vision_patch_size}")
    grid = resolution // cfg.vision_patch_size
    state = model.state_dict()
    state["visual.pos_embed"] = interpolate_positions(state["visual.pos_embed"], grid)
    resized = BlipRetrieval(dataclasses.replace(cfg, image_resolution=resolution, grid_size=grid))
    resized.load_state_dict(state, strict=True)
    resized.momentum_state = {k: interpolate_positions(v, grid) if k == "visual_encoder_m.pos_embed" else v
                              for k, v in model.momentum_state.items()}
    resized.vocab_file = model.vocab_file
    return resized


def _read_hf_folder(folder: Path, overrides: Overrides) -> tuple[dict, object, dict]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BlipLoadError(f"{folder} has no config.json; expected {EXPECTED}")
    if overrides != Overrides():
        raise BlipLoadError(f"{folder}: heads and eps come from its config.json; "
                            "overrides apply to original .pth files")
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    if config.get("model_type") != "blip" or (architectures and HF_ARCHITECTURE not in architectures):
        found = architectures or [config.get("model_type")]
        raise BlipLoadError(f"{config_file} describes {found}, not {HF_ARCHITECTURE}; expected {EXPECTED}")
    weights = next((folder / name for name in HF_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise BlipLoadError(f"{folder} has neither of {list(HF_WEIGHT_FILES)} (sharded weights are not supported)")
    raw = _read(weights)
    reason = refusal(raw, str(weights))
    if reason:
        raise BlipLoadError(reason)
    state = rename(raw, HF_RULES, str(weights))
    return state, hf_config(state, config, str(config_file)), {}


def _read_original(path: Path) -> dict[str, torch.Tensor]:
    raw = _read(path)
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]  # BLIP's training script saves {'model': state_dict, 'optimizer': ..., 'config': ...}
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise BlipLoadError(f"{path} holds no state dict of tensors; expected {EXPECTED}")
    reason = refusal(raw, str(path))
    if reason:
        raise BlipLoadError(reason)
    return raw


def _read(path: Path) -> object:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged or foreign files fail with many exception types
        reason = next(iter(str(err).strip().splitlines()), type(err).__name__)
        raise BlipLoadError(f"{path}: cannot be read as a PyTorch or safetensors file "
                            f"({path.stat().st_size} bytes): {reason}") from err
