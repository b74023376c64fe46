"""Our CLIP against a peer implementation: Hugging Face transformers' CLIPModel.

Random small CLIPModels are written by transformers' own ``save_pretrained`` (and in the open_clip hub
layout: ``open_clip_config.json`` + ``open_clip_model.safetensors``/``open_clip_pytorch_model.bin``), loaded
through ``CLIP.from_pretrained`` and must give transformers' ``get_image_features``/``get_text_features``.
transformers is a test-only dependency (scripts/_venv.sh installs it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
import transformers

from models.clip import CLIP
from models.clip_formats import CLIPLoadError, hf_to_openai
from models.clip_loader import load_clip
from models.pretrained import resolve_clip_path

TOLERANCE = 1e-5


@dataclass(frozen=True)
class Size:
    vision_width: int
    vision_layers: int
    vision_heads: int
    patch: int
    resolution: int
    text_width: int
    text_layers: int
    text_heads: int
    context: int
    vocab: int = 120
    embed_dim: int = 24
    act: str = "quick_gelu"


SIZES = {  # head widths other than 64 on purpose: heads must come from the config, not from width / 64
    "small": Size(64, 2, 2, 8, 32, 48, 2, 4, 16),
    "wide-heads": Size(96, 3, 3, 16, 48, 64, 3, 2, 20, embed_dim=32),
    "one-layer": Size(80, 1, 5, 4, 20, 32, 1, 1, 8, vocab=60, embed_dim=16),
    "gelu": Size(64, 2, 4, 8, 24, 32, 2, 2, 12, act="gelu"),
}


def hf_model(size: Size, seed: int = 0) -> transformers.CLIPModel:
    """A random transformers CLIPModel; the EOT id is the largest, as in CLIP's vocabulary."""
    text = dict(
        hidden_size=size.text_width, intermediate_size=4 * size.text_width, num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads, max_position_embeddings=size.context, vocab_size=size.vocab,
        eos_token_id=size.vocab - 1, bos_token_id=size.vocab - 2, pad_token_id=0, hidden_act=size.act,
    )
    vision = dict(
        hidden_size=size.vision_width, intermediate_size=4 * size.vision_width, num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads, image_size=size.resolution, patch_size=size.patch, hidden_act=size.act,
    )
    torch.manual_seed(seed)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=size.embed_dim))
    with torch.no_grad():  # transformers initialises LayerNorms to identity and biases to zero: perturb them all
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def inputs(size: Size, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images and SOT + words + EOT + zero padding token ids (EOT at varied positions)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size.resolution, size.resolution, generator=gen)
    ids = torch.zeros(batch, size.context, dtype=torch.long)
    for row in range(batch):
        length = 2 + (row * 5) % (size.context - 2)
        ids[row, 0] = size.vocab - 2
        ids[row, 1:length] = torch.randint(1, size.vocab - 2, (length - 1,), generator=gen)
        ids[row, length] = size.vocab - 1
    return images, ids


def features(output) -> torch.Tensor:
    """transformers 4 returns the tensor, 5 an output object whose pooler_output is projected."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def assert_same_embeddings(ours: CLIP, peer: transformers.CLIPModel, size: Size) -> None:
    images, ids = inputs(size)
    with torch.no_grad():
        want_image = features(peer.get_image_features(pixel_values=images))
        want_text = features(peer.get_text_features(input_ids=ids))
        got_image, got_text = ours.eval().encode_image(images), ours.encode_text(ids)
    assert got_image.shape == want_image.shape == (len(images), size.embed_dim)
    torch.testing.assert_close(got_image, want_image, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(got_text, want_text, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", SIZES)
def test_hugging_face_folder_matches_transformers(tmp_path: Path, name: str) -> None:
    size = SIZES[name]
    peer = hf_model(size)
    peer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = CLIP.from_pretrained(str(tmp_path))
    cfg = ours.config
    assert (cfg.vision_heads, cfg.text_heads, cfg.activation) == (size.vision_heads, size.text_heads, size.act)
    assert (cfg.vision_layers, cfg.text_layers, cfg.image_resolution, cfg.context_length) == (
        size.vision_layers, size.text_layers, size.resolution, size.context,
    )
    assert_same_embeddings(ours, peer, size)


def test_pytorch_model_bin_and_safetensors_file_paths(tmp_path: Path) -> None:
    """Older transformers wrote ``pytorch_model.bin``; a path to the weight file itself works too."""
    size = SIZES["small"]
    peer = hf_model(size, seed=3)
    peer.config.save_pretrained(tmp_path)
    torch.save({k: v.half() for k, v in peer.state_dict().items()}, tmp_path / "pytorch_model.bin")
    assert resolve_clip_path(str(tmp_path)).name == "pytorch_model.bin"
    from_bin = CLIP.from_pretrained(str(tmp_path))
    with torch.no_grad():  # the fp16 file holds the fp16-rounded weights
        for param in peer.parameters():
            param.copy_(param.half().float())
    assert_same_embeddings(from_bin, peer, size)
    peer.save_pretrained(tmp_path / "st")
    assert_same_embeddings(CLIP.from_pretrained(str(tmp_path / "st" / "model.safetensors")), peer, size)


def test_heads_and_activation_matter(tmp_path: Path) -> None:
    """The oracle can fail: the same weights with width/64-style heads or the other activation differ."""
    size = SIZES["gelu"]
    peer = hf_model(size)
    peer.save_pretrained(tmp_path)
    state_dict, cfg = load_clip(tmp_path / "model.safetensors")
    images, ids = inputs(size)
    reference = CLIP.from_state_dict(state_dict, config=cfg).eval().encode_text(ids)
    for wrong in (replace(cfg, text_heads=1), replace(cfg, activation="quick_gelu")):
        other = CLIP.from_state_dict(state_dict, config=wrong).eval().encode_text(ids)
        assert (other - reference).abs().max() > 1e-3


def write_open_clip(folder: Path, peer: transformers.CLIPModel, size: Size, config: bool = True) -> None:
    """open_clip's hub layout: OpenAI's tensor names in both weight files, the model config as JSON beside."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in hf_to_openai(peer.state_dict(), "<peer>").items()}
    safetensors.torch.save_file(state, folder / "open_clip_model.safetensors")
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    if config:
        model_cfg = {
            "embed_dim": size.embed_dim,
            "quick_gelu": size.act == "quick_gelu",
            "vision_cfg": {
                "image_size": size.resolution, "layers": size.vision_layers, "width": size.vision_width,
                "head_width": size.vision_width // size.vision_heads, "patch_size": size.patch,
            },
            "text_cfg": {
                "context_length": size.context, "vocab_size": size.vocab, "width": size.text_width,
                "heads": size.text_heads, "layers": size.text_layers,
            },
        }
        preprocess = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))


