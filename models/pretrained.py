"""CLIP weight files: where they live, how to read them, and what sizes they imply.

Independent of the model class: everything here works on plain ``{name: tensor}`` dicts whose names
are OpenAI's (``visual.transformer.resblocks.0.attn.in_proj_weight``, ...). Accepted: OpenAI's released
TorchScript archives, ``torch.save``'d state dicts, Hugging Face CLIP folders (``config.json`` +
``model.safetensors``/``pytorch_model.bin``, renamed on reading) and open_clip ViT files (OpenAI's names,
``open_clip_config.json`` beside them); see `clip_formats` for the last two.
"""
from __future__ import annotations

import functools
import math
import os
import shlex
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .clip_formats import ACTIVATION_NAMES, NEEDS_VIT, WEIGHT_FILE_NAMES, CLIPLoadError, hf_to_openai, is_hf_clip
from .clip_names import (
    FILES_BY_FILENAME, OPENAI_CLIP_FILES, ClipFile, hf_folders, hf_places, is_hf_id, known_names, openai_file, weight_file,
)
from .files import sha256_of_file

__all__ = [
    "OPENAI_CLIP_FILES",
    "PRETRAINED_DIR_ENV",
    "CLIPChecksumWarning",
    "CLIPConfig",
    "CLIPLoadError",
    "CLIPNotFoundError",
    "ClipFile",
    "check_clip_keys",
    "default_pretrained_dir",
    "expected_clip_keys",
    "file_sha256",
    "infer_clip_config",
    "load_clip_state_dict",
    "read_clip_file",
    "resolve_clip_path",
]

PRETRAINED_DIR_ENV = "DGL_PRETRAINED_DIR"
DEFAULT_PRETRAINED_DIR = "~/models/pretrained"  # where the official DGL code looks

# OpenAI's JIT archives carry these 0-d int64 tensors next to the weights; no model parameter matches them.
_METADATA_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})
_VIT_MARKER = "visual.proj"  # present only in ViT CLIPs (ResNet CLIPs pool with attnpool instead)
_BLOCK_KEYS = (
    "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
    "ln_1.weight", "ln_1.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
)
_HEAD_WIDTH = 64  # every OpenAI CLIP uses 64-wide attention heads
_LISTED_KEYS = 6  # how many key names an error message spells out


class CLIPNotFoundError(FileNotFoundError):
    """No weight file where one was expected; the message says where to get it."""


class CLIPChecksumWarning(UserWarning):
    """A file named like an OpenAI release whose bytes are not that release (own category so it can be filtered)."""


@dataclass(frozen=True)
class CLIPConfig:
    """Sizes of a ViT CLIP, read from tensor shapes so any width/depth loads; heads and activation come from
    the file's config where it has one (OpenAI's files: width / 64 and QuickGELU)."""

    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_heads: int
    vision_patch_size: int
    grid_size: int
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    activation: str = "quick_gelu"  # or "gelu" (exact, erf): the MLP's, in both towers

    def __post_init__(self):
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation must be one of {ACTIVATION_NAMES}, got {self.activation!r}")


# ----------------------------------------------------------------------------------------- locating files


def default_pretrained_dir() -> Path:
    """``$DGL_PRETRAINED_DIR`` if set, else ``~/models/pretrained`` as in the official code."""
    return Path(os.environ.get(PRETRAINED_DIR_ENV) or DEFAULT_PRETRAINED_DIR).expanduser()


def resolve_clip_path(name_or_path: str, pretrained_dir: str | os.PathLike | None = None) -> Path:
    """The weight file a ``--pretrained_clip_name`` means.

    An existing file, or a folder holding one of `WEIGHT_FILE_NAMES` (a Hugging Face or open_clip download).
    OpenAI's models by any of their names (``ViT-B/32``, open_clip's ``ViT-B-32`` or ``ViT-B-32/openai``, the
    Hugging Face id ``openai/clip-vit-base-patch32``): OpenAI's file (``<pretrained_dir>/ViT-B-32.pt``) or the
    same weights as a Hugging Face download, whichever the name's own kind is, first. Any other Hugging Face id:
    found under ``pretrained_dir`` or in the Hugging Face cache (`clip_names.hf_folders`).

    Nothing is downloaded: training machines are often offline, so a missing file is an error that says
    what to fetch, and how (``python -m apps.download NAME``).
    """
    folder = Path(pretrained_dir).expanduser() if pretrained_dir is not None else default_pretrained_dir()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = weight_file(path)
        if found is None:
            raise CLIPNotFoundError(f"{path} is a folder without a CLIP weight file; looked for {', '.join(WEIGHT_FILE_NAMES)}")
        return found
    clip_file = openai_file(name_or_path)
    if clip_file is not None:
        in_hf_folders = [weight_file(f) for f in hf_folders(clip_file.hf_id, folder)]
        candidates = [folder / clip_file.filename, *in_hf_folders]
        if name_or_path.lower() == clip_file.hf_id:
            candidates = [*in_hf_folders, folder / clip_file.filename]
        found = next((c for c in candidates if c is not None and c.is_file()), None)
        if found is None:
            raise CLIPNotFoundError(_missing_file_message(folder / clip_file.filename, name_or_path))
        return found
    if is_hf_id(name_or_path):
        found = next((f for f in map(weight_file, hf_folders(name_or_path, folder)) if f is not None), None)
        if found is None:
            raise CLIPNotFoundError(
                f"Hugging Face model {name_or_path} not found in {', '.join(map(str, hf_places(name_or_path, folder)))}; "
                f"download it (e.g. huggingface-cli download {name_or_path}) or pass --pretrained_clip_name the folder "
                f"holding its weights and config.json (known by name: {known_names()})"
            )
        return found
    raise CLIPNotFoundError(
        f"--pretrained_clip_name {name_or_path!r} is neither a known CLIP model ({known_names()}), nor a Hugging Face "
        f"id, nor an existing file (looked for {path.absolute()})"
    )


