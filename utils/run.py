"""What ``main.py`` does: build the model and data from the typed configs, then train and/or evaluate."""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataloaders import TrainPairDataset, build_split
from dataloaders.config import DataConfig
from models.backbones import get_backbone, get_tokenizer
from models.baseline import MeanPoolCLIP
from models.checkpoint import atomic_save, differing_sizes, is_compact_checkpoint, load_compact_state, load_official_state, official_state
from models.dgl import DGL
from models.factory import Preprocess, create_model, official_config_from_state, read_checkpoint
from models.files import atomic_write
from models.pretrained import file_sha256
from utils.config import RunConfig, with_resolution, write_run_config
from utils.distributed import DistInfo, barrier, cleanup, init_distributed, report_stuck_ranks
from utils.evaluation import encode_split, evaluate_features, itm_rerank_metrics, log_results
from utils.log import setup_logging
from utils.output_dir import RUN_CHECKPOINTS, move_aside, prepare_training_dir
from utils.resume import accepted_resume_changes
from utils.runtime import runtime_facts
from utils.step import autocast_context, resolve_precision, tf32
from utils.trainer import Trainer

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig, device: torch.device) -> tuple[DGL | MeanPoolCLIP, dict, Preprocess]:
    """The model of the configs (`models.factory.create_model`): returns it, the backbone's identity (name,
    file, SHA256) and its preprocessing."""
    built = create_model(cfg.model.backbone, cfg.clip_name, cfg.clip_dir, cfg.model, cfg.baseline, cfg.clip_activation,
                         image_resolution=cfg.flags.get("image_resolution"))
    backbone = {"name": cfg.clip_name, "file": built.weights.name, "sha256": file_sha256(built.weights)}
    model = built.model
    if cfg.baseline:
        return model.to(device), backbone, built.preprocess
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model.to(device), backbone, built.preprocess


def load_resume(model: DGL, ckpt: Any, path: str) -> dict | None:
    """Weights from ``--resume`` (``ckpt``, read from ``path``); returns our checkpoint dict (for an exact
    resume) or None (official)."""
    if is_compact_checkpoint(ckpt):
        load_compact_state(model, ckpt, source=path)
        return ckpt
    state = official_state(ckpt, path)
    check_official_settings(model, state, path)
    load_official_state(model, state, path, check_backbone=True)
    logger.info("loaded official checkpoint %s (weights only)", path)
    return None


def check_official_settings(model: DGL, state: dict[str, torch.Tensor], path: str) -> None:
    """An official checkpoint fixes the variant, T (transformer) and the prompt sizes: a flag that differs is an
    error naming the value the checkpoint needs."""
    ours = model.config
    needed = official_config_from_state(state, path, text_prompt_length=ours.text_prompt_length)
    wrong = differing_sizes(dataclasses.asdict(needed), {**ours.to_dict(), "prompt_layers": model.prompt_layers})
    if wrong:
        raise SystemExit(f"{path} was trained with other settings; it needs " + ", ".join(wrong))


@dataclass(frozen=True)
class EvalSource:
    """The model an evaluation scores (recorded in its metrics) and the names of its files. An evaluation-only
    run writes ``eval_config_<tag>.json`` (tag: the checkpoint's name and SHA256 prefix), never ``config.json``;
    in a training run's folder its metrics and features also carry the tag (``suffix``), so that nothing of the
    training run is replaced. Elsewhere they keep their plain names (``eval_metrics.json``)."""

    checkpoint: dict[str, Any]
    tag: str
    suffix: str


def eval_source(cfg: RunConfig) -> EvalSource:
    if cfg.do_train:
        return EvalSource({"path": None, "sha256": None, "model": "this training run's"}, "", "")
    if cfg.resume is None:
        checkpoint, tag = {"path": None, "sha256": None, "model": f"{cfg.clip_name} without a checkpoint"}, "no_checkpoint"
    else:
        path = Path(cfg.resume).resolve()
        digest = file_sha256(path)
        stem = path.name
        for suffix in (".pth.tar", ".tar", ".pth", ".pt", ".bin"):
            stem = stem.removesuffix(suffix)
        checkpoint, tag = {"path": str(path), "sha256": digest}, f"{stem}-{digest[:8]}"
    training_folder = any((cfg.output_dir / name).is_file() for name in ("config.json", *RUN_CHECKPOINTS))
    return EvalSource(checkpoint, tag, f"_{tag}" if training_folder else "")


def metrics_name(source: EvalSource, epoch: int | None) -> str:
    return f"eval_metrics{source.suffix}.json" if epoch is None else f"eval_metrics_epoch{epoch}.json"


def run(cfg: RunConfig) -> dict | None:
    """Everything the configs ask for; a rank stuck for more than --dist_timeout ends the run with its rank named."""
    dist = init_distributed(timeout_minutes=cfg.dist_timeout)
    with report_stuck_ranks(cfg.dist_timeout):
        return run_on(cfg, dist)


