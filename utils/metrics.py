"""Text-video retrieval metrics (R@K, median and mean rank) from a caption x video similarity matrix.

Tie rule: each query gets exactly ONE rank, the number of gallery items that score strictly higher than
its ground truth (0-based; reported ranks are 1-based). Ties are therefore resolved in the query's favour.
The official CLIP4Clip-style code instead emits one rank per tied position, so a tied query is counted
several times and the denominator grows (spec §5.1, §7 bug 29); on tie-free matrices both agree.
"""
from __future__ import annotations

import torch
from torch import Tensor

RECALL_KS = (1, 5, 10)
METRIC_NAMES = tuple(f"R@{k}" for k in RECALL_KS) + ("MdR", "MnR")

# Rows compared per block: bounds the [rows, gallery] boolean temporary for VATEX-size matrices.
_CHUNK_ROWS = 8192


def rank_metrics(ranks: Tensor) -> dict[str, float]:
    """R@K in percent, median and mean rank (1-based) from 0-based ranks, one per query."""
    ranks = ranks.double()
    metrics = {f"R@{k}": 100.0 * (ranks < k).double().mean().item() for k in RECALL_KS}
    # quantile(0.5) interpolates the two middle values, as numpy's median does in the official code.
    metrics["MdR"] = torch.quantile(ranks, 0.5).item() + 1.0
    metrics["MnR"] = ranks.mean().item() + 1.0
    return metrics


def query_ranks(scores: Tensor, target: Tensor) -> Tensor:
    """0-based rank of column ``target[i]`` in row ``i``: the count of strictly higher scores."""
    ranks = []
    for rows, tgt in zip(scores.split(_CHUNK_ROWS), target.split(_CHUNK_ROWS)):
        gt = rows.gather(1, tgt[:, None])
        ranks.append((rows > gt).sum(dim=1))
    return torch.cat(ranks)


def caption_group_max(sim: Tensor, caption_video: Tensor) -> Tensor:
    """[V, V] video-to-video scores: entry (q, g) is the best score of video g's captions for video q."""
    num_videos = sim.shape[1]
    grouped = sim.new_full((num_videos, num_videos), float("-inf"))
    return grouped.scatter_reduce_(1, caption_video.expand(num_videos, -1), sim.T, reduce="amax")


def retrieval_metrics(sim: Tensor, caption_video: Tensor) -> dict[str, dict[str, float]]:
    """Text-to-video and video-to-text metrics for ``sim`` [num_captions, num_videos].

    ``caption_video[i]`` is the video of caption ``i``; videos may own any number (>= 1) of captions.
    t2v ranks each caption's own video among all videos. v2t ranks, for each video, its own caption group
    among all groups, a group scoring by its best caption (spec §3.5); with one caption per video this is
    the plain transpose. See the module docstring for the tie rule.
    """
    if sim.dim() != 2 or caption_video.shape != sim.shape[:1]:
        raise ValueError(f"expected sim [C, V] and caption_video [C], got {tuple(sim.shape)} and "
                         f"{tuple(caption_video.shape)}")
    if torch.isnan(sim).any():
        raise ValueError("similarity matrix contains NaN; retrieval ranks would be meaningless")
    num_videos = sim.shape[1]
    caption_video = caption_video.to(device=sim.device, dtype=torch.long)
    if caption_video.min() < 0 or caption_video.max() >= num_videos:
        raise ValueError(f"caption_video must index the {num_videos} videos")
    if torch.bincount(caption_video, minlength=num_videos).min() == 0:
        raise ValueError("every video needs at least one caption for video-to-text retrieval")
    # Upcasting half-precision scores is exact, so ties are preserved.
    sim = sim.to(torch.promote_types(sim.dtype, torch.float32))
    video_ids = torch.arange(num_videos, device=sim.device)
    return {
        "t2v": rank_metrics(query_ranks(sim, caption_video)),
        "v2t": rank_metrics(query_ranks(caption_group_max(sim, caption_video), video_ids)),
    }


def format_metrics_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table, one row per run/method, aligned for the console; values to one decimal."""
    header = ["run"] + [f"{d} {m}" for d in ("T2V", "V2T") for m in METRIC_NAMES]
    rows = [[name] + [f"{result[d][m]:.1f}" for d in ("t2v", "v2t") for m in METRIC_NAMES]
            for name, result in metrics.items()]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(row) for row in rows])
