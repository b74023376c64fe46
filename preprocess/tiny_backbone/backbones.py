"""What the tiny-backbone pretraining needs of each registered backbone (models/backbones.py), by the same name:
its recipes, how the recipe's fields become its sizes, its tokenizer, which tensors the optimiser treats
apart, how its temperature is kept in range, and the file its registry entry loads.

One training loop, one loss (models.losses) and one evaluation serve every entry. CLIP's entry reproduces the
tiny CLIP of before bit for bit (same cache key, same weights for the same seed); BLIP's writes an original
release layout ``.pth`` with the ``vocab.txt`` the synthetic world's words make beside it.
"""
from __future__ import annotations

import hashlib
import math
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.backbones import Tokenizer, get_backbone, get_tokenizer
from models.blip import BlipConfig, BlipRetrieval
from models.blip.formats import ORIGINAL_HEAD_WIDTH, ORIGINAL_TEXT_EPS, ORIGINAL_VISION_EPS
from models.blip.tokenizer import BlipTokenizer
from models.checkpoint import atomic_save
from models.clip import CLIP
from models.files import atomic_write
from preprocess.tiny_backbone.recipe import DEFAULT, MAX_LOGIT_SCALE, QUICK, Recipe
from preprocess.tiny_backbone.vocabulary import wordpiece_vocabulary


@dataclass(frozen=True)
class TinyBackbone:
    default: Recipe
    quick: Recipe
    tokenizer: Callable[[], Tokenizer]
    build: Callable[[Recipe, Tokenizer], nn.Module]  # random weights of the recipe's sizes (seed torch first)
    sparse_table: Callable[[nn.Module], nn.Embedding | None]  # a token table too big for dense Adam, or None
    no_decay: frozenset[str]  # parameters of 2+ dims that are not weight-decayed (gains and biases never are)
    clamp_temperature: Callable[[nn.Module], None]  # after each step: logit scale within [0, log 100]
    # (model, FILE) -> {name: path} of the files written beside FILE, which the sidecar hashes too
    write: Callable[[nn.Module, Path], dict[str, Path]]
    key: Mapping[str, object] = field(default_factory=dict)  # what names the backbone in the cache key


# ------------------------------------------------------------------------------------------------------ CLIP
def openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """``CLIP.state_dict()`` (fp32, OpenAI names) plus the 0-d int64 metadata of OpenAI's archives."""
    cfg = model.config
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    state["input_resolution"] = torch.tensor(cfg.image_resolution, dtype=torch.int64)
    state["context_length"] = torch.tensor(cfg.context_length, dtype=torch.int64)
    state["vocab_size"] = torch.tensor(cfg.vocab_size, dtype=torch.int64)
    return state


def _write_clip(model: CLIP, out: Path) -> dict[str, Path]:
    atomic_save(openai_state_dict(model), out)
    return {}


def _clamp_clip(model: CLIP) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)


CLIP_ENTRY = TinyBackbone(
    default=DEFAULT, quick=QUICK, tokenizer=lambda: get_tokenizer("openai-clip"),
    build=lambda recipe, _tokenizer: CLIP(recipe.clip_config()),
    sparse_table=lambda model: model.token_embedding,
    no_decay=frozenset({"positional_embedding", "visual.positional_embedding", "visual.class_embedding",
                        "logit_scale"}),
    clamp_temperature=_clamp_clip, write=_write_clip,
)


# ------------------------------------------------------------------------------------------------------ BLIP
VOCAB = wordpiece_vocabulary()
VOCAB_TEXT = "\n".join(VOCAB) + "\n"
VOCAB_SHA256 = hashlib.sha256(VOCAB_TEXT.encode()).hexdigest()
# Our names -> the original release's (models/blip/formats.py ORIGINAL_RULES read the other way), first match wins.
TO_ORIGINAL = [(r"^visual\.blocks\.(\d+)\.ln_(\d)\.", r"visual_encoder.blocks.\1.norm\2."),
               (r"^visual\.blocks\.(\d+)\.attn\.in_proj_", r"visual_encoder.blocks.\1.attn.qkv."),
               (r"^visual\.blocks\.(\d+)\.attn\.out_proj\.", r"visual_encoder.blocks.\1.attn.proj."),
               (r"^visual\.patch_embed\.", "visual_encoder.patch_embed.proj."), (r"^visual\.", "visual_encoder.")]


