"""Distributed retrieval evaluation: every rank encodes its shard of the videos and of the captions once,
features are gathered, and one normalised matrix product gives the similarities (spec §5, bugs 20-22)."""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset
from utils.progress import progress

from dataloaders import TextDataset, VideoDataset, VideoTextSplit, collate_trimmed
from dataloaders.config import DataConfig
from dataloaders.workers import worker_loader
from models.backbones import get_tokenizer
from models.dgl import DGL
from utils.distributed import gather_eval_features, get_rank, get_world_size, shard_indices
from utils.metrics import format_metrics_table, retrieval_metrics
from utils.rerank import dual_softmax, qb_norm
from utils.step import tf32

logger = logging.getLogger(__name__)


@dataclass
class Features:
    text: torch.Tensor  # [num_captions, E]
    video: torch.Tensor  # [num_videos, E]


def _encode(dataset: Dataset, encode, key: str, index_key: str, batch_size: int, workers: int, device, desc: str,
            collate_fn=None):
    """Encode this rank's contiguous shard of ``dataset``, then gather all shards in index order (batches
    pinned on CUDA, copied asynchronously)."""
    shard = Subset(dataset, list(shard_indices(len(dataset), get_rank(), get_world_size())))
    loader = worker_loader(shard, workers, batch_size=batch_size, pin_memory=torch.device(device).type == "cuda",
                           collate_fn=collate_fn)
    feats, indices = [], []
    for batch in progress(loader, desc=desc, enabled=get_rank() == 0, leave=False):
        feats.append(encode(batch[key].to(device, non_blocking=True)).float())
        indices.append(batch[index_key])
    width = feats[0].shape[-1] if feats else 0
    local = torch.cat(feats) if feats else torch.empty(0, width, device=device)
    local_idx = torch.cat(indices) if indices else torch.empty(0, dtype=torch.long)
    return gather_eval_features(local, local_idx.to(device), len(dataset))


@torch.no_grad()
def encode_split(
    model: DGL,
    split: VideoTextSplit,
    data_cfg: DataConfig,
    batch_size: int,
    workers: int,
    device: torch.device,
    autocast: AbstractContextManager | None = None,
) -> Features:
    """Features of every caption and every video of ``split``; prompts are computed once."""
    model.eval()
    with autocast or nullcontext():
        prompts = model.prompts()
        tokenizer = get_tokenizer(data_cfg.backbone, model.clip)  # some read files beside the loaded weights (BLIP)
        text = _encode(
            TextDataset(split, data_cfg, tokenizer), lambda ids: model.encode_text(ids, prompts), "input_ids",
            "caption_index", batch_size, workers, device, f"encode {split.name} captions", collate_fn=collate_trimmed,
        )
        video = _encode(
            VideoDataset(split, data_cfg), lambda v: model.encode_video(v, prompts), "video", "video_index",
            batch_size, workers, device, f"encode {split.name} videos",
        )
    return Features(text, video)


def evaluate_features(
    model: DGL,
    features: Features,
    split: VideoTextSplit,
    label: str = "DGL",
    bank: Features | None = None,
    dsl: bool = False,
    qb_beta: float = 0.87,
) -> dict[str, dict]:
    """Metrics of the plain similarity (first entry, under ``label``) and, on request, of DSL / QB-Norm
    re-ranking, each labelled apart."""
    with tf32(False):  # exact fp32 similarities: TF32 would reorder near-ties
        return _metrics(model, features, split, label, bank, dsl, qb_beta)


def _metrics(model, features: Features, split: VideoTextSplit, label: str, bank: Features | None, dsl: bool,
             qb_beta: float) -> dict[str, dict]:
    caption_video = torch.as_tensor(split.caption_video, device=features.text.device)
    sim = model.logits(features.text, features.video)
    results = {label: retrieval_metrics(sim, caption_video)}
    if dsl:
        # DSL normalises with the test set's own other queries: not comparable to the plain numbers.
        results[f"{label} + DSL (uses test queries)"] = retrieval_metrics(dual_softmax(sim, temperature=1.0), caption_video)
    if bank is not None:
        t2v_bank = model.logits(bank.text, features.video)  # training captions x test videos
        v2t_bank = model.logits(bank.video, features.text)  # training videos x test captions (as queries)
        t2v = qb_norm(sim, t2v_bank, beta=qb_beta)
        v2t = qb_norm(sim.t(), v2t_bank, beta=qb_beta).t()
        qb = retrieval_metrics(t2v, caption_video)
        qb["v2t"] = retrieval_metrics(v2t, caption_video)["v2t"]
        results[f"{label} + QB-Norm (train bank, beta={qb_beta:g})"] = qb
    return results


def log_results(results: dict[str, dict], title: str) -> str:
    table = format_metrics_table(results)
    logger.info("%s\n%s", title, table)
    return table
