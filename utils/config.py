"""The one config path: ``main.py``'s flags (official names, utils/flags.py) -> typed configs, checked once.

A setting that two parts need has one source: frames and the variant live in the model config (the data
config copies them), the image resolution comes from the backbone when the model is built.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataloaders.config import DataConfig
from models.blip.losses import BlipLossConfig, check_gradient_caching
from models.dgl import DGLConfig
from models.losses import LOSSES
from models.pretrained import resolve_clip_path
from utils.cli import ArgumentParser, require_path
from utils.flags import (
    FIXED_FLAGS, IGNORED_FLAGS, SILENT_FLAGS, add_backbone_flags, add_compat_flags, add_data_flags, add_model_flags,
    dgl_config, optional,
)
from utils.validate import check_ranges

logger = logging.getLogger(__name__)
PRECISIONS = ("amp", "bf16", "fp16", "fp32")
TF32_CHOICES = ("off", "train", "all")
TRAIN_FLOAT_FLAGS = {
    "lr": "peak learning rate of the prompts (linear warm-up, then cosine decay)",
    "coef_lr": "the CLIP's learning rate is --lr times this (with --freeze_clip 0)",
    "wd": "AdamW weight decay",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "eps": "AdamW epsilon",
    "warmup_proportion": "share of all steps spent in the linear warm-up",
    "clip_grad_norm": "clip the gradient's global norm to this",
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and its schedule (official defaults; the recipes in scripts/ set the per-dataset values)."""

    epochs: int = 20
    batch_size: int = 256  # per rank; the global batch is this times the world size
    lr: float = 1e-4  # peak, of the prompt parameters
    coef_lr: float = 1.0  # multiplier for the backbone's (frozen unless --freeze_clip 0)
    wd: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_proportion: float = 0.1  # of all steps, linear from 1e-8, then cosine
    clip_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1  # chunks a batch is encoded in (exact: gradient caching)
    precision: str = "amp"  # amp = bf16 from compute capability 8.0, else fp16; fp32 on a CPU
    tf32: bool = True  # TF32 tensor cores for the fp32 matmuls of training steps (--tf32 train|all)
    train_group_size: int = 1
    max_steps: int | None = None
    n_display: int = 100
    eval_every_epoch: bool = True
    export_official: bool = False
    tensorboard_path: str | None = None
    num_workers: int = 1  # DataLoader workers per rank (--num_thread_reader)
    seed: int = 42
    loss: str = "infonce"  # a name in models.losses.LOSSES (--model dgl)
    blip_loss: BlipLossConfig = BlipLossConfig()  # --model dgl_blip: --alpha, --momentum, --queue_size, --itm_weight


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 3500
    num_workers: int = 1
    dsl: bool = False
    qb_norm: bool = False
    qb_norm_bank_size: int = 5000
    qb_norm_beta: float = 0.87
    save_features: bool = False
    itm_rerank: int = 0  # --model dgl_blip: re-score each query's top-K with ITM (0: ITC only)
    precision: str = "fp32"  # --eval_precision: the encoders' autocast; similarities are fp32 always
    tf32: bool = False  # --tf32 all: TF32 in the encoders too (never for the similarity matrix)


