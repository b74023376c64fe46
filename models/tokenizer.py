"""CLIP text tokenisation as the official DGL/CLIP4Clip loaders do it.

Our own byte-pair encoder over OpenAI's CLIP vocabulary (``bpe_simple_vocab_16e6.txt.gz``, vendored beside
this file; provenance in docs/extending.md), so it runs on every Python that torch supports and needs no compiled
extension. Like OpenAI's tokenizer, a literal ``<|startoftext|>``/``<|endoftext|>`` in a caption becomes the
special id. The module also does the reference loaders' caption cleaning, truncation and padding.
"""
from __future__ import annotations

import functools
import gzip
import html
import re
from collections.abc import Sequence
from pathlib import Path

import torch

SOT_ID = 49406  # <|startoftext|>
EOT_ID = 49407  # <|endoftext|>
PAD_ID = 0

VOCAB_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
_NUM_MERGES = 49152 - 256 - 2  # OpenAI's vocabulary uses the file's first 48,894 merges
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_END_OF_WORD = "</w>"
_WHITESPACE = re.compile(r"\s+")


@functools.cache
def _pieces():
    """OpenAI's pre-tokenisation: the special tokens, English contractions, letter runs, single digits, other runs.
    ``regex`` (for the Unicode classes) is imported here, at first use, so the model code imports without it."""
    import regex

    return regex.compile(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        regex.IGNORECASE,
    )


def clean_caption(text: str) -> str:
    """Repair mojibake, undo (double) HTML escaping, collapse whitespace and lowercase."""
    import ftfy  # at use, as regex above

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _byte_symbols() -> tuple[list[str], list[str]]:
    """CLIP's printable stand-in for every byte, and the order the vocabulary lists them in.

    Printable Latin-1 bytes stand for themselves; the other bytes take the code points from 256 up, in byte
    order. The vocabulary lists the printable ones first, then the stand-ins.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    shifted = iter(range(256, 512))
    by_byte = [chr(byte) if byte in kept else chr(next(shifted)) for byte in range(256)]
    vocab_order = [chr(byte) for byte in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    return by_byte, vocab_order


class _BytePairEncoder:
    """Word-level BPE with CLIP's merge ranks; words are memoised since captions repeat them."""

    def __init__(self, vocab_file: Path) -> None:
        with gzip.open(vocab_file, "rt", encoding="utf-8") as file:
            lines = file.read().split("\n")[1 : _NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != _NUM_MERGES or any(len(pair) != 2 for pair in merges):
            raise ValueError(f"{vocab_file}: not CLIP's BPE merge list ({len(merges)} of {_NUM_MERGES} merges read)")
        self.byte_symbols, symbols = _byte_symbols()
        symbols = [*symbols, *(symbol + _END_OF_WORD for symbol in symbols)]
        tokens = [*symbols, *("".join(pair) for pair in merges), *_SPECIAL_TOKENS]
        self.ids = {token: index for index, token in enumerate(tokens)}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.word_ids: dict[str, list[int]] = {token: [self.ids[token]] for token in _SPECIAL_TOKENS}

    def encode(self, cleaned: str) -> list[int]:
        out: list[int] = []
        for piece in _pieces().findall(cleaned):
            ids = self.word_ids.get(piece)
            if ids is None:
                ids = self.word_ids[piece] = self._encode_word(piece)
            out.extend(ids)
        return out

    def _encode_word(self, piece: str) -> list[int]:
        symbols = [self.byte_symbols[byte] for byte in piece.encode("utf-8")]
        symbols[-1] += _END_OF_WORD
        return [self.ids[token] for token in self._merge(symbols)]

    def _merge(self, word: list[str]) -> list[str]:
        """Repeatedly join the adjacent pair of lowest rank (every occurrence of it) until none is mergeable."""
        ranks = self.ranks
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, _NUM_MERGES))
            if best not in ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word


@functools.lru_cache(maxsize=1)
def _shared_encoder() -> _BytePairEncoder:
    """One encoder per process (the tables take ~0.2 s to build and tens of MB)."""
    return _BytePairEncoder(VOCAB_FILE)


class ClipTokenizer:
    """Turns captions into fixed-length CLIP token ids and attention masks.

    Each caption becomes [SOT] + BPE tokens + [EOT], where the BPE tokens are cut so that SOT plus
    tokens has at most `max_words - 1` entries (at most `max_words - 2` caption tokens survive), and
    ids and mask are zero-padded to `max_words`. Pickles as an empty object (DataLoader workers).
    """

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned caption, without added special tokens or truncation."""
        return _shared_encoder().encode(clean_caption(text))

    def words(self) -> list[str]:
        """The vocabulary's whole words of three or more letters (one token each), in vocabulary order: a
        model-free source of real words, e.g. for random text."""
        ending = len(_END_OF_WORD)
        return [t[:-ending] for t in _shared_encoder().ids
                if t.endswith(_END_OF_WORD) and len(t) - ending >= 3 and t[:-ending].isascii() and t[:-ending].isalpha()]

    def __call__(self, texts: str | Sequence[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, both LongTensor [num_texts, max_words]; a str counts as one text."""
        if max_words < 2:
            raise ValueError(f"max_words must be at least 2 (room for SOT and EOT), got {max_words}")
        if isinstance(texts, str):
            texts = [texts]
        rows = [[SOT_ID, *self.encode(text)[: max_words - 2], EOT_ID] for text in texts]
        # Not `ids != PAD_ID`: id 0 is also the BPE token "!", so the mask comes from the lengths.
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        mask = (torch.arange(max_words) < lengths.unsqueeze(1)).long()
        ids = torch.full((len(rows), max_words), PAD_ID, dtype=torch.long)
        ids[mask.bool()] = torch.tensor([token for row in rows for token in row], dtype=torch.long)
        return ids, mask
