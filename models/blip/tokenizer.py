"""BLIP's caption tokenizer: uncased BERT WordPiece on a ``vocab.txt`` (Hugging Face ``tokenizers``), with the
two tokens BLIP adds after the vocabulary: ``[DEC]`` (the decoder's BOS) and ``[ENC]`` (ITM's first token).

Ids are ``[CLS] words [SEP] [PAD]...``, cut to ``length`` keeping ``[SEP]`` (``BertTokenizer(padding=
"max_length", truncation=True)``, as BLIP's retrieval code calls it). For ITM BLIP overwrites the first id with
``[ENC]`` (``for_itm``); the text-only (ITC) features keep ``[CLS]``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors

from .formats import BlipLoadError

CAPTION_LENGTH = 35  # BLIP's retrieval recipe (and tokenmix's)
ADDED_TOKENS = ("[DEC]", "[ENC]")  # BLIP's init_tokenizer adds them in this order: ids len(vocab), len(vocab) + 1


class BlipTokenizer:
    def __init__(self, vocab_file: str | os.PathLike, length: int = CAPTION_LENGTH):
        vocab_file = Path(vocab_file)
        words = vocab_file.read_text(encoding="utf-8").splitlines()
        vocab = {word: i for i, word in enumerate(words)}
        if len(vocab) != len(words):
            raise BlipLoadError(f"{vocab_file} lists {len(words) - len(vocab)} tokens twice: not a BERT vocabulary")
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in vocab]
        if missing:
            raise BlipLoadError(f"{vocab_file} lacks {missing}: not a BERT vocabulary")
        for token in ADDED_TOKENS:
            vocab.setdefault(token, len(vocab))
        self.length = length
        self.vocab_size = len(vocab)
        self.cls_id, self.sep_id, self.pad_id = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
        self.dec_id, self.enc_id = vocab["[DEC]"], vocab["[ENC]"]
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
        tok.add_special_tokens([AddedToken(t, normalized=False) for t in
                                ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", *ADDED_TOKENS) if t in vocab])
        self._tokenizer = tok
        self._plain = Tokenizer.from_str(tok.to_str())  # no padding, no truncation: what `encode` counts
        self._words = [w for w in words if len(w) >= 3 and w.isascii() and w.isalpha()]  # not ##pieces, [SPECIALS]

    def __call__(self, captions: str | list[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, attention_mask)``, both ``[N, length]`` int64."""
        length = length or self.length
        if length < 2:
            raise ValueError(f"caption length {length} leaves no room for [CLS] and [SEP]")
        self._tokenizer.enable_truncation(length)
        self._tokenizer.enable_padding(length=length, pad_id=self.pad_id, pad_token="[PAD]")
        batch = self._tokenizer.encode_batch([captions] if isinstance(captions, str) else list(captions))
        ids = torch.tensor([e.ids for e in batch], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.long)
        return ids, mask

    def encode(self, caption: str) -> list[int]:
        """WordPiece ids of the caption without ``[CLS]``/``[SEP]``, padding or truncation (what a length cuts)."""
        return self._plain.encode(caption, add_special_tokens=False).ids

    def words(self) -> list[str]:
        """The vocabulary's whole words of three or more ASCII letters, in vocabulary order (random text of real
        words, e.g. the search page's probes)."""
        return list(self._words)

    def for_itm(self, ids: torch.Tensor) -> torch.Tensor:
        """A copy of ``ids`` whose first token is ``[ENC]``: what BLIP's ITM pass reads."""
        ids = ids.clone()
        ids[:, 0] = self.enc_id
        return ids


def find_vocab(weights: str | os.PathLike, vocab: str | os.PathLike | None = None) -> Path:
    """``vocab`` when given, else ``vocab.txt`` in the folder ``weights`` is, or beside the file it is."""
    if vocab is not None:
        found = Path(vocab).expanduser()
    else:
        weights = Path(weights).expanduser()
        found = (weights if weights.is_dir() else weights.parent) / "vocab.txt"
    if not found.is_file():
        raise BlipLoadError(f"no BERT vocabulary at {found}: put BLIP's vocab.txt (bert-base-uncased's) there "
                            "or pass its path")
    _check_uncased(found.parent / "tokenizer_config.json")
    return found


def _check_uncased(config_file: Path) -> None:
    if config_file.is_file() and json.loads(config_file.read_text()).get("do_lower_case", True) is False:
        raise BlipLoadError(f"{config_file} sets do_lower_case false; BLIP's tokenizer is uncased")


def blip_tokenizer(weights: str | os.PathLike, vocab: str | os.PathLike | None = None,
                   length: int = CAPTION_LENGTH) -> BlipTokenizer:
    return BlipTokenizer(find_vocab(weights, vocab), length)