def _missing_file_message(path: Path, name: str | None = None) -> str:
    """One line: what is missing, the command that fetches it, and the flag that points elsewhere."""
    clip_file = FILES_BY_FILENAME.get(path.name)
    if clip_file is None:
        return f"CLIP weight file not found: {path}"
    return (
        f"OpenAI CLIP {clip_file.name} weights not found: no {path} (nor a Hugging Face download of "
        f"{clip_file.hf_id}); fetch it with `python -m apps.download {shlex.quote(name or clip_file.name)} "
        f"--pretrained_dir {shlex.quote(str(path.parent))}` (from {clip_file.url}, SHA256 {clip_file.sha256}), "
        f"or pass --pretrained_dir (or set ${PRETRAINED_DIR_ENV}) to the folder that holds {clip_file.filename}"
    )


# ----------------------------------------------------------------------------------------- checksums


def file_sha256(path: str | os.PathLike) -> str:
    """SHA256 of a file, remembered per (path, size, mtime) so a 350 MB checkpoint is hashed once per process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _sha256_of(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # only part of the cache key: a rewritten file is hashed again
    return sha256_of_file(path)


def _warn_if_not_official(path: Path) -> None:
    """Warn (not fail) on a hash mismatch: fine-tuned or test weights under OpenAI's name are legitimate."""
    clip_file = FILES_BY_FILENAME.get(path.name)
    if clip_file is None:
        return
    actual = file_sha256(path)
    if actual != clip_file.sha256:
        warnings.warn(
            f"{path}: SHA256 {actual} differs from OpenAI's {clip_file.filename} ({clip_file.sha256}); "
            f"these are not the official {clip_file.name} weights (partial download or a different model?)",
            CLIPChecksumWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------- reading


def load_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ViT CLIP file as fp32 weights with OpenAI's names, validated against its own sizes.

    Tensors are fresh contiguous fp32 copies: OpenAI ships fp16, and files may hold views into shared
    storages, which ``.view()``/safetensors/in-place updates must not see. The three int metadata entries
    are dropped. The full key set is checked, because callers load it non-strictly into a larger model
    where a missing tensor would otherwise silently keep its random initialisation.
    """
    return read_clip_file(Path(path).expanduser())[0]


def read_clip_file(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The checked OpenAI-named fp32 state dict, and whether the file used Hugging Face's names."""
    if not path.is_file():
        raise CLIPNotFoundError(_missing_file_message(path))
    _warn_if_not_official(path)
    raw = _unwrap(_read(path), path)
    was_hf = is_hf_clip(list(raw))
    if was_hf:
        raw = hf_to_openai(raw, path)
    raw = _tensor_dict(raw, path)
    state_dict = {key: _fp32_copy(value) for key, value in raw.items() if key not in _METADATA_KEYS}
    check_clip_keys(state_dict, path)
    return state_dict, was_hf


def _read(path: Path) -> object:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        if _is_torchscript_archive(path):
            return _torchscript_state_dict(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports damaged or foreign files with many exception types
        reason = next(iter(str(err).strip().splitlines()), type(err).__name__)  # the rest is in the chained error
        kinds = "a safetensors file" if path.suffix == ".safetensors" else "a TorchScript archive or a torch.save'd state dict"
        raise CLIPLoadError(
            f"{path}: cannot be read as {kinds} "
            f"({path.stat().st_size} bytes; an interrupted download, or not a PyTorch file?): {reason}"
        ) from err


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript zips carry ``constants.pkl`` and ``code/``; ``torch.save`` zips only ``data.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        # OpenAI only ships TorchScript, so the deprecation notice is not actionable for our users.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def _unwrap(obj: object, path: Path) -> Mapping[str, object]:
    """Unwrap ``{"state_dict": ...}``/``{"model": ...}`` checkpoints and DDP's ``module.`` prefix."""
    if isinstance(obj, Mapping) and _VIT_MARKER not in obj:
        obj = next((obj[key] for key in ("state_dict", "model") if isinstance(obj.get(key), Mapping)), obj)
    if not isinstance(obj, Mapping):
        raise CLIPLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    if obj and all(isinstance(key, str) and key.startswith("module.") for key in obj):  # open_clip training checkpoints
        obj = {key.removeprefix("module."): value for key, value in obj.items()}
    return obj


def _tensor_dict(obj: Mapping[str, object], path: Path) -> Mapping[str, torch.Tensor]:
    """Insist on a ViT CLIP dict of tensors."""
    not_tensors = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CLIPLoadError(f"{path}: not a dict of tensors; {_summarize('non-tensor entries', not_tensors)}")
    if _VIT_MARKER not in obj:
        resnet = any(str(key).startswith("visual.attnpool.") or str(key).startswith("visual.layer1.") for key in obj)
        raise CLIPLoadError(
            f"{path}: no {_VIT_MARKER!r} tensor, so not a ViT CLIP state dict"
            f"{' (this is a ResNet CLIP)' if resnet else ''}; {NEEDS_VIT}; {_summarize('keys', list(obj))}"
        )
    return obj


def _fp32_copy(tensor: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)


# ----------------------------------------------------------------------------------------- sizes and keys


def infer_clip_config(state_dict: Mapping[str, torch.Tensor]) -> CLIPConfig:
    """Read every size from tensor shapes (as OpenAI's ``build_model`` does); heads are width / 64."""
    vision_width, _, _, patch_size = _shape(state_dict, "visual.conv1.weight")
    positions = _shape(state_dict, "visual.positional_embedding")[0]
    grid_size = round(math.sqrt(positions - 1))
    if grid_size**2 + 1 != positions:
        raise CLIPLoadError(f"visual.positional_embedding has {positions} rows, not 1 + a square grid of patches")
    text_width = _shape(state_dict, "ln_final.weight")[0]
    return CLIPConfig(
        embed_dim=_shape(state_dict, "text_projection")[1],
        image_resolution=patch_size * grid_size,
        vision_layers=sum(k.startswith("visual.") and k.endswith(".attn.in_proj_weight") for k in state_dict),
        vision_width=vision_width,
        vision_heads=vision_width // _HEAD_WIDTH,
        vision_patch_size=patch_size,
        grid_size=grid_size,
        context_length=_shape(state_dict, "positional_embedding")[0],
        vocab_size=_shape(state_dict, "token_embedding.weight")[0],
        text_width=text_width,
        text_heads=text_width // _HEAD_WIDTH,
        text_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks")}),
    )


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CLIPLoadError(f"missing {key!r}, needed to infer the CLIP sizes")
    return tuple(state_dict[key].shape)


def expected_clip_keys(cfg: CLIPConfig) -> list[str]:
    """OpenAI's ViT CLIP parameter names, in the order of OpenAI's ``state_dict()``."""
    return [
        "positional_embedding", "text_projection", "logit_scale",
        "visual.class_embedding", "visual.positional_embedding", "visual.proj",
        "visual.conv1.weight", "visual.ln_pre.weight", "visual.ln_pre.bias",
        *_block_keys("visual.transformer", cfg.vision_layers),
        "visual.ln_post.weight", "visual.ln_post.bias",
        *_block_keys("transformer", cfg.text_layers),
        "token_embedding.weight", "ln_final.weight", "ln_final.bias",
    ]


def _block_keys(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.resblocks.{i}.{key}" for i in range(layers) for key in _BLOCK_KEYS]


def check_clip_keys(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise CLIPLoadError unless the keys are exactly those of the CLIP its shapes describe.

    The metadata entries of OpenAI's archives are tolerated so a raw ``jit.state_dict()`` passes too.
    """
    try:
        expected = expected_clip_keys(infer_clip_config(state_dict))
    except CLIPLoadError as err:
        raise CLIPLoadError(f"{path}: {err}") from None
    wanted = set(expected)
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in wanted and key not in _METADATA_KEYS]
    if missing or unexpected:
        found = [_summarize(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CLIPLoadError(f"{path}: not a complete OpenAI ViT CLIP state dict; {'; '.join(found)}")


def _summarize(label: str, keys: Sequence[object]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_LISTED_KEYS])
    more = f", ... (+{len(keys) - _LISTED_KEYS} more)" if len(keys) > _LISTED_KEYS else ""
    return f"{label} ({len(keys)}): {shown}{more}"