@dataclass(frozen=True)
class RunConfig:
    output_dir: Path
    do_train: bool
    do_eval: bool
    model: DGLConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    clip_name: str
    clip_dir: str | None = None
    clip_activation: str | None = None  # --clip_activation; None: as the file records (OpenAI's format: QuickGELU)
    resume: str | None = None
    load_from_pretrained: bool = False
    resume_with_new_settings: bool = False  # continue a checkpoint although run-defining flags changed
    overwrite: bool = False  # train into an --output_dir holding another run's checkpoint
    dist_timeout: float = 10.0  # minutes a collective may wait for the other ranks
    baseline: str | None = None
    freeze_clip: bool = True
    grad_checkpointing: bool = False
    ignored_flags: tuple[str, ...] = ()
    flags: dict[str, Any] = field(default_factory=dict)  # every parsed flag, for config.json and checkpoints


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="DGL: train and evaluate text-video retrieval")
    a = p.add_argument
    a("--do_train", type=int, default=0, choices=(0, 1), help="1: train (and evaluate each epoch unless --eval_every_epoch 0)")
    a("--do_eval", type=int, default=0, choices=(0, 1), help="1: evaluate on the test split (the trained model, or --resume)")
    a("--output_dir", required=True, help="folder for the log, config.json, checkpoints and results")
    a("--resume", type=optional(), default=None, help="our checkpoint (exact resume) or an official ckpt.*.pth.tar")
    a("--init_model", type=optional(), default=None, help="weights to start from (official): --resume X --load_from_pretrained 1")
    a("--load_from_pretrained", type=int, default=0, help="with --resume: load weights only, start at step 0")
    a("--resume_with_new_settings", action="store_true",
      help="with --resume: continue although the schedule, batch, lr, frames or variant flags differ from the "
           "checkpoint's (the schedule is recomputed from the current position)")
    a("--overwrite", action="store_true", help="train into an --output_dir that holds another run's checkpoint")
    a("--dist_timeout", type=float, default=RunConfig.dist_timeout,
      help="minutes a rank waits in a collective before the run ends with an error (a stuck or stopped rank)")
    a("--seed", type=int, default=42, help="random seed (initialisation, sampling, shuffling)")
    a("--lmdb_dataset", type=optional(), default=None, help="not supported; decode files or use --frame_cache")
    a("--num_thread_reader", type=int, default=1, help="DataLoader workers per rank")
    add_data_flags(p)
    add_backbone_flags(p)
    a("--clip_activation", choices=("quick_gelu", "gelu"), default=None,
      help="the CLIP's MLP activation, for files that do not record it (open_clip without open_clip_config.json); "
      "checkpoints remember it")
    add_model_flags(p)
    a("--freeze_clip", type=int, default=1, choices=(0, 1), help="1: train only the prompts (DGL); 0: also the CLIP, at lr x --coef_lr")
    a("--grad_checkpointing", action="store_true", help="recompute the encoder blocks in backward (less memory; DGL-BLIP: vision, text and ITM passes)")
    t = TrainConfig()
    a("--epochs", type=int, default=t.epochs, help="passes over the training set")
    a("--batch_size", type=int, default=t.batch_size, help="per rank")
    a("--batch_size_val", type=int, default=EvalConfig().batch_size, help="videos or captions encoded at once in evaluation")
    for name, text in TRAIN_FLOAT_FLAGS.items():
        a(f"--{name}", type=float, default=getattr(t, name), help=text)
    a("--gradient_accumulation_steps", type=int, default=1, help="encode each batch in this many chunks")
    a("--precision", default=t.precision, choices=PRECISIONS,
      help="training compute: amp = bf16 autocast on GPUs of compute capability 8.0 on, fp16 with a loss scaler "
           "before; fp32 on a CPU")
    a("--eval_precision", default=EvalConfig.precision, choices=PRECISIONS,
      help="evaluation encoders' compute (default fp32, as the official evaluation); similarities are fp32 always")
    a("--tf32", default="train", choices=TF32_CHOICES,
      help="TF32 tensor cores for fp32 matmuls/convolutions: off; train (training steps only, the default); "
           "all (also the evaluation encoders). The similarity matrix never uses TF32")
    a("--loss", default=t.loss, choices=sorted(LOSSES), help="training loss (symmetric InfoNCE, as the paper)")
    b = BlipLossConfig()
    a("--itm_weight", type=float, default=b.itm_weight, help="--model dgl_blip: loss = ITC + this x ITM (0: ITC only)")
    a("--momentum", type=float, default=b.momentum, help="--model dgl_blip: EMA factor of the momentum encoder")
    a("--queue_size", type=int, default=b.queue_size,
      help="--model dgl_blip: momentum features kept as extra ITC keys (0: none)")
    a("--alpha", type=float, default=b.alpha,
      help="--model dgl_blip: weight of the momentum teacher's targets in ITC (ramped up over the first epoch)")
    a("--itm_rerank", type=int, default=0, metavar="K",
      help="--model dgl_blip: also report the ranking after re-scoring each query's top K with ITM (BLIP's k_test)")
    a("--train_group_size", type=int, default=1,
      help="keep runs of this many consecutive training samples in one batch (e.g. 2 for twin videos stored side by side)")
    a("--max_steps", type=optional(int), default=None, help="stop (and save) after this many optimiser steps")
    a("--n_display", type=int, default=t.n_display, help="log the loss every this many steps")
    a("--tensorboard_path", type=optional(), default=None, help="also write TensorBoard logs to this folder")
    a("--eval_every_epoch", type=int, default=1, choices=(0, 1), help="1: evaluate after each epoch and keep the best checkpoint")
    a("--dsl", action="store_true", help="also report dual-softmax re-ranked metrics")
    a("--qb_norm", action="store_true", help="also report QB-Norm metrics (query bank from the training set)")
    a("--qb_norm_bank_size", type=int, default=5000, help="training captions in the QB-Norm query bank")
    a("--qb_norm_beta", type=float, default=0.87, help="fixed QB-Norm beta (on logits)")
    a("--save_features", action="store_true", help="write the evaluation features to eval_features.pt")
    a("--baseline", choices=("meanp",), default=None,
      help="evaluate the frozen CLIP's frame-mean (CLIP4Clip meanP zero-shot) instead of DGL")
    a("--export_official", action="store_true", help="also write the best model in the official layout")
    add_compat_flags(p)
    return p


