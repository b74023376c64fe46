"""Tiny BLIP retrieval files for the tests: a BERT vocabulary that exercises WordPiece, random transformers
``BlipForImageTextRetrieval`` models written with ``save_pretrained``, and the same weights in the original
BLIP release layout. transformers is test-only (scripts/_venv.sh installs it)."""
from __future__ import annotations

import csv
import re
import string
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from tests.layouts import make_msrvtt

WORDS = ("man dog cat the is are playing with on in of and to red blue car road people woman runs running "
         "cafe naive resume angstrom facade music video game talk show cooking kitchen").split()
PIECES = ("##ing ##ed ##er ##ly ##est ##tion ##able").split()
# BERT's layout: [PAD] first, then specials, punctuation, digits, single letters and their ## forms (so every
# lowercase ASCII word splits into pieces), then whole words and multi-letter pieces.
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation) + list(string.digits)
         + list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase + string.digits]
         + ["猫"] + WORDS + PIECES)
assert len(set(VOCAB)) == len(VOCAB)


def write_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


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
    embed_dim: int = 16
    vision_mlp: int | None = None  # default 4x width
    text_mlp: int | None = None
    vision_eps: float | None = None  # None: transformers' default (written into config.json all the same)
    text_eps: float | None = None
    act: str = "gelu"


def hf_blip(size: Size, seed: int = 0) -> transformers.BlipForImageTextRetrieval:
    """A random ``BlipForImageTextRetrieval`` with weights spread enough that every head, norm and pooling
    choice shows in the outputs (transformers' init leaves the ViT near zero)."""
    eps = lambda value: {} if value is None else {"layer_norm_eps": value}  # noqa: E731
    config = transformers.BlipConfig(
        vision_config=dict(hidden_size=size.vision_width, intermediate_size=size.vision_mlp or 4 * size.vision_width,
                           num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
                           image_size=size.resolution, patch_size=size.patch, hidden_act=size.act, **eps(size.vision_eps)),
        text_config=dict(vocab_size=len(VOCAB) + 2, hidden_size=size.text_width,
                         intermediate_size=size.text_mlp or 4 * size.text_width, num_hidden_layers=size.text_layers,
                         num_attention_heads=size.text_heads, max_position_embeddings=40, hidden_act=size.act,
                         bos_token_id=len(VOCAB), sep_token_id=VOCAB.index("[SEP]"), **eps(size.text_eps)),
        image_text_hidden_size=size.embed_dim,
    )
    model = transformers.BlipForImageTextRetrieval(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(r"(layer_?norm|LayerNorm)", name, re.IGNORECASE):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 and "embedding" not in name else 1
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else fan_in**-0.5))
    return model


def write_hf_folder(folder: Path, size: Size, seed: int = 0, safe: bool = True) -> transformers.BlipForImageTextRetrieval:
    """``save_pretrained``; ``safe=False`` then swaps the weights into ``pytorch_model.bin``, the layout of older
    hub uploads (transformers 5 writes safetensors only)."""
    model = hf_blip(size, seed)
    model.save_pretrained(folder)
    if not safe:
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    write_vocab(folder)
    return model


# The original release's names, from the key table of transformers' convert_blip_original_pytorch_to_hf.py
# (rename_key: original -> transformers), as (transformers, original) substrings applied in order.
HF_TO_ORIGINAL = [
    ("vision_model.post_layernorm", "visual_encoder.norm"),
    ("vision_model.embeddings.patch_embedding", "visual_encoder.patch_embed.proj"),
    ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
    ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
    ("vision_model.encoder.layers", "visual_encoder.blocks"),
    ("self_attn.projection", "attn.proj"),
    ("self_attn", "attn"),
    ("layer_norm1", "norm1"),
    ("layer_norm2", "norm2"),
]


def convert_script_rename(key: str) -> str:
    """transformers' ``rename_key`` of that script (original -> transformers), transcribed as the spec the
    inverse above is checked against."""
    if "visual_encoder" in key:
        key = re.sub("visual_encoder*", "vision_model.encoder", key)
    for pattern, new in (("blocks", "layers"), ("attn", "self_attn"), ("norm1", "layer_norm1"), ("norm2", "layer_norm2"),
                         ("encoder.norm", "post_layernorm"), ("encoder.patch_embed.proj", "embeddings.patch_embedding"),
                         ("encoder.pos_embed", "embeddings.position_embedding"),
                         ("encoder.cls_token", "embeddings.class_embedding")):
        if pattern in key:
            key = re.sub(pattern, new, key)
    if "self_attn" in key:
        key = re.sub("self_attn.proj", "self_attn.projection", key)
    return key


def original_state(model: transformers.BlipForImageTextRetrieval, temp: float = 0.05) -> dict[str, torch.Tensor]:
    """``model``'s weights under the original release's names, plus ``temp``, momentum copies and queues."""
    state = {}
    for key, value in model.state_dict().items():
        for old, new in HF_TO_ORIGINAL:
            key = key.replace(old, new)
        state[key] = value.clone()
    for key in [k for k in state if k.startswith(("visual_encoder.", "text_encoder.", "vision_proj.", "text_proj."))]:
        head, rest = key.split(".", 1)
        state[f"{head}_m.{rest}"] = state[key] + 0.01  # momentum copies differ from the model
    embed = model.config.image_text_hidden_size
    state.update(temp=torch.tensor(temp), image_queue=torch.randn(embed, 8), text_queue=torch.randn(embed, 8),
                 idx_queue=torch.full((1, 8), -100), ptr_queue=torch.zeros(1, dtype=torch.long))
    return state


SIZE = Size(vision_width=64, vision_layers=2, vision_heads=2, patch=8, resolution=32, text_width=32, text_layers=2,
            text_heads=4)
# Six test pairs for the command-level BLIP tests, in the official JSFusion CSV: one caption per video, words of tests/blip_files.py's vocabulary.
TEST_PAIRS = {"video0": "a man is playing with a dog", "video1": "red car on the road",
              "video2": "people cooking in a kitchen", "video3": "a cat runs",
              "video4": "the woman talks on a music show", "video5": "blue video game"}
FRAMES = {"video0": 30, "video1": 5, "video2": 13, "video3": 24, "video4": 9, "video5": 36}


def make_pairs_msrvtt(root: Path):
    """tests/layouts.py's MSR-VTT layout with `FRAMES` videos and `TEST_PAIRS` as its test CSV."""
    cfg = make_msrvtt(root, FRAMES)
    with open(cfg.val_csv, "w", newline="") as f:
        csv.writer(f).writerows([["key", "vid_key", "video_id", "sentence"],
                                 *([f"ret{i}", f"msr{i}", v, c] for i, (v, c) in enumerate(TEST_PAIRS.items()))])
    return cfg