def run_on(cfg: RunConfig, dist: DistInfo) -> dict | None:
    output_dir = cfg.output_dir
    setup_logging(output_dir, dist.rank)
    for flag in cfg.ignored_flags:
        logger.warning("%s is an official flag with no effect here; ignored", flag)
    resume_ckpt = read_checkpoint(cfg.resume) if cfg.resume else None
    resume_changes = accepted_resume_changes(cfg, resume_ckpt, dist.world_size)  # refused before anything is written
    if cfg.do_train:
        prepare_training_dir(cfg, dist.is_main)
    seed_everything(cfg.train.seed + dist.rank)

    model, backbone, preprocess = build_model(cfg, dist.device)
    resume_ckpt = load_resume(model, resume_ckpt, cfg.resume) if cfg.resume else None
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.3f %%)", n_train, n_all, 100 * n_train / n_all)

    data_cfg = with_resolution(cfg, preprocess.resolution)
    if data_cfg.max_words > model.clip.config.context_length:  # a backbone file with a shorter context than its family's
        raise SystemExit(f"--max_words {data_cfg.max_words}: must be <= {model.clip.config.context_length}, the text "
                         f"context length of {cfg.clip_name}")
    precision = resolve_precision(cfg.train.precision, dist.device)
    facts = runtime_facts(dist, cfg, precision, data_cfg, backbone)
    logger.info("running: %s", json.dumps(facts))
    source = eval_source(cfg)
    config_name = "config.json" if cfg.do_train else f"eval_config_{source.tag}.json"
    if dist.is_main and not cfg.do_train:  # an earlier evaluation's files of the same names: kept, not replaced
        move_aside(output_dir, [output_dir / name for name in
                                (config_name, metrics_name(source, None), f"eval_features{source.suffix}.pt")])
    if dist.is_main:
        write_run_config(dataclasses.replace(cfg, data=data_cfg), facts, config_name)
    test_split = build_split(data_cfg, "test")
    evaluate = make_evaluate(cfg, model, data_cfg, test_split, dist, resolve_precision(cfg.eval.precision, dist.device), source)

    results = None
    if cfg.do_train:
        train_split = build_split(data_cfg, "train")
        dataset = TrainPairDataset(train_split, data_cfg, get_tokenizer(data_cfg.backbone, model.clip))
        trainer = Trainer(model, train_split, dataset, cfg.train, dist, backbone, output_dir, cfg.flags)
        if resume_ckpt is not None and not cfg.load_from_pretrained:
            trainer.restore(resume_ckpt, cfg.resume, resume_changes)
        state = trainer.fit(evaluate)
        if state.best_epoch >= 0:
            logger.info("best text-to-video R@1 %.1f at epoch %d", state.best_r1, state.best_epoch)
    if cfg.do_eval:
        evaluate()
        results = json.loads((output_dir / metrics_name(source, None)).read_text()) if dist.is_main else None
    barrier()
    cleanup()
    return results


def make_evaluate(cfg: RunConfig, model, data_cfg: DataConfig, test_split, dist: DistInfo, precision: str,
                  source: EvalSource):
    """``evaluate(epoch=None) -> T2V R@1``: encode the test split on all ranks, score, log and write the metrics
    (with the model they came from: ``source``). ``precision``: the encoders' (--eval_precision, resolved);
    features are fp32 whatever it is."""
    ev = cfg.eval

    def evaluate(epoch: int | None = None) -> float:
        autocast = autocast_context(precision, dist.device)
        with tf32(ev.tf32):
            feats = encode_split(model, test_split, data_cfg, ev.batch_size, ev.num_workers, dist.device, autocast,
                                 keep_video_tokens=ev.itm_rerank > 0)
            bank = query_bank(model, data_cfg, cfg, dist, autocast) if ev.qb_norm else None
        label = f"{get_backbone(cfg.model.backbone).display_name} meanP zero-shot" if cfg.baseline else cfg.model.label
        if ev.itm_rerank:
            label = f"{label} ITC"
        results = evaluate_features(model, feats, test_split, label, bank, dsl=ev.dsl, qb_beta=ev.qb_norm_beta)
        if ev.itm_rerank:
            with autocast, tf32(ev.tf32):
                results[f"{label} + ITM re-rank of the top {ev.itm_rerank}"] = itm_rerank_metrics(
                    model, feats, test_split, data_cfg, ev.itm_rerank, dist.device)
        if ev.save_features and dist.is_main:
            atomic_save(
                {"text": feats.text.cpu(), "video": feats.video.cpu(), "logit_scale": model.clip.logit_scale.detach().cpu(),
                 "captions": test_split.captions, "caption_video": test_split.caption_video, "video_ids": test_split.video_ids},
                cfg.output_dir / f"eval_features{source.suffix}.pt",
            )
        title = f"{test_split.name}: {test_split.num_captions} captions, {test_split.num_videos} videos"
        log_results(results, title if epoch is None else f"epoch {epoch} | {title}")
        if dist.is_main:
            checkpoint = dict(source.checkpoint)
            if cfg.do_train:
                checkpoint["model"] += f" after epoch {epoch}" if epoch is not None else " at the end of training"
            record = {**results, "checkpoint": checkpoint}  # last: readers take the first entry as the results
            atomic_write(cfg.output_dir / metrics_name(source, epoch), lambda f: json.dump(record, f, indent=1), mode="w")
        return results[label]["t2v"]["R@1"]

    return evaluate


def query_bank(model: DGL, data_cfg: DataConfig, cfg: RunConfig, dist: DistInfo, autocast):
    """QB-Norm's query bank: features of the first ``--qb_norm_bank_size`` training videos and captions."""
    train = build_split(data_cfg, "train")
    keep = np.zeros(train.num_videos, dtype=bool)
    keep[: cfg.eval.qb_norm_bank_size] = True
    return encode_split(model, train.keep_videos(keep), data_cfg, cfg.eval.batch_size, cfg.eval.num_workers, dist.device, autocast)
