"""The tiny CLIP on disk: an OpenAI-format weight file plus a JSON sidecar whose recipe and SHA256 make
the file a cache hit; both written atomically, the sidecar last."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from models.checkpoint import atomic_save
from models.clip import CLIP
from models.files import atomic_write
from preprocess.tiny_clip.recipe import Recipe, cache_key


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_summary(out: Path, recipe: Recipe) -> dict | None:
    """The sidecar's record when FILE holds exactly this recipe's weights, else None."""
    side = sidecar_path(out)
    if not (out.is_file() and side.is_file()):
        return None
    try:
        summary = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("cache_key") != cache_key(recipe):
        return None
    if summary.get("sha256") != _sha256(out):  # e.g. FILE rewritten by another recipe that then crashed
        return None
    return summary


def openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """``CLIP.state_dict()`` (fp32, OpenAI names) plus the 0-d int64 metadata of OpenAI's archives."""
    cfg = model.config
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    state["input_resolution"] = torch.tensor(cfg.image_resolution, dtype=torch.int64)
    state["context_length"] = torch.tensor(cfg.context_length, dtype=torch.int64)
    state["vocab_size"] = torch.tensor(cfg.vocab_size, dtype=torch.int64)
    return state


def save(model: CLIP, out: Path, summary: dict) -> dict:
    """Write FILE then FILE.json, each atomically; the sidecar goes first so a crash never leaves a stale match."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path(out).unlink(missing_ok=True)
    state = openai_state_dict(model)
    atomic_save(state, out)
    summary = {**summary, "sha256": _sha256(out)}
    atomic_write(sidecar_path(out), lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")
    return summary
