"""Distributed retrieval evaluation: every rank encodes its shard of the videos and of the captions once,
features are gathered, and one normalised matrix product gives the similarities (spec §5, bugs 20-22)."""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from utils.progress import progress

from dataloaders import TextDataset, VideoDataset, VideoTextSplit, collate_trimmed
from dataloaders.config import DataConfig
from dataloaders.workers import worker_loader
from models.backbones import get_tokenizer
from models.dgl import DGL
from models.losses import gather_with_grad
from utils.itm_rerank import blip_pair_scorer, itm_rerank
from utils.distributed import gather_eval_features, get_rank, get_world_size, note_progress, shard_indices
from utils.metrics import format_metrics_table, retrieval_metrics
from utils.rerank import dual_softmax, qb_norm
from utils.step import tf32

logger = logging.getLogger(__name__)


@dataclass
class Features:
    text: torch.Tensor  # [num_captions, E]
    video: torch.Tensor  # [num_videos, E]
    video_tokens: torch.Tensor | None = None  # [num_videos, L, D] fp16 on the host: what ITM re-ranking reads


def _encode(dataset: Dataset, encode, key: str, index_key: str, batch_size: int, workers: int, device, desc: str,
            collate_fn=None):
    """Encode this rank's contiguous shard of ``dataset``, then gather all shards in index order (batches
    pinned on CUDA, copied asynchronously). ``encode`` returns a tensor, or a tuple of tensors each gathered
    alike (e.g. features and tokens): the result has the same form."""
    shard = Subset(dataset, list(shard_indices(len(dataset), get_rank(), get_world_size())))
    loader = worker_loader(shard, workers, batch_size=batch_size, pin_memory=torch.device(device).type == "cuda",
                           collate_fn=collate_fn)
    outs, indices = [], []
    for number, batch in enumerate(progress(loader, desc=desc, enabled=get_rank() == 0, leave=False), 1):
        note_progress(f"{desc}, batch {number}")
        out = encode(batch[key].to(device, non_blocking=True))
        outs.append(out if isinstance(out, tuple) else (out,))
        indices.append(batch[index_key])
    note_progress(f"{desc}, gathering the features of every rank")
    local_idx = (torch.cat(indices) if indices else torch.empty(0, dtype=torch.long)).to(device)
    gathered = tuple(gather_eval_features(torch.cat(parts), local_idx, len(dataset)) for parts in zip(*outs))
    if not outs:  # this rank's shard is empty: nothing to tell the shapes by
        gathered = (gather_eval_features(torch.empty(0, 0, device=device), local_idx, len(dataset)),)
    return gathered if len(gathered) > 1 else gathered[0]


@torch.no_grad()
def encode_split(
    model: DGL,
    split: VideoTextSplit,
    data_cfg: DataConfig,
    batch_size: int,
    workers: int,
    device: torch.device,
    autocast: AbstractContextManager | None = None,
    keep_video_tokens: bool = False,
) -> Features:
    """Features of every caption and every video of ``split``; prompts are computed once. ``keep_video_tokens``
    (DGL-BLIP, for ITM re-ranking): also every video's output tokens, fp16, moved to the host."""
    model.eval()
    with autocast or nullcontext():
        prompts = model.prompts()
        tokenizer = get_tokenizer(data_cfg.backbone, model.clip)  # some read files beside the loaded weights (BLIP)
        text = _encode(
            TextDataset(split, data_cfg, tokenizer), lambda ids: model.encode_text(ids, prompts).float(), "input_ids",
            "caption_index", batch_size, workers, device, f"encode {split.name} captions", collate_fn=collate_trimmed,
        )
        if keep_video_tokens:
            def encode_video(v):
                feats, tokens = model.encode_video_with_tokens(v)
                return feats.float(), tokens.half().flatten(1)
        else:
            def encode_video(v):
                return model.encode_video(v, prompts).float()
        video = _encode(VideoDataset(split, data_cfg), encode_video, "video", "video_index", batch_size, workers,
                        device, f"encode {split.name} videos")
    if not keep_video_tokens:
        return Features(text, video)
    video, tokens = video
    return Features(text, video, tokens.cpu().unflatten(1, (-1, model.clip.config.vision_width)))


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


@torch.no_grad()
def itm_rerank_metrics(model, features: Features, split: VideoTextSplit, data_cfg: DataConfig, k: int,
                       device: torch.device, chunk: int = 16) -> dict[str, dict]:
    """R@K/MedR/MeanR after ITM re-ranking each query's top ``k`` of the ITC cosine (utils/itm_rerank.py, BLIP's
    rule), the queries split over the ranks; every rank returns the whole result."""
    model.eval()
    tokenizer = get_tokenizer(data_cfg.backbone, model.clip)
    ids, mask = tokenizer(split.captions, data_cfg.max_words)
    def itm_logits(itm_ids, itm_mask, tokens):  # tokens are kept in fp16; the head runs as the encoders do
        return model.itm_logits(itm_ids, itm_mask, tokens.float())

    score = blip_pair_scorer(itm_logits, tokenizer.for_itm(ids), mask, features.video_tokens, device)
    sim = F.normalize(features.text.float(), dim=-1) @ F.normalize(features.video.float(), dim=-1).t()
    t2v, v2t = itm_rerank(sim, k, score, chunk, get_rank(), get_world_size(), gather_with_grad)
    caption_video = torch.as_tensor(split.caption_video, device=t2v.device)
    results = retrieval_metrics(t2v, caption_video)
    results["v2t"] = retrieval_metrics(v2t.t(), caption_video)["v2t"]
    return results


def log_results(results: dict[str, dict], title: str) -> str:
    table = format_metrics_table(results)
    logger.info("%s\n%s", title, table)
    return table
