"""CLIP weights by the names users know: OpenAI's (``ViT-B/32``), open_clip's (``ViT-B-32``, ``ViT-B-32/openai``)
and Hugging Face ids (``openai/clip-vit-base-patch32``), and where each lies on disk.

OpenAI's four ViT releases go by all three kinds of name; they are the same weights in other file formats.
Any other Hugging Face id is looked up in the Hugging Face cache (``models--ORG--NAME/snapshots/REV/``).
Nothing here downloads (see ``python -m apps.download``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .clip_formats import WEIGHT_FILE_NAMES

OPEN_CLIP_OPENAI_TAG = "openai"  # open_clip's pretrained tag for OpenAI's weights
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # ORG/NAME, as the Hub spells repository ids
_OPENAI_STYLE = re.compile(r"[^/]+/\d+(@\d+px)?")  # ViT-H/14, RN50x4/16: a model name, not a repository


@dataclass(frozen=True)
class ClipFile:
    """One of OpenAI's released CLIP files; the SHA256 is part of OpenAI's download URL."""

    name: str
    filename: str
    sha256: str
    open_clip_name: str
    hf_id: str

    @property
    def url(self) -> str:
        return f"https://openaipublic.azureedge.net/clip/models/{self.sha256}/{self.filename}"


OPENAI_CLIP_FILES: dict[str, ClipFile] = {
    clip_file.name: clip_file
    for clip_file in (
        ClipFile("ViT-B/32", "ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                 "ViT-B-32", "openai/clip-vit-base-patch32"),
        ClipFile("ViT-B/16", "ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                 "ViT-B-16", "openai/clip-vit-base-patch16"),
        ClipFile("ViT-L/14", "ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                 "ViT-L-14", "openai/clip-vit-large-patch14"),
        ClipFile("ViT-L/14@336px", "ViT-L-14-336px.pt", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
                 "ViT-L-14-336", "openai/clip-vit-large-patch14-336"),
    )
}
FILES_BY_FILENAME = {clip_file.filename: clip_file for clip_file in OPENAI_CLIP_FILES.values()}
_BY_ANY_NAME = {
    name.lower(): clip_file
    for clip_file in OPENAI_CLIP_FILES.values()
    for name in (clip_file.name, clip_file.open_clip_name, f"{clip_file.open_clip_name}-quickgelu", clip_file.hf_id)
}


class UnknownTagError(ValueError):
    """An open_clip name with a pretrained tag other than OpenAI's."""


def known_names() -> str:
    """The names `openai_file` takes, for messages."""
    return f"{', '.join(OPENAI_CLIP_FILES)}, or their open_clip names (ViT-B-32) or Hugging Face ids"


def openai_file(name: str) -> ClipFile | None:
    """OpenAI's release a name means, in any spelling: ``ViT-B/32``, ``ViT-B-32``, ``ViT-B-32/openai``,
    ``ViT-B-32-quickgelu:openai``, ``openai/clip-vit-base-patch32`` (case-insensitive); None for other names."""
    text = name.strip()
    for separator in ("/", ":"):  # open_clip's MODEL/TAG (hub style) or MODEL:TAG (its CLI's style)
        model, found, tag = text.rpartition(separator)
        clip_file = _BY_ANY_NAME.get(model.lower()) if found else None
        if clip_file is not None and clip_file.open_clip_name.lower() in model.lower():
            if tag.lower() != OPEN_CLIP_OPENAI_TAG:
                raise UnknownTagError(
                    f"{text!r}: only OpenAI's weights (pretrained tag {OPEN_CLIP_OPENAI_TAG!r}) are known by name; for "
                    f"{model} {tag} pass the downloaded file or folder (open_clip_pytorch_model.bin with its "
                    "open_clip_config.json) as --pretrained_clip_name, or its Hugging Face id"
                )
            return clip_file
    return _BY_ANY_NAME.get(text.lower())


def is_hf_id(name: str) -> bool:
    return _HF_ID.fullmatch(name) is not None and _OPENAI_STYLE.fullmatch(name) is None


def hf_hub_cache() -> Path:
    """The Hugging Face cache folder, chosen as huggingface_hub does: ``$HF_HUB_CACHE``,
    ``$HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache / "huggingface" / "hub"


def hf_places(hf_id: str, pretrained_dir: Path | None) -> list[Path]:
    """Where a Hugging Face model may lie, in the order looked at: under ``pretrained_dir`` as a Hub cache
    (``models--ORG--NAME``) or a plain ``ORG/NAME`` folder, then in the Hugging Face cache."""
    org, name = hf_id.split("/")
    places = [pretrained_dir / f"models--{org}--{name}", pretrained_dir / org / name] if pretrained_dir else []
    return [*places, hf_hub_cache() / f"models--{org}--{name}"]


def hf_folders(hf_id: str, pretrained_dir: Path | None) -> list[Path]:
    """The folders that may hold the model's files: each Hub cache's snapshots (`_snapshots`), plain folders as they are."""
    return [folder for place in hf_places(hf_id, pretrained_dir)
            for folder in (_snapshots(place) if place.name.startswith("models--") else [place])]


def _snapshots(repo: Path) -> list[Path]:
    """The revision ``refs/main`` points at first, then the other downloaded ones, newest first."""
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return []
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    ref = repo / "refs" / "main"
    main = snapshots / ref.read_text().strip() if ref.is_file() else None
    return ([main] if main in found else []) + [p for p in found if p != main]


def weight_file(folder: Path) -> Path | None:
    """The first of `WEIGHT_FILE_NAMES` in a folder."""
    return next((folder / name for name in WEIGHT_FILE_NAMES if (folder / name).is_file()), None)
