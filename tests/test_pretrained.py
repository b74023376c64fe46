"""OpenAI CLIP file handling: both file formats, size inference, name resolution and every failure message."""
import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from models import pretrained
from models.pretrained import (
    OPENAI_CLIP_FILES,
    CLIPChecksumWarning,
    CLIPConfig,
    CLIPLoadError,
    CLIPNotFoundError,
    check_clip_keys,
    expected_clip_keys,
    infer_clip_config,
    load_clip_state_dict,
    resolve_clip_path,
)

# Copied by hand from the _MODELS table of OpenAI's clip/clip.py, independently of the module's URL template.
OPENAI_URLS = {
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/"
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/"
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
METADATA = {"input_resolution", "context_length", "vocab_size"}
SMALL = CLIPConfig(
    embed_dim=32, image_resolution=24, vision_layers=2, vision_width=64, vision_heads=1, vision_patch_size=8,
    grid_size=3, context_length=10, vocab_size=50, text_width=128, text_heads=2, text_layers=1,
)


def _shape(key: str, cfg: CLIPConfig) -> tuple:
    """OpenAI's tensor shapes, written out independently of the module under test."""
    width = cfg.vision_width if key.startswith("visual.") else cfg.text_width
    suffix = key.split("resblocks.")[-1].split(".", 1)[-1]
    block = {
        "attn.in_proj_weight": (3 * width, width), "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width), "mlp.c_fc.weight": (4 * width, width),
        "mlp.c_fc.bias": (4 * width,), "mlp.c_proj.weight": (width, 4 * width),
    }
    top = {
        "positional_embedding": (cfg.context_length, cfg.text_width),
        "text_projection": (cfg.text_width, cfg.embed_dim),
        "logit_scale": (),
        "visual.class_embedding": (cfg.vision_width,),
        "visual.positional_embedding": (cfg.grid_size**2 + 1, cfg.vision_width),
        "visual.proj": (cfg.vision_width, cfg.embed_dim),
        "visual.conv1.weight": (cfg.vision_width, 3, cfg.vision_patch_size, cfg.vision_patch_size),
        "token_embedding.weight": (cfg.vocab_size, cfg.text_width),
    }
    if key in top:
        return top[key]
    return block.get(suffix, (width,)) if "resblocks" in key else (width,)


def _random_clip(cfg: CLIPConfig = SMALL) -> dict:
    """fp16 weights plus the int metadata, as in OpenAI's archives."""
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(_shape(key, cfg), generator=generator).half() for key in expected_clip_keys(cfg)}
    state.update(input_resolution=torch.tensor(cfg.image_resolution), context_length=torch.tensor(cfg.context_length),
                 vocab_size=torch.tensor(cfg.vocab_size))
    return state


