"""Contrastively pretrain a tiny CLIP on synthetic stills and save it as an OpenAI-format weight file.

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

The result is cached: when FILE exists and FILE.json records the same recipe (model sizes, steps, batch,
seed, ...) and the file's SHA256, nothing is trained.

Usage: python preprocess/pretrain_tiny_clip.py --out FILE [--steps N] [--batch_size B] [--seed S]
       [--width W] [--layers L] [--resolution R] [--patch P] [--context C] [--quick] [--force]
       [--threads T] [--no_progress]   (--help lists the other recipe fields: lr, embed_dim, ...)
On a busy machine --threads 1 can be several times faster than 2 threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.transforms import normalize, resize_and_crop  # noqa: E402
from models.checkpoint import atomic_save  # noqa: E402
from models.clip import CLIP  # noqa: E402
from models.pretrained import CLIPConfig  # noqa: E402
from models.tokenizer import ClipTokenizer  # noqa: E402
from preprocess import make_synthetic  # noqa: E402
from preprocess.synthetic_stills import POSITION_PHRASES, sample_stills  # noqa: E402
from models.files import atomic_write  # noqa: E402

RECIPE_VERSION = 1  # bump when the training procedure changes, so cached files are retrained
VOCAB_SIZE = 49408  # OpenAI's BPE vocabulary, so models.tokenizer's ids index the embedding
HEAD_WIDTH = 64  # the loader infers heads as width // 64
MAX_LOGIT_SCALE = math.log(100.0)
EVAL_SEED = 0  # the held-out stills come from their own stream, fixed whatever the training seed
EVAL_BATCH = 256


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the weights; the cache key is this whole record."""

    steps: int = 900
    batch_size: int = 128
    seed: int = 0
    width: int = 128  # both towers
    layers: int = 3  # both towers
    resolution: int = 32
    patch: int = 8
    context: int = 32
    embed_dim: int = 128
    render_size: int = 64  # stills drawn at this size, then resized like video frames (0: draw at resolution)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.1  # fraction of the steps
    eval_size: int = 512
    # Video captions per step for the text-only paraphrase term (0: stills only). Half the batch are
    # time-reversed twins of the other half, so the text tower learns to tell "left to right" from
    # "right to left" without ever seeing a moving image.
    caption_batch: int = 64

    def clip_config(self) -> CLIPConfig:
        grid = self.resolution // self.patch
        return CLIPConfig(
            embed_dim=self.embed_dim, image_resolution=self.resolution, vision_layers=self.layers,
            vision_width=self.width, vision_heads=self.width // HEAD_WIDTH, vision_patch_size=self.patch,
            grid_size=grid, context_length=self.context, vocab_size=VOCAB_SIZE, text_width=self.width,
            text_heads=self.width // HEAD_WIDTH, text_layers=self.layers,
        )

    def validate(self) -> None:
        if self.width < HEAD_WIDTH or self.width % HEAD_WIDTH:
            raise ValueError(f"width must be a positive multiple of {HEAD_WIDTH} (heads are width/64), got {self.width}")
        if self.resolution % self.patch:
            raise ValueError(f"resolution {self.resolution} is not a multiple of patch {self.patch}")
        if min(self.steps, self.batch_size, self.layers, self.embed_dim, self.eval_size) < 1 or self.batch_size < 2:
            raise ValueError("steps, layers, embed_dim, eval_size must be >= 1 and batch_size >= 2")
        if self.context < 8:
            raise ValueError(f"context must be >= 8 tokens, got {self.context}")
        if self.caption_batch < 0 or self.caption_batch % 2:
            raise ValueError(f"caption_batch must be an even number >= 0 (clips come in twin pairs), got {self.caption_batch}")
        if self.render_size and self.render_size < self.resolution:
            raise ValueError("render_size must be 0 or >= resolution")


DEFAULT = Recipe()
QUICK = Recipe(steps=400, batch_size=64, layers=2, embed_dim=64, eval_size=256, caption_batch=32)


# ------------------------------------------------------------------------------------------------ data
class CaptionTokens:
    """Captions -> token ids [N,L], L cut to the longest caption; remembers every caption it tokenised."""

    def __init__(self, context: int):
        self.context = context
        self.tokenizer = ClipTokenizer()
        self.seen: dict[str, list[int]] = {}  # caption -> [SOT, ..., EOT]; the world has few distinct captions

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = []
        for caption in captions:
            ids = self.seen.get(caption)
            if ids is None:
                ids, mask = self.tokenizer(caption, self.context)
                ids = self.seen[caption] = ids[0, : int(mask.sum())].tolist()
            rows.append(ids)
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for row, ids in enumerate(rows):
            out[row, : len(ids)] = torch.tensor(ids)
        return out  # causal attention: trailing padding never reaches the EOT feature


class StillBatches:
    """Fresh seeded stills -> (normalised images [N,3,R,R], token ids [N,L], captions)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.tokens = CaptionTokens(recipe.context)

    def images(self, raw: np.ndarray) -> torch.Tensor:
        return normalize(resize_and_crop(raw, self.recipe.resolution))  # resize: identity at the model resolution

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        raw, captions = sample_stills(n, self.recipe.render_size or self.recipe.resolution, rng)
        return self.images(raw), self.tokens(captions), captions


class MotionCaptions:
    """Two differently worded video captions of the same clip, for the text-only paraphrase term.

    Clips come in time-reversed twin pairs (a static clip is paired with a random motion) whose captions
    share template and wording except for the motion phrase, so the hardest negative of every caption is
    its twin's. ``keys`` identify the clip's attributes: equal keys are both positives.
    """

    def __init__(self, tokens: CaptionTokens):
        self.tokens = tokens
        self.moving = [m for m in make_synthetic.MOTIONS if m in make_synthetic.REVERSE]

    def _partner(self, attrs: make_synthetic.ClipAttrs, rng: np.random.Generator) -> make_synthetic.ClipAttrs:
        motion = make_synthetic.REVERSE.get(attrs.motion) or self.moving[rng.integers(len(self.moving))]
        return dataclasses.replace(attrs, motion=motion)

    def texts(self, n: int, rng: np.random.Generator) -> tuple[list[str], list[str], list[tuple]]:
        """n clips as n/2 (clip, twin) pairs at indices (2i, 2i+1) -> (wording 1, wording 2, attributes)."""
        clips = []
        for _ in range(n // 2):
            first = make_synthetic.random_attrs(rng, make_synthetic.MOTIONS)
            clips += [first, self._partner(first, rng)]
        views = [caps for i in range(0, n, 2) for caps in make_synthetic.caption_variants(clips[i : i + 2], 2, rng)]
        return [v[0] for v in views], [v[1] for v in views], [astuple(c) for c in clips]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[tuple]]:
        first, second, keys = self.texts(n, rng)
        return self.tokens(first), self.tokens(second), keys


# ------------------------------------------------------------------------------------------------ training
def _symmetric_infonce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target.t())) / 2


def contrastive_loss(model: CLIP, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch with CLIP's learnable temperature (capped at 100)."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(ids), dim=-1)
    logits = model.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * img @ txt.t()
    return _symmetric_infonce(logits, torch.eye(len(ids)))


def paraphrase_loss(model: CLIP, first: torch.Tensor, second: torch.Tensor, keys: list[tuple]) -> torch.Tensor:
    """Symmetric InfoNCE between two wordings of the same clips; clips with equal attributes share the target."""
    a = F.normalize(model.encode_text(first), dim=-1)
    b = F.normalize(model.encode_text(second), dim=-1)
    logits = model.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * a @ b.t()
    index: dict[tuple, int] = {}
    codes = torch.tensor([index.setdefault(key, len(index)) for key in keys])
    same = (codes[:, None] == codes[None, :]).float()
    return _symmetric_infonce(logits, same / same.sum(dim=1, keepdim=True))


class _Optimizers:
    """AdamW (CLIP's betas) for everything but the token table, which gets sparse gradients and SparseAdam.

    The table has 49,408 rows of which the stills use about a hundred; dense gradients and AdamW over the
    whole table would dominate the step time. Rows never used get no update either way (Adam's moments
    stay zero and the table is not weight-decayed). Weight decay only on weight matrices, not on gains,
    biases, embeddings or the temperature.
    """

    NO_DECAY = {"positional_embedding", "visual.positional_embedding", "visual.class_embedding", "logit_scale"}

    def __init__(self, model: CLIP, recipe: Recipe):
        model.token_embedding.sparse = True
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if name != "token_embedding.weight":
                (no_decay if param.ndim < 2 or name in self.NO_DECAY else decay).append(param)
        groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        kwargs = {"lr": recipe.lr, "betas": (0.9, 0.98), "eps": 1e-6}
        self.dense = torch.optim.AdamW(groups, **kwargs)
        self.sparse = torch.optim.SparseAdam([model.token_embedding.weight], **kwargs)
        factor = _schedule(recipe)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (self.dense, self.sparse)]

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)
        self.sparse.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()
        for scheduler in self.schedulers:
            scheduler.step()


def _schedule(recipe: Recipe):
    warmup = max(1, round(recipe.warmup * recipe.steps))

    def factor(step: int) -> float:  # step counts finished optimiser steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train(recipe: Recipe, progress: bool = True) -> tuple[CLIP, list[float], dict[str, set[str]]]:
    """-> (trained model in eval mode, per-step losses, caption words seen {"with_images", "text_only"})."""
    recipe.validate()
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng([recipe.seed, 1])
    data = StillBatches(recipe)
    captions = MotionCaptions(CaptionTokens(recipe.context))
    caption_rng = np.random.default_rng([recipe.seed, 3])
    model = CLIP(recipe.clip_config())
    model.train()
    optimizer = _Optimizers(model, recipe)
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), desc="pretrain tiny CLIP", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        images, ids, _ = data.sample(recipe.batch_size, rng)
        loss = contrastive_loss(model, images, ids)
        if recipe.caption_batch:
            loss = loss + paraphrase_loss(model, *captions.sample(recipe.caption_batch, caption_rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}", refresh=False)
    model.token_embedding.sparse = False
    model.eval()
    with_images = _words(data.tokens.seen)
    return model, losses, {"with_images": with_images, "text_only": _words(captions.tokens.seen) - with_images}


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: CLIP, recipe: Recipe) -> dict[str, float]:
    """Retrieval and zero-shot attribute accuracy (percent) on a fixed held-out set of stills.

    R@1/R@5 image->text and text->image count only the paired index as a hit, although captions are often
    ambiguous (30 % omit the size, one template in five the position, and 512 stills share 720 attribute
    combinations), so 100 % is out of reach; they compare recipes. ``zero_shot_*``: each still is scored
    against the prompts "a {colour} {shape} {position}" (6 x 4 x 5) and the best prompt's colour, shape and
    position are checked against the still's caption (position only where the caption names one).
    """
    model.eval()
    data = StillBatches(recipe)
    images, ids, captions = data.sample(recipe.eval_size, np.random.default_rng([EVAL_SEED, 2]))
    img = F.normalize(_batched(model.encode_image, images), dim=-1)
    txt = F.normalize(_batched(model.encode_text, ids), dim=-1)
    sim = img @ txt.t()
    target = torch.arange(len(sim))

    def recall(scores: torch.Tensor, k: int) -> float:
        rank = (scores > scores[target, target][:, None]).sum(dim=1)  # how many beat the pair
        return _percent((rank < k).float().mean())

    result = {"n": len(sim), "i2t_r1": recall(sim, 1), "t2i_r1": recall(sim.t(), 1),
              "i2t_r5": recall(sim, 5), "t2i_r5": recall(sim.t(), 5)}
    prompts = list(itertools.product(make_synthetic.COLOURS, make_synthetic.SHAPES, POSITION_PHRASES))
    words = [f"{make_synthetic.article(colour)} {colour} {shape} {POSITION_PHRASES[position][0]}" for colour, shape, position in prompts]
    prompt_txt = F.normalize(_batched(model.encode_text, data.tokens(words)), dim=-1)
    best = [prompts[i] for i in (img @ prompt_txt.t()).argmax(dim=1).tolist()]
    truth = [_caption_attributes(caption) for caption in captions]
    for index, name in enumerate(("colour", "shape", "position")):
        pairs = [(b[index], t[index]) for b, t in zip(best, truth) if t[index] is not None]
        result[f"zero_shot_{name}"] = _percent(torch.tensor([b == t for b, t in pairs], dtype=torch.float).mean())
    return result | twin_caption_scores(model, MotionCaptions(data.tokens), recipe.eval_size)


@torch.no_grad()
def twin_caption_scores(model: CLIP, captions: MotionCaptions, n: int) -> dict[str, float]:
    """How well the text tower alone tells time-reversed twins apart, on held-out caption pairs.

    ``twin_caption_cosine``: mean cosine of a caption and its twin's (same words but the motion phrase);
    ``twin_caption_accuracy``: share (percent) of captions closer to a rewording of their own clip than to
    the same rewording of the twin.
    """
    first, second, _ = captions.sample(n - n % 2, np.random.default_rng([EVAL_SEED, 4]))
    a = F.normalize(_batched(model.encode_text, first), dim=-1)
    b = F.normalize(_batched(model.encode_text, second), dim=-1)
    twin = torch.arange(len(a)) ^ 1  # clips come as (clip, twin) at indices (2i, 2i+1)
    own, other = (a * b).sum(-1), (a * b[twin]).sum(-1)
    return {"twin_caption_cosine": round((a * a[twin]).sum(-1).mean().item(), 3),
            "twin_caption_accuracy": _percent((own > other).float().mean())}


def _batched(encode, inputs: torch.Tensor) -> torch.Tensor:
    return torch.cat([encode(inputs[i : i + EVAL_BATCH]) for i in range(0, len(inputs), EVAL_BATCH)])


def _percent(fraction: torch.Tensor) -> float:
    return round(100.0 * fraction.item(), 2)


_SHAPE_OF = {word: shape for shape, words in make_synthetic.SHAPE_WORDS.items() for word in words}
_POSITION_OF = {phrase: position for position, phrases in POSITION_PHRASES.items() for phrase in phrases}


def _caption_attributes(caption: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, position) named by a still caption; None for what it does not name."""
    padded = f" {caption} "

    def find(names) -> str | None:
        return next((name for name in sorted(names, key=len, reverse=True) if f" {name} " in padded), None)

    shape_word, phrase = find(_SHAPE_OF), find(_POSITION_OF)
    return find(make_synthetic.COLOURS), _SHAPE_OF.get(shape_word), _POSITION_OF.get(phrase)


# ------------------------------------------------------------------------------------------------ vocabulary
def _words(texts) -> set[str]:
    return {word for text in texts for word in re.findall(r"[a-z]+", text.lower())}


def video_caption_words() -> set[str]:
    """Every word the synthetic video captions can use (templates, motions, colours, shapes, backgrounds)."""
    texts = [re.sub(r"\{[a-z_]+\}", " ", t) for t in make_synthetic.CAPTION_TEMPLATES]
    texts += [p for phrases in make_synthetic.MOTION_PHRASES.values() for p in phrases]
    texts += [w for words in make_synthetic.SHAPE_WORDS.values() for w in words]
    texts += [*make_synthetic.COLOURS, *make_synthetic.BACKGROUNDS, "a", "an"]
    return _words(texts)


# ------------------------------------------------------------------------------------------------ files
def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def cache_key(recipe: Recipe) -> dict:
    return {"recipe_version": RECIPE_VERSION, **asdict(recipe)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_summary(out: Path, recipe: Recipe) -> dict | None:
    """The sidecar's record when FILE holds exactly this recipe's weights, else None."""
    side = sidecar_path(out)
    if not (out.is_file() and side.is_file()):
        return None
    try:
        summary = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("cache_key") != cache_key(recipe):
        return None
    if summary.get("sha256") != _sha256(out):  # e.g. FILE rewritten by another recipe that then crashed
        return None
    return summary


def openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """``CLIP.state_dict()`` (fp32, OpenAI names) plus the 0-d int64 metadata of OpenAI's archives."""
    cfg = model.config
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    state["input_resolution"] = torch.tensor(cfg.image_resolution, dtype=torch.int64)
    state["context_length"] = torch.tensor(cfg.context_length, dtype=torch.int64)
    state["vocab_size"] = torch.tensor(cfg.vocab_size, dtype=torch.int64)
    return state


def save(model: CLIP, out: Path, summary: dict) -> dict:
    """Write FILE then FILE.json, each atomically; the sidecar goes first so a crash never leaves a stale match."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path(out).unlink(missing_ok=True)
    state = openai_state_dict(model)
    atomic_save(state, out)
    summary = {**summary, "sha256": _sha256(out)}
    atomic_write(sidecar_path(out), lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")
    return summary


def pretrain(out: str | os.PathLike, recipe: Recipe = DEFAULT, force: bool = False, progress: bool = True,
             log=print) -> dict:
    """Train (unless cached) and write FILE + FILE.json; returns the sidecar record plus ``skipped``."""
    out = Path(out)
    recipe.validate()
    if not force:
        cached = cached_summary(out, recipe)
        if cached is not None:
            log(f"{out}: already pretrained with this recipe (held-out R@1 i2t {cached['held_out']['i2t_r1']} "
                f"t2i {cached['held_out']['t2i_r1']}); skipping (--force retrains)")
            return {**cached, "skipped": True}
    start = time.perf_counter()
    model, losses, seen = train(recipe, progress=progress)
    train_s = time.perf_counter() - start
    held_out = evaluate(model, recipe)
    unseen = sorted(video_caption_words() - seen["with_images"] - seen["text_only"])
    summary = {
        "cache_key": cache_key(recipe),
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
    summary = save(model, out, summary)
    log(f"held-out stills (n={held_out['n']}): R@1 image->text {held_out['i2t_r1']} %, text->image "
        f"{held_out['t2i_r1']} % (R@5 {held_out['i2t_r5']} / {held_out['t2i_r5']} %); zero-shot colour "
        f"{held_out['zero_shot_colour']} %, shape {held_out['zero_shot_shape']} %, position "
        f"{held_out['zero_shot_position']} %; twin captions: cosine {held_out['twin_caption_cosine']}, told apart "
        f"{held_out['twin_caption_accuracy']} %; {summary['wall_seconds']} s; wrote {out}")
    return {**summary, "skipped": False}


# ------------------------------------------------------------------------------------------------ command line
def parse_recipe(argv: list[str] | None = None) -> tuple[argparse.Namespace, Recipe]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", required=True, help="weight file to write (FILE.json gets the summary)")
    parser.add_argument("--quick", action="store_true", help="small, fast preset (~half a minute) for smoke runs")
    parser.add_argument("--force", action="store_true", help="retrain even if FILE matches the recipe")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    for field in dataclasses.fields(Recipe):
        kind = float if isinstance(getattr(DEFAULT, field.name), float) else int
        parser.add_argument(f"--{field.name}", type=kind, default=None,
                            help=f"default {getattr(DEFAULT, field.name)}, --quick {getattr(QUICK, field.name)}")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULT
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
    return pretrain(args.out, recipe, force=args.force, progress=not args.no_progress)


if __name__ == "__main__":
    main()