@pytest.mark.parametrize("name", ["gelu", "wide-heads"])
@pytest.mark.parametrize("file_name", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_open_clip_files_match_transformers(tmp_path: Path, name: str, file_name: str) -> None:
    size = SIZES[name]
    peer = hf_model(size, seed=5)
    write_open_clip(tmp_path, peer, size)
    ours = CLIP.from_pretrained(str(tmp_path / file_name))
    assert (ours.config.vision_heads, ours.config.activation) == (size.vision_heads, size.act)
    assert_same_embeddings(ours, peer, size)


def test_open_clip_activation_is_never_guessed(tmp_path: Path) -> None:
    size = Size(128, 1, 2, 8, 16, 64, 1, 1, 8, act="gelu")  # 64-wide heads: what a file without config implies
    peer = hf_model(size)
    write_open_clip(tmp_path / "bare", peer, size, config=False)
    with pytest.raises(CLIPLoadError, match="--clip_activation"):
        CLIP.from_pretrained(str(tmp_path / "bare"))
    write_open_clip(tmp_path / "configured", peer, size)
    with pytest.raises(CLIPLoadError, match="contradicts"):
        CLIP.from_pretrained(str(tmp_path / "configured"), activation="quick_gelu")
    flagged = CLIP.from_pretrained(str(tmp_path / "bare"), activation="gelu")
    assert flagged.config.activation == "gelu"
    assert_same_embeddings(flagged, peer, size)


def test_non_vit_and_non_clip_files_are_refused(tmp_path: Path) -> None:
    resnet = {"visual.attnpool.c_proj.weight": torch.zeros(2, 2), "visual.layer1.0.conv1.weight": torch.zeros(1)}
    torch.save(resnet, tmp_path / "RN50.pt")
    with pytest.raises(CLIPLoadError, match="ResNet CLIP.*DGL needs a ViT CLIP"):
        CLIP.from_pretrained(str(tmp_path / "RN50.pt"))
    safetensors.torch.save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 2)}, tmp_path / "bert.safetensors")
    with pytest.raises(CLIPLoadError, match="DGL needs a ViT CLIP"):
        CLIP.from_pretrained(str(tmp_path / "bert.safetensors"))
    peer_dir = tmp_path / "siglip"
    hf_model(SIZES["small"]).save_pretrained(peer_dir)
    config = json.loads((peer_dir / "config.json").read_text())
    (peer_dir / "config.json").write_text(json.dumps({**config, "model_type": "siglip"}))
    with pytest.raises(CLIPLoadError, match="model_type 'siglip'"):
        CLIP.from_pretrained(str(peer_dir))
    (peer_dir / "config.json").unlink()
    with pytest.raises(CLIPLoadError, match="need their config.json"):
        CLIP.from_pretrained(str(peer_dir))
    open_clip_rn = tmp_path / "rn"
    write_open_clip(open_clip_rn, hf_model(SIZES["small"]), SIZES["small"])
    config = json.loads((open_clip_rn / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["layers"] = [3, 4, 6, 3]
    (open_clip_rn / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(CLIPLoadError, match="ResNet image tower"):
        CLIP.from_pretrained(str(open_clip_rn))


def test_folder_without_weights_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors, pytorch_model.bin, open_clip_model.safetensors"):
        resolve_clip_path(str(tmp_path))


def write_hub_cache(cache: Path, repo_id: str, peer: transformers.CLIPModel, revision: str = "0123abcd") -> Path:
    """The Hugging Face cache layout huggingface_hub writes: blobs named by hash, a snapshot folder of symlinks
    to them, and refs/main naming the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    staging = repo / "staging"
    peer.save_pretrained(staging)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in staging.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        file.rename(blob)
        (snapshot / file.name).symlink_to(Path("../..") / "blobs" / blob.name)
    staging.rmdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_hugging_face_id_loads_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id finds the snapshot in $HF_HOME/hub (symlinks into blobs/) and loads as transformers computes."""
    size = SIZES["small"]
    peer = hf_model(size, seed=3)
    snapshot = write_hub_cache(tmp_path / "hf" / "hub", "someone/tiny-clip", peer)
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve_clip_path("someone/tiny-clip", tmp_path / "empty") == snapshot / "model.safetensors"
    assert_same_embeddings(CLIP.from_pretrained("someone/tiny-clip", tmp_path / "empty"), peer, size)
