"""Command-line flags: the official DGL names and meanings (spec §4), so existing commands carry over.

Official flags that no longer do anything are still accepted and produce one warning each.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
from pathlib import Path

from dataloaders.config import add_data_arguments

logger = logging.getLogger(__name__)

# Official flags kept only so that old command lines parse: (name, takes a value).
IGNORED_FLAGS = {
    "--cache_dir": True, "--camoe_dsl": True, "--cross_model": True, "--cross_num_hidden_layers": True,
    "--data_dir": True, "--dist_backend": True, "--eval_frame_order": True, "--feature_framerate": True,
    "--freeze_layer_num": True, "--gpu": True, "--hard_negative_rate": True, "--init_method": True,
    "--init_model": True, "--lr_decay": True, "--margin": True, "--multigpu": True, "--n_gpu": True,
    "--n_pair": True, "--negative_weighting": True, "--optim": True, "--pre_norm": True, "--remote": True,
    "--slice_framepos": True, "--task_type": True, "--temperature_new": True, "--text_num_hidden_layers": True,
    "--tfm_heads": True, "--tfm_layers": True, "--train_frame_order": True, "--video_dim": True,
    "--visual_num_hidden_layers": True, "--world_size": True, "--local_rank": True, "--log_level": True,
    "--time_embedding": True, "--inference_speed_test": True, "--save_feature_path": True,
    "--loose_type": False, "--do_pretrain": False, "--do_lower_case": False, "--dp": False,
    "--use_mil": False, "--sampled_use_mil": False, "--use_bn_sync": False, "--debug": False,
}
# Flags whose official meaning we keep only for the one value the method supports.
FIXED_FLAGS = {"--sim_header": "meanP", "--linear_patch": "2d"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DGL: train and evaluate text-video retrieval", allow_abbrev=False)
    a = p.add_argument
    # what to run
    a("--do_train", type=int, default=0)
    a("--do_eval", type=int, default=0)
    a("--output_dir", required=True)
    a("--resume", default=None, help="our checkpoint (exact resume) or an official ckpt.*.pth.tar (weights)")
    a("--load_from_pretrained", type=int, default=0, help="with --resume: load weights only, start at step 0")
    a("--seed", type=int, default=42)
    a("--lmdb_dataset", default=None, help="not supported; decode files or use --frame_cache")
    a("--num_thread_reader", type=int, default=1, help="DataLoader workers per rank")
    add_data_arguments(p)
    # model
    a("--pretrained_clip_name", default="ViT-B/32",
      help="ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, or a CLIP file/folder (OpenAI, Hugging Face, open_clip)")
    a("--pretrained_dir", default=None, help="folder holding ViT-B-32.pt / ViT-B-16.pt / ViT-L-14.pt ...")
    a("--clip_activation", default=None, choices=("quick_gelu", "gelu"),
      help="CLIP MLP activation for files that do not record it (open_clip without open_clip_config.json)")
    a("--shared_latent_space", default="transformer", choices=("transformer", "linear"))
    a("--text_prompt_length", type=int, default=8)
    a("--local_each_frame_prompt_length", type=int, default=4)
    a("--global_visual_prompt_length", type=int, default=4)
    a("--unified_transformer_layers", type=int, default=None,
      help="layers with prompts; default: all the backbone's towers share (12 for ViT-B and ViT-L)")
    a("--visual_output_type", default="global_prompt0")
    a("--freeze_clip", type=int, default=1, choices=(0, 1))
    a("--grad_checkpointing", action="store_true", help="recompute frozen blocks in backward (less memory)")
    # optimisation
    a("--epochs", type=int, default=20)
    a("--batch_size", type=int, default=256, help="per rank")
    a("--batch_size_val", type=int, default=3500)
    a("--lr", type=float, default=1e-4)
    a("--coef_lr", type=float, default=1.0)
    a("--wd", type=float, default=0.2)
    a("--beta1", type=float, default=0.9)
    a("--beta2", type=float, default=0.98)
    a("--eps", type=float, default=1e-6)
    a("--warmup_proportion", type=float, default=0.1)
    a("--clip_grad_norm", type=float, default=1.0)
    a("--gradient_accumulation_steps", type=int, default=1, help="encode each batch in this many chunks")
    a("--precision", default="amp", choices=("amp", "bf16", "fp16", "fp32"))
    a("--train_group_size", type=int, default=1,
      help="keep runs of this many consecutive training samples in one batch (e.g. 2 for twin videos stored side by side)")
    a("--max_steps", type=int, default=None, help="stop (and save) after this many optimiser steps")
    # logging / evaluation
    a("--n_display", type=int, default=100)
    a("--tensorboard_path", default=None)
    a("--eval_every_epoch", type=int, default=1, choices=(0, 1))
    a("--dsl", action="store_true", help="also report dual-softmax re-ranked metrics")
    a("--qb_norm", action="store_true", help="also report QB-Norm metrics (query bank from the training set)")
    a("--qb_norm_bank_size", type=int, default=5000)
    a("--qb_norm_beta", type=float, default=0.87, help="fixed QB-Norm beta (on logits)")
    a("--save_features", action="store_true", help="write the evaluation features to eval_features.pt")
    a("--baseline", choices=("meanp",), default=None,
      help="evaluate the frozen CLIP's frame-mean (CLIP4Clip meanP zero-shot) instead of DGL")
    a("--export_official", action="store_true", help="also write the best model in the official layout")
    for flag, takes_value in IGNORED_FLAGS.items():
        if takes_value:
            a(flag, default=None, help=argparse.SUPPRESS)
        else:
            a(flag, action="store_true", help=argparse.SUPPRESS)
    for flag, value in FIXED_FLAGS.items():
        a(flag, default=value, help=f"only {value!r} (kept for command-line compatibility)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    given = {tok.split("=", 1)[0] for tok in argv if tok.startswith("--")}
    args.ignored_flags = sorted(f for f in IGNORED_FLAGS if f in given and f != "--loose_type")
    for flag, value in FIXED_FLAGS.items():
        if getattr(args, flag[2:]) != value:
            raise SystemExit(f"{flag} {getattr(args, flag[2:])!r} is not supported by DGL (only {value!r})")
    if args.lmdb_dataset:
        raise SystemExit("--lmdb_dataset is not supported: decode the video files, or build a --frame_cache")
    if not (args.do_train or args.do_eval):
        raise SystemExit("nothing to do: pass --do_train 1 and/or --do_eval 1")
    if args.baseline and (args.do_train or args.resume):
        raise SystemExit("--baseline is a zero-shot reference: use it with --do_eval 1 only, without --resume")
    if args.batch_size % args.gradient_accumulation_steps:
        raise SystemExit("--batch_size must be divisible by --gradient_accumulation_steps")
    return args


def write_run_config(args: argparse.Namespace, output_dir: Path) -> None:
    """The resolved flags, git commit and library versions, next to the logs."""
    import numpy
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    info = {
        "args": {k: v for k, v in vars(args).items()},
        "git_commit": commit or None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__},
        "command": sys.argv,
    }
    (output_dir / "config.json").write_text(json.dumps(info, indent=1, default=str))