def _save_torchscript(state: dict, path: Path) -> None:
    """A real TorchScript archive: a scripted module tree whose state_dict() has exactly these names."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if getattr(module, part, None) is None:
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        if value.is_floating_point():
            module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
        else:
            module.register_buffer(leaf, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(root), str(path))


def _assert_fp32_copy_of(loaded: dict, source: dict) -> None:
    assert list(loaded) == [key for key in source if key not in METADATA]
    pointers = {tensor.untyped_storage().data_ptr() for tensor in loaded.values()}
    assert len(pointers) == len(loaded), "tensors must not share storage"
    for key, tensor in loaded.items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous(), key
        assert torch.equal(tensor, source[key].float()), key


def test_known_files_are_openais() -> None:
    assert {name: clip_file.url for name, clip_file in OPENAI_CLIP_FILES.items()} == OPENAI_URLS
    assert OPENAI_CLIP_FILES["ViT-B/32"].filename == "ViT-B-32.pt"
    assert OPENAI_CLIP_FILES["ViT-B/16"].filename == "ViT-B-16.pt"
    assert OPENAI_CLIP_FILES["ViT-L/14"].filename == "ViT-L-14.pt"
    assert OPENAI_CLIP_FILES["ViT-L/14@336px"].filename == "ViT-L-14-336px.pt"


@pytest.mark.parametrize("name", ["ViT-L/14", "ViT-L/14@336px"])
def test_large_names_resolve_and_say_where_to_get_them(tmp_path: Path, name: str) -> None:
    with pytest.raises(CLIPNotFoundError) as info:
        resolve_clip_path(name, tmp_path)
    assert OPENAI_URLS[name] in str(info.value) and OPENAI_URLS[name].split("/")[-2] in str(info.value)
    path = tmp_path / OPENAI_URLS[name].rsplit("/", 1)[1]
    path.write_bytes(b"")
    assert resolve_clip_path(name, tmp_path) == path


def test_fixture_formats_load_to_identical_fp32_weights(fixture_dir: Path) -> None:
    raw = torch.load(fixture_dir / "tiny_clip_state_dict.pt", weights_only=True)
    from_jit = load_clip_state_dict(fixture_dir / "tiny_clip_jit.pt")
    from_plain = load_clip_state_dict(fixture_dir / "tiny_clip_state_dict.pt")
    _assert_fp32_copy_of(from_plain, raw)
    _assert_fp32_copy_of(from_jit, raw)


def test_infers_fixture_sizes(fixture_dir: Path) -> None:
    tiny = json.loads((fixture_dir / "config.json").read_text())["tiny_clip"]
    config = tiny["config"]
    state = load_clip_state_dict(fixture_dir / "tiny_clip_state_dict.pt")
    assert infer_clip_config(state) == CLIPConfig(
        embed_dim=config["embed_dim"], image_resolution=config["res"], vision_layers=config["vision_layers"],
        vision_width=config["vision_width"], vision_heads=tiny["vision_heads"], vision_patch_size=config["patch"],
        grid_size=tiny["grid"], context_length=config["context_length"], vocab_size=config["vocab_size"],
        text_width=config["text_width"], text_heads=tiny["text_heads"], text_layers=config["text_layers"],
    )
    assert expected_clip_keys(infer_clip_config(state)) == [key for key in tiny["keys"] if key not in METADATA]


@pytest.mark.parametrize("fmt", ["plain", "wrapped", "torchscript"])
def test_random_clip_round_trips(tmp_path: Path, fmt: str) -> None:
    state = _random_clip()
    path = tmp_path / "small.pt"
    if fmt == "torchscript":
        _save_torchscript(state, path)
    else:
        torch.save({"state_dict": state, "epoch": 3} if fmt == "wrapped" else state, path)
    loaded = load_clip_state_dict(path)
    _assert_fp32_copy_of(loaded, state)
    assert infer_clip_config(loaded) == SMALL


def test_resolves_names_in_pretrained_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in ("arg", "env", "home/models/pretrained"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "ViT-B-16.pt").touch()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DGL_PRETRAINED_DIR", raising=False)
    assert resolve_clip_path("ViT-B/16") == tmp_path / "home/models/pretrained/ViT-B-16.pt"
    monkeypatch.setenv("DGL_PRETRAINED_DIR", str(tmp_path / "env"))
    assert resolve_clip_path("ViT-B/16") == tmp_path / "env/ViT-B-16.pt"
    assert resolve_clip_path("ViT-B/16", tmp_path / "arg") == tmp_path / "arg/ViT-B-16.pt"
    assert resolve_clip_path(str(tmp_path / "arg/ViT-B-16.pt")) == tmp_path / "arg/ViT-B-16.pt"


def test_missing_known_file_says_where_and_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        resolve_clip_path("ViT-B/32", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "ViT-B-32.pt") in message
    assert OPENAI_URLS["ViT-B/32"] in message
    assert OPENAI_CLIP_FILES["ViT-B/32"].sha256 in message
    with pytest.raises(CLIPNotFoundError, match="ViT-B-32.pt"):
        load_clip_state_dict(tmp_path / "ViT-B-32.pt")


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(CLIPNotFoundError, match="ViT-B/32, ViT-B/16") as info:
        resolve_clip_path("ViT-H/14", tmp_path)
    assert "ViT-H/14" in str(info.value)


def test_checksum_mismatch_warns_once_per_file_version(fixture_dir: Path, tmp_path: Path) -> None:
    data = (fixture_dir / "tiny_clip_state_dict.pt").read_bytes()
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(data)
    pretrained._sha256_of.cache_clear()
    with pytest.warns(CLIPChecksumWarning) as record:
        load_clip_state_dict(path)
        load_clip_state_dict(path)
    message = str(record[0].message)
    assert str(path) in message and hashlib.sha256(data).hexdigest() in message
    assert OPENAI_CLIP_FILES["ViT-B/32"].sha256 in message
    assert pretrained._sha256_of.cache_info().misses == 1, "the second load must not rehash"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.warns(CLIPChecksumWarning):
        load_clip_state_dict(path)
    assert pretrained._sha256_of.cache_info().misses == 2, "a rewritten file must be rehashed"


def test_other_file_names_are_not_hashed(fixture_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CLIPChecksumWarning)
        load_clip_state_dict(fixture_dir / "tiny_clip_jit.pt")


@pytest.mark.parametrize("source", ["tiny_clip_state_dict.pt", "tiny_clip_jit.pt"])
def test_truncated_file_is_a_load_error(fixture_dir: Path, tmp_path: Path, source: str) -> None:
    data = (fixture_dir / source).read_bytes()
    path = tmp_path / source
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CLIPLoadError, match=f"{path}: cannot be read"):
        load_clip_state_dict(path)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("text", "cannot be read"),
        ([1, 2, 3], "holds a list"),
        ({"weight": torch.zeros(2)}, "no 'visual.proj'"),
        ({"visual.proj": torch.zeros(2), "epoch": 3}, "non-tensor entries (1): 'epoch'"),
    ],
)
def test_foreign_file_is_a_load_error(tmp_path: Path, content: object, problem: str) -> None:
    path = tmp_path / "foreign.pt"
    if content == "text":
        path.write_text("<html>404 Not Found</html>\n")
    else:
        torch.save(content, path)
    with pytest.raises(CLIPLoadError, match=str(path)) as info:
        load_clip_state_dict(path)
    assert problem in str(info.value)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = _random_clip()
    del state["visual.ln_post.bias"]
    state["visual.extra"] = torch.zeros(1)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(CLIPLoadError, match=str(path)) as info:
        load_clip_state_dict(path)
    assert "missing (1): 'visual.ln_post.bias'" in str(info.value)
    assert "unexpected (1): 'visual.extra'" in str(info.value)


def test_many_missing_keys_are_counted_not_all_listed() -> None:
    state = _random_clip()
    kept = "transformer.resblocks.0.ln_1.weight"  # keeps the text depth at 1, so 11 block tensors are missing
    state = {key: value for key, value in state.items() if key == kept or not key.startswith("transformer.resblocks")}
    with pytest.raises(CLIPLoadError, match=r"^where\.pt: .* missing \(11\): .*, \.\.\. \(\+5 more\)$"):
        check_clip_keys(state, "where.pt")
    del state["ln_final.weight"]
    with pytest.raises(CLIPLoadError, match="^where.pt: missing 'ln_final.weight'"):
        check_clip_keys(state, "where.pt")
