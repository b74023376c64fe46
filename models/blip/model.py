"""BLIP's image-text retrieval model: ViT, BERT with cross-attention, the ITC projections, the ITM head and the
learned temperature, with the methods a video-retrieval backbone needs.

Retrieval features follow BLIP (``F.normalize(proj(CLS))`` from both towers); ``itm_logits`` is the
multimodal pass BLIP re-ranks with. Parameter names: vision ours (models/blip/vision.py), text BERT's, heads
BLIP's (``vision_proj``, ``text_proj``, ``itm_head``, ``temp``); models/blip/formats.py maps both released layouts.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import Traits
from .config import BlipConfig
from .text import BlipTextEncoder
from .vision import BlipVisionTransformer

INITIAL_TEMPERATURE = 0.07  # BLIP's initial ``temp``; used where a file does not carry the trained value
PAD_ID = 0  # BERT's [PAD], the first line of its vocab.txt (models/backbones.py refuses a vocabulary without it there)


class BlipRetrieval(nn.Module):
    # The Backbone interface (models/backbone.py): bidirectional BERT read at [CLS]; CLS first in every frame;
    # BERT takes no prompts among its words here, the ViT takes DGL's frame and global prompts.
    traits = Traits(text_pooling="cls", causal_text=False, vision_cls_index=0, text_prompts=False,
                    frame_prompts=True, global_prompts=True)
    fingerprint_keys = ("visual.cls_token", "visual.pos_embed", "text_encoder.embeddings.position_embeddings.weight",
                        "vision_proj.weight", "text_proj.weight")

    def __init__(self, cfg: BlipConfig, temperature: float = INITIAL_TEMPERATURE):
        super().__init__()
        self.config = cfg
        self.visual = BlipVisionTransformer(cfg.image_resolution, cfg.vision_patch_size, cfg.vision_width,
                                            cfg.vision_layers, cfg.vision_heads, cfg.vision_mlp_width,
                                            cfg.vision_eps, cfg.vision_activation)
        self.text_encoder = BlipTextEncoder(cfg.vocab_size, cfg.context_length, cfg.text_width, cfg.text_layers,
                                            cfg.text_heads, cfg.text_mlp_width, cfg.text_eps, cfg.text_activation,
                                            cfg.vision_width if cfg.cross_attention else None)
        self.vision_proj = nn.Linear(cfg.vision_width, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim)
        self.itm_head = nn.Linear(cfg.text_width, 2)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        # Momentum encoders and ITC queues of an original training file (``*_m`` keys, ``*_queue``), by their
        # original names; not parameters of this model, kept for training that distils from them.
        self.momentum_state: dict[str, torch.Tensor] = {}
        self.vocab_file: Path | None = None  # the vocab.txt beside the weights it was loaded from (the tokenizer's)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], config: BlipConfig) -> "BlipRetrieval":
        """Our own ``state_dict()`` back into a model (its sizes travel separately: heads and eps are not in it)."""
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model

    # Vision.
    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.visual.blocks

    @property
    def vision_norm(self) -> nn.Module:
        return self.visual.norm

    def embed_frames(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, 1 + grid², vision width]``: CLS, patches, positions."""
        return self.visual.embed(images)

    def project_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """Block outputs ``[..., vision width]`` -> ``[..., embed]``: final norm, then ``vision_proj``."""
        return self.vision_proj(self.visual.norm(tokens))

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Every normed output token ``[N, 1 + grid², vision width]``: what ITM cross-attends to."""
        return self.visual(images)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``vision_proj(CLS)``, not normalised (the meanP baseline normalises each frame, then averages)."""
        return self.vision_proj(self.image_tokens(images)[:, 0])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode_image(images), dim=-1)

    # Text.
    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.text_encoder.encoder.layer

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[N, L]`` -> ``[N, L, text width]``: word plus position embeddings, already LayerNorm'd (BERT's
        embedding norm; unlike CLIP, the text blocks are post-LN and take a padding mask)."""
        return self.text_encoder.embeddings(input_ids)

    def text_end(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[N]`` position of each caption's last id before the padding (its [SEP])."""
        words = (input_ids != PAD_ID).long()
        return input_ids.shape[1] - 1 - words.flip(-1).argmax(dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``text_proj`` of the CLS (position 0) hidden state of the bidirectional, text-only pass, not
        normalised. Without ``attention_mask`` the keys after each caption's ``text_end`` (its padding) are hidden."""
        if attention_mask is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            attention_mask = positions <= self.text_end(input_ids).unsqueeze(1)
        return self.project_text(self.text_encoder(input_ids, attention_mask)[:, 0])

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_proj(tokens)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)

    # Matching.
    def itm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   image_tokens: torch.Tensor) -> torch.Tensor:
        """``[N, 2]`` (no match, match) logits of N (caption, image) pairs. BLIP feeds ids whose first token is
        ``[ENC]`` here (``BlipTokenizer.for_itm``); ``image_tokens`` are :meth:`image_tokens`' output."""
        if not self.config.cross_attention:
            raise ValueError("these BLIP weights have no cross-attention layers: ITM needs a retrieval model")
        return self.itm_head(self.text_encoder(input_ids, attention_mask, image_tokens)[:, 0])

    @property
    def logit_scale(self) -> torch.Tensor:
        """``log(1 / temp)``: the CLIP-style log scale of BLIP's temperature (``exp`` gives 1 / temp)."""
        return -self.temp.log()
