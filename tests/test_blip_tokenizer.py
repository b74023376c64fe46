"""BLIP's caption tokenizer against transformers' BertTokenizer (tokenizers-backed) and BertTokenizerLegacy
(the pure-Python one BLIP's own code ran), both set up as BLIP's ``init_tokenizer`` does: [DEC] as BOS, then
[ENC] as an additional special token, ``padding="max_length", truncation=True``."""
from __future__ import annotations

import random

import pytest
import torch
import transformers
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from models.blip import CAPTION_LENGTH, BlipLoadError, BlipTokenizer, blip_tokenizer
from tests.blip_files import VOCAB, WORDS, write_vocab

ODD = ["Café", "naïve", "RÉSUMÉ", "Ångström", "façade", "😀", "🐶🐱", "猫猫", "東京", "3.14", "1,000,000", "42nd",
       "e-mail", "don't", "(hello)", "ﬁne", "x²", "\t", "\u200b", "\u00a0", "[SEP]", "[ENC]", "Dog's", "U.S.A.",
       "cooking!!!", "ROAD?", "--", "$5", "100%", "a/b", "runs…", "übermäßig", "w" * 120, "straße"]


def captions(n: int = 300) -> list[str]:
    """Deterministic captions mixing vocabulary words, letters-only words WordPiece must split, accents,
    punctuation, numbers, emoji, CJK, whitespace oddities, special-token strings, and very long ones."""
    rng = random.Random(0)
    pool = WORDS + ODD + ["playinged", "redder", "kitchens", "cars", "zyx", "MUSIC", "Video-Game"]
    out = []
    for i in range(n):
        words = rng.choices(pool, k=rng.choice([1, 3, 8, 20, 60 if i % 10 == 0 else 5]))
        sep = rng.choice([" ", "  ", " , ", "\n", ". "])
        out.append(sep.join(words) + rng.choice(["", ".", "!", " 😀", "?"]))
    return out + [""]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp("vocab"))


def blip_setup(tokenizer):
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


@pytest.mark.parametrize("peer_class", [transformers.BertTokenizer, BertTokenizerLegacy])
@pytest.mark.parametrize("length", [CAPTION_LENGTH, 8])
def test_ids_and_mask_equal_berttokenizer(vocab_file, peer_class, length):
    peer = blip_setup(peer_class.from_pretrained(str(vocab_file.parent), do_lower_case=True))
    texts = captions()
    ref = peer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    ids, mask = BlipTokenizer(vocab_file)(texts, length)
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    assert ids.shape == (len(texts), length)
    # The set exercises what it claims: unknown pieces, WordPiece splits, truncation and padding.
    assert (ids == VOCAB.index("[UNK]")).any() and (mask == 0).any() and mask.all(dim=1).any()
    assert any(VOCAB[i].startswith("##") for i in ids.flatten().tolist() if i < len(VOCAB))
    assert (peer.convert_tokens_to_ids("[DEC]"), peer.convert_tokens_to_ids("[ENC]")) == (len(VOCAB), len(VOCAB) + 1)


def test_blip_added_tokens_and_itm_ids(vocab_file):
    tok = BlipTokenizer(vocab_file)
    assert (tok.dec_id, tok.enc_id, tok.vocab_size) == (len(VOCAB), len(VOCAB) + 1, len(VOCAB) + 2)
    ids, mask = tok(["a man runs", "dog"])
    assert ids.shape == mask.shape == (2, CAPTION_LENGTH) and (ids[:, 0] == tok.cls_id).all()
    itm = tok.for_itm(ids)
    assert (itm[:, 0] == tok.enc_id).all() and torch.equal(itm[:, 1:], ids[:, 1:]) and (ids[:, 0] == tok.cls_id).all()


def test_encode_and_words_as_bert_tokenizes(vocab_file):
    """What the search page reads of a tokenizer: a caption's ids without specials (here between BLIP's [CLS] and
    [SEP], and as BertTokenizer tokenizes), and the vocabulary's whole words."""
    tok = BlipTokenizer(vocab_file)
    peer = blip_setup(transformers.BertTokenizer.from_pretrained(str(vocab_file.parent), do_lower_case=True))
    texts = captions(60)
    for text in texts:
        ids = tok.encode(text)
        assert ids == peer.convert_tokens_to_ids(peer.tokenize(text))
        if len(ids) + 2 <= 200:  # uncut: the caption's ids sit between [CLS] and [SEP]
            assert tok(text, 200)[0][0, 1 : len(ids) + 1].tolist() == ids
    assert max(len(tok.encode(t)) for t in texts) > CAPTION_LENGTH  # longer than any cut: nothing truncated
    tok(texts, 8)  # a cut call before does not shorten what encode returns
    assert tok.encode(texts[0]) == peer.convert_tokens_to_ids(peer.tokenize(texts[0]))
    assert tok.words() == [w for w in WORDS if len(w) >= 3]


def test_vocabulary_is_found_beside_the_weights_or_given(tmp_path, vocab_file):
    (tmp_path / "model_base_retrieval_coco.pth").write_bytes(b"")
    with pytest.raises(BlipLoadError, match=r"no BERT vocabulary at .*vocab.txt: put BLIP's vocab.txt"):
        blip_tokenizer(tmp_path / "model_base_retrieval_coco.pth")
    assert blip_tokenizer(tmp_path / "model_base_retrieval_coco.pth", vocab=vocab_file).enc_id == len(VOCAB) + 1
    (tmp_path / "vocab.txt").write_text(vocab_file.read_text())
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    with pytest.raises(BlipLoadError, match="do_lower_case false; BLIP's tokenizer is uncased"):
        blip_tokenizer(tmp_path / "model_base_retrieval_coco.pth", vocab=tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(BlipLoadError, match=r"vocab.txt lacks \['\[CLS\]', '\[SEP\]'\]: not a BERT vocabulary"):
        BlipTokenizer(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB + ["hello", "hello"]))
    with pytest.raises(BlipLoadError, match="lists 1 tokens twice"):
        BlipTokenizer(tmp_path / "vocab.txt")
