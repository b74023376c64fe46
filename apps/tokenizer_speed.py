"""Captions per second of `ClipTokenizer`, A/B against the previous Rust-backed one when it is installed.

``python -m apps.tokenizer_speed [--captions 5000 --rounds 5]``. The previous tokenizer (before issue 15) was
``instant_clip_tokenizer``'s BPE behind the same cleaning and padding; it is rebuilt here from those parts
when ``pip install instant-clip-tokenizer`` has been run (wheels for CPython <= 3.12 only), and the two are
timed alternately, round by round, so that a busy machine slows both alike. Both include ``clean_caption``
(ftfy), which dominates the time.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from models.tokenizer import EOT_ID, PAD_ID, SOT_ID, ClipTokenizer, clean_caption
from utils import cli

WORDS = (
    "a man woman child dog cat is are playing cooking running talking singing about the on in at with of "
    "guitar kitchen street car football video game red blue green small big people two three someone "
    "explains shows how to make pasta tomato soup news anchor reports weather while crowd cheers slowly "
    "quickly café naïve résumé don't it's they're 2024 3.5 & !"
).split()
Tokenize = Callable[[Sequence[str], int], tuple[torch.Tensor, torch.Tensor]]


def random_captions(count: int, seed: int = 0) -> list[str]:
    """Captions of 5..20 words drawn from `WORDS`, some capitalised, as in video-text datasets."""
    rng = random.Random(seed)
    return [
        " ".join(word.capitalize() if rng.random() < 0.1 else word for word in rng.choices(WORDS, k=rng.randint(5, 20)))
        for _ in range(count)
    ]


def previous_tokenizer() -> Tokenize | None:
    """The tokenizer as it was before: instant_clip_tokenizer's BPE, per-row padding; None if not installed."""
    try:
        from instant_clip_tokenizer import Tokenizer
    except ImportError:
        return None
    bpe = Tokenizer()

    def tokenize(texts: Sequence[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(texts), max_words), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, text in enumerate(texts):
            tokens = [SOT_ID, *bpe.encode(clean_caption(text))[: max_words - 2], EOT_ID]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask

    return tokenize


def captions_per_second(tokenize: Tokenize, captions: Sequence[str], batch: int = 100, max_words: int = 32) -> float:
    start = time.perf_counter()
    for i in range(0, len(captions), batch):
        tokenize(captions[i : i + batch], max_words)
    return len(captions) / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=5000, help="random captions tokenised per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is reported)")
    args = parser.parse_args(argv)
    captions = random_captions(args.captions)
    contenders: dict[str, Tokenize] = {"ours (python BPE)": ClipTokenizer()}
    previous = previous_tokenizer()
    if previous is None:
        print("instant-clip-tokenizer is not installed: timing ours only")
    else:
        contenders["previous (instant-clip-tokenizer)"] = previous
    for tokenize in contenders.values():
        tokenize(captions[:100], 32)  # warm-up: vocabulary tables, ftfy's
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, tokenize in contenders.items():
            rates[name].append(captions_per_second(tokenize, captions))
    for name, values in rates.items():
        print(f"{name:36s} median {statistics.median(values):8.0f} captions/s  (rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    sys.exit(cli.run(main))