def build_config(argv: list[str] | None = None) -> RunConfig:
    """Parse ``main.py``'s flags and build the typed configs; anything the method cannot run stops here."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    given = {tok.split("=", 1)[0] for tok in argv if tok.startswith("--")}
    check_flags(args)
    resume, weights_only = args.resume, bool(args.load_from_pretrained)
    if args.init_model is not None:
        resume, weights_only = args.init_model, True
    check_model_flags(args, given)
    try:
        model = dgl_config(vars(args), train_backbone=not args.freeze_clip)
    except ValueError as err:
        raise SystemExit(f"model flags: {err}") from err
    flags = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return RunConfig(
        output_dir=Path(args.output_dir), do_train=bool(args.do_train), do_eval=bool(args.do_eval),
        model=model, data=data_config(args, model), train=train_config(args), eval=eval_config(args),
        clip_name=args.pretrained_clip_name or "ViT-B/32", clip_dir=args.pretrained_dir,
        clip_activation=args.clip_activation,
        resume=resume, load_from_pretrained=weights_only, resume_with_new_settings=args.resume_with_new_settings,
        overwrite=args.overwrite, dist_timeout=args.dist_timeout, baseline=args.baseline, freeze_clip=bool(args.freeze_clip),
        grad_checkpointing=args.grad_checkpointing,
        ignored_flags=tuple(sorted(f for f in IGNORED_FLAGS if f in given and f not in SILENT_FLAGS)), flags=flags,
    )


_INPUT_FLAGS = {  # what each data flag must point at, for the message
    "--data_path": "the annotations (MSR-VTT: MSRVTT_data.json; the other datasets: their folder)",
    "--features_path": "the folder of the (compressed) videos",
    "--val_csv": "MSR-VTT's test list (MSRVTT_JSFUSION_test.csv)",
    "--train_csv": "MSR-VTT's training list (MSRVTT_train.9k.csv)",
}


def check_inputs(cfg: RunConfig) -> None:
    """The files the flags name exist (the CLIP weights, the data): a wrong path is reported at once, in one
    line naming the flag, not after the model is built. The readers check the files' contents later."""
    resolve_clip_path(cfg.clip_name, cfg.clip_dir)
    data = cfg.data
    given = {"--data_path": data.data_path, "--features_path": data.features_path,
             "--val_csv": data.val_csv, "--train_csv": data.train_csv}
    needed = [] if data.frame_cache is not None else ["--features_path"]
    if data.datatype != "msrvtt":
        needed.append("--data_path")
    else:  # the test split is the --val_csv pairs; training (and QB-Norm's bank) reads the list and the captions
        needed += ["--val_csv", "--train_csv", "--data_path"] if cfg.do_train or cfg.eval.qb_norm else ["--val_csv"]
    for flag in needed:
        require_path(flag, given[flag], f"pass {flag} {_INPUT_FLAGS[flag]}")


DGL_ONLY_FLAGS = ("--shared_latent_space", "--text_prompt_length", "--local_each_frame_prompt_length",
                  "--unified_transformer_layers", "--unified_prompt_layers", "--loss", "--export_official")
BLIP_ONLY_FLAGS = ("--itm_weight", "--momentum", "--queue_size", "--alpha", "--itm_rerank")


