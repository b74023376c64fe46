"""When to warn that a query matched nothing well: its best score is no higher than what random text reaches
on the same index.

A cosine has no fixed scale across models and indexes (a tiny model's scores sit near 0.9, a real CLIP's near
0.3), so the bar is measured on the index itself: `PROBES` strings of 3-8 random vocabulary words (a fixed seed:
the same strings for every index) are searched, each keeps its best score, and the floor is their
`PERCENTILE`-th percentile. A query whose best score lies below the floor did no better than most
meaningless strings, whichever video it ranks first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from apps.retrieval import Retriever
from models.tokenizer import ClipTokenizer

PROBES = 128
PERCENTILE = 95.0
SEED = 0


def probe_texts(tokenizer: ClipTokenizer, count: int = PROBES, seed: int = SEED) -> list[str]:
    """``count`` strings of 3 to 8 words drawn uniformly from the tokenizer's vocabulary words."""
    words = tokenizer.words()
    rng = np.random.default_rng(seed)
    return [" ".join(words[i] for i in rng.choice(len(words), size=rng.integers(3, 9))) for _ in range(count)]


@dataclass(frozen=True)
class ScoreFloor:
    """The best-score floor of one index and model; ``probes_best`` are the probes' best cosines, sorted.
    An index without videos has no floor (None) and flags nothing."""

    threshold: float | None
    percentile: float
    probes_best: tuple[float, ...]

    def low(self, best: float) -> bool:
        return self.threshold is not None and best < self.threshold

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "probes_best"} | {"probes": len(self.probes_best)}


def score_floor(retriever: Retriever, probes: list[str] | None = None, percentile: float = PERCENTILE) -> ScoreFloor:
    """Search the open index with the probes (default: `probe_texts`) and take the percentile of their best
    scores (linear interpolation between the nearest two, as ``numpy.percentile``)."""
    probes = probes if probes is not None else probe_texts(retriever.tokenizer)
    best = sorted(hits[0].score for hits in retriever.search(probes, k=1) if hits)
    return ScoreFloor(float(np.percentile(best, percentile)) if best else None, percentile, tuple(best))
