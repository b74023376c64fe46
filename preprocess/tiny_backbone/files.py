"""The tiny backbone on disk: the weight file its registry entry loads (and any file beside it, BLIP's vocab.txt)
plus a JSON sidecar whose recipe and SHA256s make the files a cache hit; all written atomically, the sidecar
last."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from models.backbone import DEFAULT_BACKBONE
from models.files import atomic_write
from preprocess.tiny_backbone.backbones import openai_state_dict, tiny_backbone
from preprocess.tiny_backbone.recipe import Recipe, cache_key

__all__ = ["cached_summary", "openai_state_dict", "save", "sidecar_path"]


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_summary(out: Path, recipe: Recipe, backbone: str = DEFAULT_BACKBONE) -> dict | None:
    """The sidecar's record when FILE (and the files beside it) hold exactly this recipe's weights, else None."""
    side = sidecar_path(out)
    if not (out.is_file() and side.is_file()):
        return None
    try:
        summary = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("cache_key") != cache_key(recipe, tiny_backbone(backbone).key):
        return None
    if summary.get("sha256") != _sha256(out):  # e.g. FILE rewritten by another recipe that then crashed
        return None
    beside = summary.get("files_beside", {})
    if not isinstance(beside, dict) or any(not (out.parent / name).is_file() or _sha256(out.parent / name) != digest
                                           for name, digest in beside.items()):
        return None
    return summary


def save(model: nn.Module, out: Path, summary: dict, backbone: str = DEFAULT_BACKBONE) -> dict:
    """Write FILE (and what goes beside it) then FILE.json, each atomically; the old sidecar goes first so a crash
    never leaves a stale match."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path(out).unlink(missing_ok=True)
    beside = tiny_backbone(backbone).write(model, out)
    summary = {**summary, "sha256": _sha256(out)}
    if beside:
        summary["files_beside"] = {name: _sha256(path) for name, path in beside.items()}
    atomic_write(sidecar_path(out), lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")
    return summary