def check_model_flags(args: argparse.Namespace, given: set[str]) -> None:
    """Flags of the other model are refused rather than ignored; so is what DGL-BLIP's objective cannot run."""
    blip = args.model == "dgl_blip"
    wrong = [f for f in (DGL_ONLY_FLAGS if blip else BLIP_ONLY_FLAGS) if f in given]
    if wrong:
        raise SystemExit(f"{wrong[0]} does not apply to --model {args.model}"
                         + ("" if blip else " (it is a --model dgl_blip flag)"))
    if blip and args.baseline and args.itm_rerank:
        raise SystemExit("--itm_rerank re-ranks with DGL-BLIP's ITM head: drop it with --baseline")
    if blip:
        try:
            check_gradient_caching(args.gradient_accumulation_steps, args.itm_weight)
        except ValueError as err:
            raise SystemExit(str(err)) from err


def check_flags(args: argparse.Namespace) -> None:
    for flag, value in FIXED_FLAGS.items():
        if getattr(args, flag[2:]) != value:
            raise SystemExit(f"{flag} {getattr(args, flag[2:])!r} is not supported by DGL (only {value!r})")
    if args.lmdb_dataset:
        raise SystemExit("--lmdb_dataset is not supported: decode the video files, or build a --frame_cache "
                         "(preprocess/cache_frames.py)")
    if not (args.do_train or args.do_eval):
        raise SystemExit("nothing to do: pass --do_train 1 and/or --do_eval 1")
    if args.init_model is not None and args.resume is not None:
        raise SystemExit("give --resume or --init_model, not both (--init_model X = --resume X --load_from_pretrained 1)")
    if args.baseline and (args.do_train or args.resume or args.init_model):
        raise SystemExit("--baseline is a zero-shot reference: use it with --do_eval 1 only, without --resume")
    check_ranges(args)


def data_config(args: argparse.Namespace, model: DGLConfig) -> DataConfig:
    """The loaders' settings; frames and the backbone come from the model config (one source). The resolution is filled in
    from the backbone when the model is built (``with_resolution``)."""
    names = {f.name for f in dataclasses.fields(DataConfig)} - {"max_frames", "image_resolution", "backbone"}
    return DataConfig(max_frames=model.max_frames, backbone=model.backbone, **{k: v for k, v in vars(args).items() if k in names})


def with_resolution(cfg: RunConfig, backbone_resolution: int) -> DataConfig:
    """The data config at the built backbone's input size (``--image_resolution`` went to
    ``models.factory.create_model``, which resizes a backbone that can be resized and refuses otherwise)."""
    return dataclasses.replace(cfg.data, image_resolution=backbone_resolution)


def train_config(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"num_workers", "eval_every_epoch", "export_official",
                                                                 "tf32", "blip_loss"}
    try:
        blip_loss = BlipLossConfig(args.alpha, args.momentum, args.queue_size, args.itm_weight)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    return TrainConfig(num_workers=args.num_thread_reader, eval_every_epoch=bool(args.eval_every_epoch),
                       export_official=args.export_official, tf32=args.tf32 != "off", blip_loss=blip_loss,
                       **{k: getattr(args, k) for k in names})


def eval_config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(batch_size=args.batch_size_val, num_workers=args.num_thread_reader, dsl=args.dsl,
                      qb_norm=args.qb_norm, qb_norm_bank_size=args.qb_norm_bank_size, qb_norm_beta=args.qb_norm_beta,
                      save_features=args.save_features, precision=args.eval_precision, tf32=args.tf32 == "all",
                      itm_rerank=args.itm_rerank)


def write_run_config(cfg: RunConfig, runtime: dict[str, Any], name: str = "config.json") -> None:
    """What actually runs (``runtime``: devices, world, batches, precision in effect, backbone file and hash,
    library versions), the typed configs, the flags and the git commit, next to the logs, as ``name``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    info = {
        "runtime": runtime,
        "model": dataclasses.asdict(cfg.model),
        "data": dataclasses.asdict(cfg.data),
        "train": dataclasses.asdict(cfg.train),
        "eval": dataclasses.asdict(cfg.eval),
        "args": cfg.flags,
        "git_commit": commit or None,
        "python": platform.python_version(),
        "command": sys.argv,
    }
    (cfg.output_dir / name).write_text(json.dumps(info, indent=1, default=str))
