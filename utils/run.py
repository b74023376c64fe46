"""What ``main.py`` does: build the model and data from the flags, then train and/or evaluate."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from dataloaders import TrainPairDataset, build_split
from dataloaders.config import DataConfig
from models.checkpoint import is_compact_checkpoint, load_compact_state, load_official_state, official_state
from models.baseline import MeanPoolCLIP
from models.clip import CLIP
from models.dgl import DGL, DGLConfig
from models.factory import read_checkpoint
from models.pretrained import resolve_clip_path
from utils.config import write_run_config
from utils.distributed import DistInfo, barrier, cleanup, init_distributed
from utils.evaluation import encode_split, evaluate_features, log_results
from utils.log import setup_logging
from utils.trainer import Trainer, autocast_context, resolve_precision

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(args: argparse.Namespace, device: torch.device) -> tuple[DGL | MeanPoolCLIP, dict]:
    """CLIP from its file (OpenAI, Hugging Face or open_clip), DGL on top; returns the model and the backbone's identity."""
    clip_path = resolve_clip_path(args.pretrained_clip_name, args.pretrained_dir)
    clip = CLIP.from_pretrained(str(clip_path), activation=args.clip_activation)
    backbone = {"name": args.pretrained_clip_name, "file": clip_path.name}
    if args.baseline == "meanp":
        return MeanPoolCLIP(clip).to(device), backbone
    model = DGL(clip, DGLConfig.from_official_args(vars(args)))
    if not args.freeze_clip:
        model.clip.requires_grad_(True)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model.to(device), backbone


def load_resume(model: DGL, path: str) -> dict | None:
    """Weights from ``--resume``; returns our checkpoint dict (for an exact resume) or None (official)."""
    ckpt = read_checkpoint(path)
    if is_compact_checkpoint(ckpt):
        load_compact_state(model, ckpt, source=path)
        return ckpt
    load_official_state(model, official_state(ckpt, path), path, check_backbone=True)
    logger.info("loaded official checkpoint %s (weights only)", path)
    return None


def data_config(args: argparse.Namespace, model: DGL) -> DataConfig:
    cfg = DataConfig.from_args(args)
    return dataclasses.replace(cfg, image_resolution=model.clip.config.image_resolution)


def run(args: argparse.Namespace) -> dict | None:
    dist: DistInfo = init_distributed()
    output_dir = Path(args.output_dir)
    setup_logging(output_dir, dist.rank)
    for flag in args.ignored_flags:
        logger.warning("%s is an official flag with no effect here; ignored", flag)
    if dist.is_main:
        write_run_config(args, output_dir)
    seed_everything(args.seed + dist.rank)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    model, backbone = build_model(args, dist.device)
    resume_ckpt = load_resume(model, args.resume) if args.resume else None
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.3f %%)", n_train, n_all, 100 * n_train / n_all)

    data_cfg = data_config(args, model)
    test_split = build_split(data_cfg, "test")
    precision = resolve_precision(args.precision, dist.device)

    def evaluate(epoch: int | None = None) -> float:
        autocast = autocast_context(precision, dist.device)
        feats = encode_split(model, test_split, data_cfg, args.batch_size_val, args.num_thread_reader, dist.device, autocast)
        bank = query_bank(model, data_cfg, args, dist, autocast) if args.qb_norm else None
        label = "CLIP meanP zero-shot" if args.baseline else f"DGL-{args.shared_latent_space}"
        results = evaluate_features(model, feats, test_split, label, bank, dsl=args.dsl, qb_beta=args.qb_norm_beta)
        if args.save_features and dist.is_main:
            torch.save(
                {"text": feats.text.cpu(), "video": feats.video.cpu(), "logit_scale": model.clip.logit_scale.detach().cpu(),
                 "captions": test_split.captions, "caption_video": test_split.caption_video, "video_ids": test_split.video_ids},
                output_dir / "eval_features.pt",
            )
        title = f"{test_split.name}: {test_split.num_captions} captions, {test_split.num_videos} videos"
        log_results(results, title if epoch is None else f"epoch {epoch} | {title}")
        if dist.is_main:
            name = "eval_metrics.json" if epoch is None else f"eval_metrics_epoch{epoch}.json"
            (output_dir / name).write_text(json.dumps(results, indent=1))
        return results[label]["t2v"]["R@1"]

    results = None
    if args.do_train:
        train_split = build_split(data_cfg, "train")
        dataset = TrainPairDataset(train_split, data_cfg)
        trainer = Trainer(model, train_split, dataset, args, dist, backbone, output_dir)
        if resume_ckpt is not None and not args.load_from_pretrained:
            trainer.restore(resume_ckpt)
        state = trainer.fit(evaluate)
        if state.best_epoch >= 0:
            logger.info("best text-to-video R@1 %.1f at epoch %d", state.best_r1, state.best_epoch)
    if args.do_eval:
        evaluate()
        results = json.loads((output_dir / "eval_metrics.json").read_text()) if dist.is_main else None
    barrier()
    cleanup()
    return results


def query_bank(model: DGL, data_cfg: DataConfig, args: argparse.Namespace, dist: DistInfo, autocast):
    """QB-Norm's query bank: features of the first ``--qb_norm_bank_size`` training videos and captions."""
    train = build_split(data_cfg, "train")
    keep = np.zeros(train.num_videos, dtype=bool)
    keep[: args.qb_norm_bank_size] = True
    return encode_split(model, train.keep_videos(keep), data_cfg, args.batch_size_val, args.num_thread_reader, dist.device, autocast)