def blip_tokenizer(length: int = 32) -> BlipTokenizer:
    """BLIP's tokenizer on the synthetic world's vocabulary (it reads the file once, then keeps nothing open)."""
    with tempfile.TemporaryDirectory(prefix="tiny_blip_vocab") as folder:
        path = Path(folder) / "vocab.txt"
        path.write_text(VOCAB_TEXT, encoding="utf-8")
        return BlipTokenizer(path, length)


def blip_config(recipe: Recipe, vocab_size: int) -> BlipConfig:
    """BLIP's shape at the recipe's sizes: heads of 64 channels, 4x MLPs, eps and GELU as BLIP's releases, i.e.
    exactly what the original-layout loader assumes of a file whose shapes say nothing more."""
    heads = recipe.width // ORIGINAL_HEAD_WIDTH
    return BlipConfig(
        embed_dim=recipe.embed_dim, image_resolution=recipe.resolution, vision_layers=recipe.layers,
        vision_width=recipe.width, vision_heads=heads, vision_patch_size=recipe.patch,
        grid_size=recipe.resolution // recipe.patch, context_length=recipe.context, vocab_size=vocab_size,
        text_width=recipe.width, text_heads=heads, text_layers=recipe.layers, vision_mlp_width=4 * recipe.width,
        text_mlp_width=4 * recipe.width, vision_eps=ORIGINAL_VISION_EPS, text_eps=ORIGINAL_TEXT_EPS,
    )


def blip_original_state_dict(model: BlipRetrieval) -> dict[str, torch.Tensor]:
    """``model``'s tensors under the original release's names and shapes (``model_base_retrieval_coco.pth``)."""
    state = {}
    for key, value in model.state_dict().items():
        for pattern, new in TO_ORIGINAL:
            key, hits = re.subn(pattern, new, key)
            if hits:
                break
        state[key] = value.detach().clone().contiguous()
    state["visual_encoder.cls_token"] = state["visual_encoder.cls_token"].view(1, 1, -1)
    state["visual_encoder.pos_embed"] = state["visual_encoder.pos_embed"].unsqueeze(0)
    return state


def _write_blip(model: BlipRetrieval, out: Path) -> dict[str, Path]:
    vocab = out.with_name("vocab.txt")
    if vocab.exists() and vocab.read_text(encoding="utf-8") != VOCAB_TEXT:
        raise FileExistsError(f"{vocab} holds another vocabulary, which the BLIP loader would read for {out}: "
                              "write the tiny BLIP into its own folder (--out)")
    atomic_write(vocab, lambda f: f.write(VOCAB_TEXT), mode="w")
    atomic_save(blip_original_state_dict(model), out)
    return {"vocab.txt": vocab}


def _clamp_blip(model: BlipRetrieval) -> None:
    with torch.no_grad():  # logit scale -log(temp) within [0, log 100], as CLIP's
        model.temp.clamp_(math.exp(-MAX_LOGIT_SCALE), 1.0)


BLIP_ENTRY = TinyBackbone(
    default=DEFAULT, quick=QUICK,  # the tiny CLIP's recipes: the --quick one learns colour, shape and twin captions
    tokenizer=blip_tokenizer,
    build=lambda recipe, tokenizer: BlipRetrieval(blip_config(recipe, tokenizer.vocab_size)),
    sparse_table=lambda model: None,  # a few hundred words: dense AdamW is cheap
    no_decay=frozenset({"visual.cls_token", "visual.pos_embed", "text_encoder.embeddings.word_embeddings.weight",
                        "text_encoder.embeddings.position_embeddings.weight"}),
    clamp_temperature=_clamp_blip, write=_write_blip,
    key={"backbone": "blip", "vocabulary_sha256": VOCAB_SHA256},
)

TINY_BACKBONES: dict[str, TinyBackbone] = {"openai-clip": CLIP_ENTRY, "blip": BLIP_ENTRY}


def tiny_backbone(name: str) -> TinyBackbone:
    get_backbone(name)  # an unregistered name fails there, with the registered ones listed
    if name not in TINY_BACKBONES:
        raise ValueError(f"--backbone {name}: no tiny pretraining recipe; available: {sorted(TINY_BACKBONES)}")
    return TINY_BACKBONES[name]
