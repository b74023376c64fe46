"""ITM re-ranking of a search's top K videos (a DGL-BLIP index): BLIP's evaluation rule on a live query.

An index keeps one ITC feature per video, not the thousands of output tokens the ITM head cross-attends to, so
the tokens of the few videos that reach some query's top K are recomputed from their files, with the index's own
frame reader, in batches. The scores then come from the evaluation's functions (``utils.itm_rerank``): ITM match
logit + ITC cosine for the re-scored videos. Videos outside the top K keep their ITC order after them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from apps.video_indexing import DecodeOptions, VideoFiles, collate_videos
from dataloaders.workers import worker_loader
from models.dgl import DGLConfig
from utils.itm_rerank import PairScorer, rerank_rows

QUERY_CHUNK = 16  # queries per batched ITM call (QUERY_CHUNK · K pairs), as evaluation's default


def check_itm_rerank(k: int, model: str) -> None:
    """One line refusing what cannot re-rank: ``k`` below 1, or an index whose ``model`` (its ``--model``) has no
    ITM head."""
    if k < 1:
        raise ValueError(f"--itm_rerank {k}: give K >= 1 (the top videos of each query the ITM head re-scores), "
                         "or leave the flag out for the ITC ranking")
    if model != "dgl_blip":
        raise ValueError(f"--itm_rerank {k}: this index's model (--model {model}) has no ITM head; only an index "
                         "built from a --model dgl_blip checkpoint re-ranks: drop --itm_rerank")


def ranking_label(config: DGLConfig, k: int = 0) -> str:
    """What a search's order is, worded as evaluation labels its tables (``utils.run``): ``DGL-BLIP ITC``,
    ``DGL-BLIP ITC + ITM re-rank of the top K``; ``DGL-transformer cosine`` for a model without ITM."""
    if config.model != "dgl_blip":
        return f"{config.label} cosine"
    return f"{config.label} ITC + ITM re-rank of the top {k}" if k else f"{config.label} ITC"


@torch.no_grad()
def video_tokens(encode: Callable[[Tensor], tuple[Tensor, Tensor]], files: list[Path],
                 decode: DecodeOptions) -> Tensor:
    """``[len(files), L, D]``: the tokens ITM cross-attends to (``encode`` returns features and tokens), the
    frames read as indexing read them. A file that no longer decodes stops the search with its name."""
    loader = worker_loader(VideoFiles(files, decode.frames, decode.size, decode.backend), decode.workers,
                           batch_size=decode.batch_size, collate_fn=collate_videos)
    parts = []
    for _, batch, errors in loader:
        if errors:
            position, error = errors[0]
            raise ValueError(f"{files[position]}: cannot be read for --itm_rerank ({error}); run `retrieve.py index` "
                             "again, or search without --itm_rerank")
        parts.append(encode(batch)[1].float())
    return torch.cat(parts)


def rerank_order(sim: Tensor, k: int, top_k: int,
                 score_candidates: Callable[[Tensor], PairScorer]) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``top_k`` videos of each row of the ``[Q, N]`` ITC cosine ``sim`` after ITM re-ranking its top
    ``k``: ``(positions [Q, top_k], cosines, re-rank scores (NaN past the re-scored ones))``.

    ``score_candidates(candidates)`` gets the sorted gallery positions found in any row's top ``k`` and returns
    the pair scorer over them (its video index is a position in ``candidates``); the re-rank scores are
    ``utils.itm_rerank.rerank_rows``' (evaluation's rule). The re-scored videos come first, by that score, then
    the others by cosine."""
    queries, gallery = sim.shape
    k, top_k = min(k, gallery), min(top_k, gallery)
    top_idx = sim.topk(k, dim=1).indices
    candidates = top_idx.unique()  # sorted
    rescored = rerank_rows(sim[:, candidates], torch.arange(queries, device=sim.device), k,
                           score_candidates(candidates), queries_are_texts=True, chunk=QUERY_CHUNK)
    combined = rescored.gather(1, torch.searchsorted(candidates, top_idx))
    combined, by_score = combined.sort(dim=1, descending=True, stable=True)
    first = top_idx.gather(1, by_score)
    rest = sim.scatter(1, top_idx, float("-inf")).topk(top_k - min(k, top_k), dim=1).indices
    order = torch.cat([first, rest], dim=1)[:, :top_k]
    nan = torch.full((queries, rest.shape[1]), float("nan"), dtype=combined.dtype, device=combined.device)
    return order, sim.gather(1, order), torch.cat([combined, nan], dim=1)[:, :top_k]
