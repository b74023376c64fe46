"""CLIP text tokenisation as the official DGL/CLIP4Clip loaders do it.

The byte-pair encoding itself comes from `instant_clip_tokenizer` (a Rust port of OpenAI's
tokenizer that ships the same 49,408-entry vocabulary); this module adds the caption cleaning,
the special tokens, truncation and padding of the reference loaders.
"""
from __future__ import annotations

import html
import re
from collections.abc import Sequence

import ftfy
import torch

SOT_ID = 49406  # <|startoftext|>
EOT_ID = 49407  # <|endoftext|>
PAD_ID = 0

_WHITESPACE = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    """Repair mojibake, undo (double) HTML escaping, collapse whitespace and lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class ClipTokenizer:
    """Turns captions into fixed-length CLIP token ids and attention masks.

    Each caption becomes [SOT] + BPE tokens + [EOT], where the BPE tokens are cut so that SOT plus
    tokens has at most `max_words - 1` entries (at most `max_words - 2` caption tokens survive), and
    ids and mask are zero-padded to `max_words`.

    Known difference from the reference: OpenAI's tokenizer maps a literal `<|endoftext|>` or
    `<|startoftext|>` written inside a caption to the special id, `instant_clip_tokenizer` encodes it
    as ordinary text ("<", "|", "endof", ...). Captions never contain these strings in practice, and
    treating them as text keeps a caption from ending itself early.
    """

    def __init__(self) -> None:
        self._bpe = None  # created on first use: the Rust object cannot be pickled to workers

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._bpe = None

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned caption, without special tokens or truncation."""
        if self._bpe is None:
            from instant_clip_tokenizer import Tokenizer

            self._bpe = Tokenizer()
        return self._bpe.encode(clean_caption(text))

    def __call__(self, texts: str | Sequence[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, both LongTensor [num_texts, max_words]; a str counts as one text."""
        if max_words < 2:
            raise ValueError(f"max_words must be at least 2 (room for SOT and EOT), got {max_words}")
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), max_words), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(texts), max_words), dtype=torch.long)
        for row, text in enumerate(texts):
            # Not `ids != PAD_ID`: id 0 is also the BPE token "!", so the mask comes from the length.
            tokens = [SOT_ID, *self.encode(text)[: max_words - 2], EOT_ID]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask
