"""Range checks of the numeric flags, run once when the flags are parsed.

An out-of-range value used to surface later as a ZeroDivisionError, a loop that silently did nothing, or a
run that trained backwards (``--clip_grad_norm -1``); here it is a one-line error naming the flag and its range.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from models.backbones import get_backbone


@dataclass(frozen=True)
class Range:
    """Valid values ``lo <= x <= hi``; ``open_lo`` / ``open_hi`` make that end exclusive."""

    lo: float = -math.inf
    hi: float = math.inf
    open_lo: bool = False
    open_hi: bool = False
    allow_inf: bool = False  # e.g. --clip_grad_norm inf: no clipping

    def problem(self, value: float) -> str | None:
        """None if ``value`` lies in the range, else what it must be."""
        if isinstance(value, float) and math.isnan(value):
            return "must be a number"
        if math.isinf(value) and not self.allow_inf:
            return "must be finite"
        if self.open_lo and not value > self.lo:
            return f"must be > {self.lo:g}"
        if value < self.lo:
            return f"must be >= {self.lo:g}"
        if self.open_hi and not value < self.hi:
            return f"must be < {self.hi:g}"
        if value > self.hi:
            return f"must be <= {self.hi:g}"
        return None


AT_LEAST_1 = Range(1)
POSITIVE = Range(0, open_lo=True)

# Every numeric flag of main.py (None values, i.e. "not given", are not checked).
FLAG_RANGES: dict[str, Range] = {
    "epochs": AT_LEAST_1,
    "batch_size": AT_LEAST_1,
    "batch_size_val": AT_LEAST_1,
    "gradient_accumulation_steps": AT_LEAST_1,
    "train_group_size": AT_LEAST_1,
    "max_steps": AT_LEAST_1,
    "n_display": AT_LEAST_1,
    "max_frames": AT_LEAST_1,
    # Only the words take CLIP's positions (DGL's text prompts take none: models/dgl.py, encode_text), so
    # --max_words may use the whole context; more crashed at the first batch holding a long caption.
    "max_words": Range(2, get_backbone().context_length),
    "image_resolution": AT_LEAST_1,
    "text_prompt_length": AT_LEAST_1,
    "local_each_frame_prompt_length": AT_LEAST_1,
    "global_visual_prompt_length": AT_LEAST_1,
    "unified_transformer_layers": AT_LEAST_1,
    "num_thread_reader": Range(0),
    "seed": Range(0, 2**32 - 1 - 1024),  # numpy seeds are < 2**32; each rank adds its rank
    "qb_norm_bank_size": AT_LEAST_1,
    "qb_norm_beta": Range(),
    "lr": Range(0, 1, open_lo=True),  # AdamW moves each weight by about lr per step: above 1 it only diverges
    "coef_lr": POSITIVE,
    "wd": Range(0),
    "beta1": Range(0, 1, open_hi=True),
    "beta2": Range(0, 1, open_hi=True),
    "eps": POSITIVE,
    "warmup_proportion": Range(0, 1),
    "clip_grad_norm": Range(0, open_lo=True, allow_inf=True),
    "dist_timeout": POSITIVE,
    "itm_weight": Range(0),
    "momentum": Range(0, 1),
    "queue_size": Range(0),
    "alpha": Range(0, 1),
    "itm_rerank": Range(0),
}
HINTS = {
    "clip_grad_norm": " (pass inf to disable clipping)",
    "max_words": " (the backbone's text context length, SOT and EOT included)",
}


def check_ranges(args: argparse.Namespace, ranges: dict[str, Range] = FLAG_RANGES) -> None:
    """SystemExit naming the first flag outside its range, e.g. ``--batch_size 0: must be >= 1``."""
    for name, valid in ranges.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        problem = valid.problem(value)
        if problem is not None:
            raise SystemExit(f"--{name} {value:g}: {problem}{HINTS.get(name, '')}")
    if args.batch_size % args.gradient_accumulation_steps:
        raise SystemExit(
            f"--batch_size {args.batch_size} must be divisible by --gradient_accumulation_steps "
            f"{args.gradient_accumulation_steps}"
        )
