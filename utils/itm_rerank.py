"""ITM re-ranking of an ITC similarity matrix, as BLIP's retrieval evaluation (``train_retrieval.py``).

Each text's top-K videos and each video's top-K texts by ITC cosine are re-scored with the ITM head; a
re-scored item gets ``ITM match logit + ITC cosine``, every other item ``-100``. Queries are processed in
chunks (one batched ITM call of ``chunk · K`` pairs each) and can be split over ranks: rank ``r`` scores a
contiguous slice of the queries, and a gather of equal-shaped tensors assembles the full matrices, so every
rank ends with the unsharded result (BLIP all-reduces ``-100``-filled matrices instead, shifting scores by a
constant per row).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

UNRANKED = -100.0  # BLIP's score for items outside a query's top-K

# (text indices [n], video indices [n]) -> ITM match scores [n]
PairScorer = Callable[[Tensor, Tensor], Tensor]


def blip_pair_scorer(itm_logits: Callable[[Tensor, Tensor, Tensor], Tensor], itm_ids: Tensor, attention_mask: Tensor,
                     video_tokens: Tensor, device: torch.device | None = None) -> PairScorer:
    """Score pairs with BLIP's ITM head: the match logit (``itm_head`` column 1, as BLIP's evaluation), of
    ``[ENC]``-led ``itm_ids`` cross-attending to ``video_tokens`` (which may stay on the host; each chunk moves
    to ``device``). The pair indices may live on another device than the tensors they index."""
    def score(texts: Tensor, videos: Tensor) -> Tensor:
        to = (lambda t: t.to(device)) if device is not None else (lambda t: t)
        texts, videos = texts.to(itm_ids.device), videos.to(video_tokens.device)
        return itm_logits(to(itm_ids[texts]), to(attention_mask[texts]), to(video_tokens[videos]))[:, 1].float()
    return score


def rerank_rows(sim: Tensor, query_index: Tensor, k: int, score: PairScorer, queries_are_texts: bool,
                chunk: int) -> Tensor:
    """Re-score the top-``k`` of each row of ``sim`` (``[queries, gallery]``); ``query_index`` holds each row's
    query number in the full matrix (what ``score`` is called with)."""
    k = min(k, sim.shape[1])
    top_sim, top_idx = sim.topk(k, dim=1)
    out = torch.full(sim.shape, UNRANKED, dtype=torch.float32, device=sim.device)
    for lo in range(0, sim.shape[0], chunk):
        hi = min(lo + chunk, sim.shape[0])
        queries = query_index[lo:hi].repeat_interleave(k)
        items = top_idx[lo:hi].flatten()
        itm = score(queries, items) if queries_are_texts else score(items, queries)
        out[lo:hi].scatter_(1, top_idx[lo:hi], itm.to(out.device).view(hi - lo, k) + top_sim[lo:hi].float())
    return out


def itm_rerank(sim: Tensor, k: int, score: PairScorer, chunk: int = 16, rank: int = 0, world_size: int = 1,
               gather: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``(text-to-video [T, V], video-to-text [V, T])`` re-ranked scores of the ``[T, V]`` ITC cosine ``sim``.

    ``k`` larger than a gallery re-scores all of it. With ``world_size > 1`` this rank scores its slice of the
    queries and ``gather`` (concatenate every rank's equal-shaped tensor in rank order, e.g.
    ``models.losses.gather_with_grad``) assembles the rows; every rank returns the same matrices.
    """
    if k < 1 or chunk < 1:
        raise ValueError(f"--itm_rerank K must be >= 1 (and the query chunk too), got K={k}, chunk={chunk}")
    if world_size > 1 and gather is None:
        raise ValueError("itm_rerank over several ranks needs a gather function")
    results = []
    for rows, texts in ((sim, True), (sim.t(), False)):
        count = rows.shape[0]
        per_rank = math.ceil(count / world_size)
        lo, hi = min(rank * per_rank, count), min((rank + 1) * per_rank, count)
        local = rerank_rows(rows[lo:hi], torch.arange(lo, hi, device=rows.device), k, score, texts, chunk)
        if world_size > 1:
            padded = torch.full((per_rank, rows.shape[1]), UNRANKED, dtype=local.dtype, device=local.device)
            padded[: hi - lo] = local
            local = gather(padded)[:count]
        results.append(local)
    return results[0], results[1]
