"""--pretrained_clip_name by the names users know: OpenAI's, open_clip's, Hugging Face ids; where each is looked
for (--pretrained_dir, the Hugging Face cache) and in which order."""
from __future__ import annotations

from pathlib import Path

import pytest

from models.clip_names import OPENAI_CLIP_FILES, UnknownTagError, hf_hub_cache, openai_file
from models.pretrained import CLIPNotFoundError, resolve_clip_path

HF_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
# Written out by hand: each model's names in OpenAI's clip.py, open_clip's model list, and on the Hub.
SPELLINGS = {
    "ViT-B/32": ["ViT-B-32", "vit-b-32", "ViT-B-32/openai", "ViT-B-32:openai", "ViT-B-32-quickgelu/openai",
                 "openai/clip-vit-base-patch32"],
    "ViT-B/16": ["ViT-B-16", "ViT-B-16/openai", "openai/clip-vit-base-patch16"],
    "ViT-L/14": ["ViT-L-14", "ViT-L-14/openai", "openai/clip-vit-large-patch14"],
    "ViT-L/14@336px": ["ViT-L-14-336", "ViT-L-14-336/openai", "openai/clip-vit-large-patch14-336"],
}


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in HF_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "hf_home" / "hub"


def snapshot(cache: Path, repo_id: str, revision: str, file_name: str = "model.safetensors") -> Path:
    folder = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision
    folder.mkdir(parents=True)
    (folder / file_name).write_bytes(revision.encode())
    return folder / file_name


@pytest.mark.parametrize("name", SPELLINGS)
def test_every_spelling_means_openais_file(name: str, hf_cache: Path, tmp_path: Path) -> None:
    (tmp_path / OPENAI_CLIP_FILES[name].filename).write_bytes(b"")
    for spelling in [name, *SPELLINGS[name]]:
        assert openai_file(spelling) is OPENAI_CLIP_FILES[name]
        assert resolve_clip_path(spelling, tmp_path) == tmp_path / OPENAI_CLIP_FILES[name].filename


def test_other_names_are_not_openais() -> None:
    for name in ("ViT-H/14", "ViT-B-32-256", "openai/clip-vit-huge", "RN50", "ViT-B/32/extra"):
        assert openai_file(name) is None, name


def test_another_pretrained_tag_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownTagError, match="laion2b_s34b_b79k") as info:
        resolve_clip_path("ViT-B-32/laion2b_s34b_b79k", tmp_path)
    assert "--pretrained_clip_name" in str(info.value)


def test_hub_cache_location_follows_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in HF_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_hub_cache() == tmp_path / "home/.cache/huggingface/hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg/huggingface/hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_hub_cache() == tmp_path / "hf/hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "old"))
    assert hf_hub_cache() == tmp_path / "old"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert hf_hub_cache() == tmp_path / "new"


def test_hub_id_takes_the_revision_refs_main_names(hf_cache: Path, tmp_path: Path) -> None:
    older = snapshot(hf_cache, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "aaaa", "open_clip_pytorch_model.bin")
    main = snapshot(hf_cache, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "bbbb", "open_clip_pytorch_model.bin")
    repo = hf_cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaaa\n")
    assert resolve_clip_path("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", tmp_path / "none") == older
    (repo / "refs" / "main").unlink()
    (repo / "snapshots" / "aaaa" / "open_clip_pytorch_model.bin").unlink()
    assert resolve_clip_path("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", tmp_path / "none") == main


def test_hub_layout_and_plain_folders_under_pretrained_dir(hf_cache: Path, tmp_path: Path) -> None:
    own = tmp_path / "mine"
    in_cache = snapshot(hf_cache, "org/model", "cccc")
    assert resolve_clip_path("org/model", own) == in_cache
    plain = own / "org" / "model" / "pytorch_model.bin"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"")
    assert resolve_clip_path("org/model", own) == plain
    in_own_cache = snapshot(own, "org/model", "dddd")
    assert resolve_clip_path("org/model", own) == in_own_cache


def test_openai_weights_in_either_format_and_which_comes_first(hf_cache: Path, tmp_path: Path) -> None:
    """The name's own kind first: ViT-B/32 prefers ViT-B-32.pt, the Hub id its Hub download; either falls back."""
    converted = snapshot(hf_cache, "openai/clip-vit-base-patch32", "eeee")
    assert resolve_clip_path("ViT-B/32", tmp_path) == converted
    (tmp_path / "ViT-B-32.pt").write_bytes(b"")
    assert resolve_clip_path("ViT-B-32", tmp_path) == tmp_path / "ViT-B-32.pt"
    assert resolve_clip_path("openai/clip-vit-base-patch32", tmp_path) == converted
    converted.unlink()
    assert resolve_clip_path("openai/clip-vit-base-patch32", tmp_path) == tmp_path / "ViT-B-32.pt"


def test_missing_weights_are_one_line_naming_the_flag_and_the_command(hf_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(CLIPNotFoundError) as info:
        resolve_clip_path("ViT-B-16/openai", tmp_path)
    message = str(info.value)
    assert "\n" not in message and "--pretrained_dir" in message and "set pretrained_dir" not in message
    assert f"python -m apps.download ViT-B-16/openai --pretrained_dir {tmp_path}" in message
    with pytest.raises(CLIPNotFoundError, match="models--org--absent") as info:
        resolve_clip_path("org/absent", tmp_path)
    assert "\n" not in str(info.value)
