"""The words of the synthetic world's captions, and the WordPiece vocabulary a tiny BERT-tokenised backbone
(BLIP) reads them with: BERT's layout, so every caption tokenises without ``[UNK]``."""
from __future__ import annotations

import re
import string

from preprocess import synthetic_world as world
from preprocess.synthetic_stills import POSITION_PHRASES, SIZE_WORDS, STILL_TEMPLATES

BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] first: BLIP finds a caption's end by it


def words_of(texts) -> set[str]:
    """The lower-case words of the texts, punctuation dropped: what a vocabulary check compares."""
    return {word for text in texts for word in re.findall(r"[a-z]+", text.lower())}


def _template_words(templates) -> list[str]:
    return [re.sub(r"\{[a-z_]+\}", " ", t) for t in templates]


def video_caption_words() -> set[str]:
    """Every word the synthetic video captions can use (templates, motions, colours, shapes, backgrounds)."""
    texts = _template_words(world.CAPTION_TEMPLATES)
    texts += [p for phrases in world.MOTION_PHRASES.values() for p in phrases]
    texts += [w for words in world.SHAPE_WORDS.values() for w in words]
    texts += [*world.COLOURS, *world.BACKGROUNDS, "a", "an"]
    return words_of(texts)


def still_caption_words() -> set[str]:
    """Every word the still captions (preprocess/synthetic_stills.py) can use."""
    texts = _template_words(STILL_TEMPLATES) + [p for phrases in POSITION_PHRASES.values() for p in phrases]
    texts += [w for words in SIZE_WORDS.values() for w in words]
    return words_of(texts)


def wordpiece_vocabulary() -> list[str]:
    """A bert-base-uncased-shaped ``vocab.txt``, one token a line: the special tokens, punctuation, digits,
    single letters and their ``##`` continuations (so any lower-case word still splits into pieces), then
    every caption word whole, sorted; deterministic, so its hash names it in the cache key."""
    singles = list(string.punctuation) + list(string.digits) + list(string.ascii_lowercase)
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    words = sorted((video_caption_words() | still_caption_words()) - set(singles))
    return [*BERT_SPECIAL, *singles, *pieces, *words]
