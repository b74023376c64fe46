"""The tokenizer against the official MSR-VTT loader's output (tokenizer_cases.json)."""
import json

import pytest
import torch

from models.tokenizer import EOT_ID, SOT_ID, ClipTokenizer, clean_caption

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
    cases = [c for c in data["cases"] if SPECIAL_TOKEN_TEXT not in c["caption"]]
    assert len(cases) == 19
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


def test_literal_special_token_stays_text(fixture_dir, tokenizer):
    """Documented deviation: the reference turns the literal into id 49407, we keep it as text."""
    data = load_cases(fixture_dir)
    case = next(c for c in data["cases"] if SPECIAL_TOKEN_TEXT in c["caption"])
    assert case["input_ids"].count(EOT_ID) == 2  # the reference's extra special id
    ids, mask = tokenizer(case["caption"], data["max_words"])
    row = ids[0].tolist()
    assert row.count(EOT_ID) == 1 and row.count(SOT_ID) == 1
    length = int(mask.sum())
    assert row[length - 1] == EOT_ID
    # The words around the literal tokenise exactly as in the reference.
    assert row[:4] == case["input_ids"][:4]
    assert tokenizer.encode("inside it") == case["input_ids"][5:7]
    assert length == 2 + len(tokenizer.encode(case["caption"])) > len(case["bpe_tokens"]) + 2


def test_cleaning_steps():
    assert clean_caption("  A&amp;amp;B \t C\n") == "a&b c"
    assert clean_caption("cafÃ©") == "café"


def test_pickles_without_the_rust_object(tokenizer):
    import pickle

    tokenizer.encode("warm up")
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone("a dog", 6)[0].tolist() == tokenizer("a dog", 6)[0].tolist()


def test_rejects_too_small_max_words(tokenizer):
    with pytest.raises(ValueError, match="max_words"):
        tokenizer("a", 1)
