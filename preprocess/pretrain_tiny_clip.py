"""Contrastively pretrain a tiny CLIP (or any registered backbone: --backbone blip) on synthetic stills and save
it as the weight file ``--pretrained_clip_name`` loads.

No real CLIP weights can be fetched here, so the demo first teaches a small CLIP (our own `models.clip`
backbone, OpenAI parameter names, the real 49,408-token BPE vocabulary) to match still frames of the
synthetic world with captions naming colour, shape, size, position and background. DGL then starts from
this file exactly as it would from OpenAI's ViT-B/32.

Default (width 128, 3+3 layers, 32 px in 8 px patches, batch 128 stills + 64 captions, 900 steps; about
3 minutes on 2 cores)
learns colour, position and most of shape; it was chosen over width 192 because more steps of a narrower
model learnt more in the same time (shape and position are learnt late, after ~400 steps). --quick
(2+2 layers, batch 64 + 32 captions, 400 steps; under a minute) learns colour only: a smoke-test model.

What it can and cannot know: stills carry no motion, so the image tower never sees one. A text-only term
(``caption_batch``) teaches the text tower the temporal words of the video captions ("moves", "left to
right", "shrinks", ...): it contrasts two wordings of the same clip's caption against the captions of other
clips, among them the caption of its time-reversed twin worded alike, much as web captions taught real
CLIP's text tower words that no single photo grounds. Without it (``--caption_batch 0``) twin captions embed almost
alike (held-out cosine 0.93, told apart 56 %, i.e. chance) and no video model could be rewarded for telling
twins apart. The sidecar JSON lists the words seen with images, seen in text only, and never seen. Stills are
rendered at the video size (64 px) and reduced to the model resolution with the video loader's own resize, so
both look alike.

--backbone blip pretrains a tiny BLIP the same way (same recipes, data, losses, schedule and evaluation; the
recipe's width and layers give both towers, heads of 64 channels, BLIP's eps and 4x MLPs) and writes an
original-layout BLIP file (FILE, e.g. tiny_blip/tiny_blip.pth) with ``vocab.txt`` beside it: a WordPiece
vocabulary of the synthetic world's words with BERT's special tokens, letters and digits. Its cross-attention
layers and ITM head stay at their random initialisation (contrastive pretraining only). The other backbones'
entries: preprocess/tiny_backbone/backbones.py.

The result is cached: when FILE exists and FILE.json records the same recipe (model sizes, steps, batch,
seed, backbone, ...) and the SHA256 of FILE (and vocab.txt), nothing is trained.

Usage: python preprocess/pretrain_tiny_clip.py --out FILE [--backbone B] [--steps N] [--batch_size B] [--seed S]
       [--width W] [--layers L] [--resolution R] [--patch P] [--context C] [--quick] [--force]
       [--threads T] [--no_progress]   (--help lists the other recipe fields: lr, embed_dim, ...)
On a busy machine --threads 1 can be several times faster than 2 threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.backbone import DEFAULT_BACKBONE  # noqa: E402
from preprocess.tiny_backbone.backbones import TINY_BACKBONES, tiny_backbone  # noqa: E402
from preprocess.tiny_backbone.data import MotionCaptions, StillBatches, video_caption_words  # noqa: E402
from preprocess.tiny_backbone.evaluation import evaluate  # noqa: E402
from preprocess.tiny_backbone.files import cached_summary, openai_state_dict, save  # noqa: E402
from preprocess.tiny_backbone.losses import contrastive_loss, paraphrase_loss  # noqa: E402
from preprocess.tiny_backbone.recipe import DEFAULT, QUICK, Recipe, cache_key  # noqa: E402
from preprocess.tiny_backbone.training import train  # noqa: E402
from utils import cli  # noqa: E402

# Re-exported: the demo, the tests and scripts have used these names from here since before the split.
__all__ = [
    "DEFAULT",
    "QUICK",
    "MotionCaptions",
    "Recipe",
    "StillBatches",
    "TINY_BACKBONES",
    "cache_key",
    "contrastive_loss",
    "evaluate",
    "main",
    "openai_state_dict",
    "paraphrase_loss",
    "parse_recipe",
    "pretrain",
    "save",
    "tiny_backbone",
    "train",
    "video_caption_words",
]


def pretrain(out: str | os.PathLike, recipe: Recipe = DEFAULT, force: bool = False, progress: bool = True,
             log=print, backbone: str = DEFAULT_BACKBONE) -> dict:
    """Train ``backbone`` (unless cached) and write FILE + FILE.json; returns the sidecar record plus ``skipped``."""
    out = Path(out)
    recipe.validate()
    entry = tiny_backbone(backbone)
    if not force:
        cached = cached_summary(out, recipe, backbone)
        if cached is not None:
            log(f"{out}: already pretrained with this recipe (held-out R@1 i2t {cached['held_out']['i2t_r1']} "
                f"t2i {cached['held_out']['t2i_r1']}); skipping (--force retrains)")
            return {**cached, "skipped": True}
    start = time.perf_counter()
    model, losses, seen = train(recipe, progress=progress, backbone=backbone)
    train_s = time.perf_counter() - start
    held_out = evaluate(model, recipe, backbone)
    unseen = sorted(video_caption_words() - seen["with_images"] - seen["text_only"])
    summary = {
        "cache_key": cache_key(recipe, entry.key),
        "backbone": backbone,
        "config": asdict(model.config),
        "steps": recipe.steps,
        "seed": recipe.seed,
        "batch_size": recipe.batch_size,
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "loss_first": round(float(np.mean(losses[:10])), 4),
        "loss_last": round(float(np.mean(losses[-10:])), 4),
        "logit_scale": round(model.logit_scale.exp().item(), 2),
        "held_out": held_out,
        "words_with_images": sorted(seen["with_images"]),
        "words_text_only": sorted(seen["text_only"]),
        "video_words_not_trained": unseen,
        "knows": "images: colour, shape (with synonyms), size, position and background of one shape in a still, "
                 "never motion (stills carry no time); text: also which video captions are rewordings of each "
                 "other, so motion phrases and their reversals embed apart"
                 if recipe.caption_batch else
                 "colour, shape (with synonyms), size, position and background of one shape in a still; "
                 "no motion or temporal words (stills carry no time)",
    }
    summary = save(model, out, summary, backbone)
    log(f"held-out stills (n={held_out['n']}): R@1 image->text {held_out['i2t_r1']} %, text->image "
        f"{held_out['t2i_r1']} % (R@5 {held_out['i2t_r5']} / {held_out['t2i_r5']} %); zero-shot colour "
        f"{held_out['zero_shot_colour']} %, shape {held_out['zero_shot_shape']} %, position "
        f"{held_out['zero_shot_position']} %; twin captions: cosine {held_out['twin_caption_cosine']}, told apart "
        f"{held_out['twin_caption_accuracy']} %; {summary['wall_seconds']} s; wrote {out}")
    return {**summary, "skipped": False}


# ------------------------------------------------------------------------------------------------ command line
def parse_recipe(argv: list[str] | None = None) -> tuple[argparse.Namespace, Recipe]:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="weight file to write (FILE.json gets the summary)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(TINY_BACKBONES),
                        help=f"registered backbone to pretrain (default {DEFAULT_BACKBONE}); its own default and "
                             "--quick recipes (the defaults below are CLIP's)")
    parser.add_argument("--quick", action="store_true", help="small, fast preset (~half a minute) for smoke runs")
    parser.add_argument("--force", action="store_true", help="retrain even if FILE matches the recipe")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    for field in dataclasses.fields(Recipe):
        kind = float if isinstance(getattr(DEFAULT, field.name), float) else int
        parser.add_argument(f"--{field.name}", type=kind, default=None,
                            help=f"default {getattr(DEFAULT, field.name)}, --quick {getattr(QUICK, field.name)}")
    args = parser.parse_args(argv)
    entry = tiny_backbone(args.backbone)
    base = entry.quick if args.quick else entry.default
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe) if getattr(args, f.name) is not None}
    recipe = dataclasses.replace(base, **overrides)
    try:
        recipe.validate()
    except ValueError as err:
        parser.error(str(err))
    return args, recipe


def main(argv: list[str] | None = None) -> dict:
    args, recipe = parse_recipe(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return pretrain(args.out, recipe, force=args.force, progress=not args.no_progress, backbone=args.backbone)


if __name__ == "__main__":
    sys.exit(cli.run(main))
