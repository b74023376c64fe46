"""The tokenizer against the official MSR-VTT loader's output (tokenizer_cases.json)."""
import hashlib
import json

import pytest
import torch

from models.tokenizer import EOT_ID, SOT_ID, VOCAB_FILE, ClipTokenizer, _shared_encoder, clean_caption

SPECIAL_TOKEN_TEXT = "<|endoftext|>"


def load_cases(fixture_dir):
    data = json.loads((fixture_dir / "tokenizer_cases.json").read_text())
    assert (data["sot_id"], data["eot_id"], data["pad_id"]) == (SOT_ID, EOT_ID, 0)
    return data


@pytest.fixture(scope="module")
def tokenizer():
    return ClipTokenizer()


def test_reference_cases_match_ids_and_masks(fixture_dir, tokenizer):
    data = load_cases(fixture_dir)
    cases = data["cases"]
    assert len(cases) == 20
    ids, mask = tokenizer([c["caption"] for c in cases], data["max_words"])
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [c["input_ids"] for c in cases]
    assert mask.tolist() == [c["input_mask"] for c in cases]
    for case in cases:
        assert len(tokenizer.encode(case["caption"])) == case["n_bpe_tokens"]


def test_truncation_keeps_sot_and_eot(fixture_dir, tokenizer):
    data = load_cases(fixture_dir)
    long_case = next(c for c in data["cases"] if c["truncated"])
    ids, mask = tokenizer(long_case["caption"], 8)
    bpe = tokenizer.encode(long_case["caption"])
    assert ids.tolist() == [[SOT_ID, *bpe[:6], EOT_ID]]
    assert mask.tolist() == [[1] * 8]


def test_single_string_gives_one_row_and_short_padding(tokenizer):
    ids, mask = tokenizer("a", 5)
    assert ids.tolist() == [[SOT_ID, 320, EOT_ID, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0]]


def test_literal_special_token_becomes_the_special_id(fixture_dir, tokenizer):
    """As in OpenAI's tokenizer: the literal inside a caption is one EOT id, so the caption has two."""
    data = load_cases(fixture_dir)
    case = next(c for c in data["cases"] if SPECIAL_TOKEN_TEXT in c["caption"])
    bpe = tokenizer.encode(case["caption"])
    assert bpe.count(EOT_ID) == 1 and tokenizer.encode("<|startoftext|>") == [SOT_ID]
    assert bpe == tokenizer.encode("a caption with") + [EOT_ID] + tokenizer.encode("inside it")


def test_vocabulary_file_is_openais():
    digest = hashlib.sha256(VOCAB_FILE.read_bytes()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


@pytest.mark.parametrize("text", ["über-naïve 日本語 ½ x² ǅ", "tab\tnew\nline 😀🎸 \u0301e", "'S'T 'LL", "a" * 300])
def test_tokens_spell_the_cleaned_text(tokenizer, text):
    """Invariant of byte-level BPE: the tokens' bytes, end-of-word markers removed, are the caption's bytes
    without whitespace; every token is one of the 49,408, and special ids never appear from plain text."""
    encoder = _shared_encoder()
    spelling = {index: token.removesuffix("</w>") for token, index in encoder.ids.items()}
    byte_of = {symbol: byte for byte, symbol in enumerate(encoder.byte_symbols)}
    ids = tokenizer.encode(text)
    assert all(0 <= i < SOT_ID for i in ids)
    spelled = bytes(byte_of[ch] for i in ids for ch in spelling[i])
    assert spelled == "".join(clean_caption(text).split()).encode("utf-8")


def test_known_words_are_single_tokens(tokenizer):
    """Whole common words are vocabulary entries (hand-checked ids in OpenAI's vocabulary)."""
    assert tokenizer.encode("a") == [320]
    assert tokenizer.encode("A DOG") == tokenizer.encode("a dog") == [320, 1929]


def test_cleaning_steps():
    assert clean_caption("  A&amp;amp;B \t C\n") == "a&b c"
    assert clean_caption("cafÃ©") == "café"


def test_pickles_small_and_tokenizes_the_same(tokenizer):
    import pickle

    blob = pickle.dumps(tokenizer)
    assert len(blob) < 200  # workers rebuild the tables instead of receiving them
    assert pickle.loads(blob)("a dog", 6)[0].tolist() == tokenizer("a dog", 6)[0].tolist()


def test_empty_batch(tokenizer):
    ids, mask = tokenizer([], 4)
    assert ids.shape == mask.shape == (0, 4)


def test_rejects_too_small_max_words(tokenizer):
    with pytest.raises(ValueError, match="max_words"):
        tokenizer("a", 1)
