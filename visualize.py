"""Draw where DGL's global prompt looks: one video, its sampled frames with the prompt's attention on the patches.

    python visualize.py --checkpoint CKPT --video FILE [--caption TEXT] [--layer N|mean] [--prompt K] --out PNG

CKPT is one of our compact checkpoints (the DGL config and the backbone name are inside; the CLIP file is found
with --pretrained_clip_name/--pretrained_dir) or an official ``ckpt.pth.tar`` (it holds the full CLIP; the DGL
sizes are read from its tensors where they can be, the official flags below override them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dataloaders.config import VIDEO_BACKENDS
from dataloaders.frames import read_eval_frames
from models.attention_maps import VideoAttention, explicit_encode_video
from models.dgl import DGL
from apps.figures import attention_figure
from models.factory import load_dgl
from utils import cli
from utils.cli import ArgumentParser, require_path
from utils.flags import add_backbone_flags, add_model_flags, model_overrides


# -------------------------------------------------------------------------------------------- model
def load_model(args: argparse.Namespace) -> DGL:
    model = load_dgl(args.checkpoint, args.pretrained_clip_name, args.pretrained_dir, **model_overrides(vars(args)))
    if not isinstance(model, DGL):  # the attention maps follow DGL's prompted token layout
        raise SystemExit(f"{args.checkpoint}: a --model {model.config.model} checkpoint; visualize.py draws the "
                         "attention of --model dgl only")
    return model


# --------------------------------------------------------------------------------------------- main
def parse_layer(value: str) -> int | str:
    if value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layer takes an integer or 'mean', got {value!r}") from None


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", required=True, help="our compact checkpoint or an official ckpt.pth.tar")
    p.add_argument("--video", required=True, help="the video file to draw")
    p.add_argument("--out", required=True, help="figure file (.png)")
    p.add_argument("--caption", help="also show the text-video cosine similarity")
    p.add_argument("--layer", type=parse_layer, default="mean", help="vision layer index (negative from the end) or 'mean'")
    p.add_argument("--prompt", type=int, default=0, help="which global prompt's attention to draw")
    p.add_argument("--max_words", type=int, default=32, help="caption tokens kept (with --caption)")
    p.add_argument("--frame_size", type=int, help="displayed frame size in pixels (default: the model's input size)")
    p.add_argument("--video_backend", default="auto", choices=VIDEO_BACKENDS,
                   help="video decoder; auto: the first installed that reads the file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs")
    add_backbone_flags(p, default=None)
    add_model_flags(p, for_checkpoint=True)
    return p


def run(args: argparse.Namespace) -> dict:
    """Build the model, run it on the video and write the figure; returns the numbers shown."""
    device = torch.device(args.device)
    model = load_model(args).to(device).eval()
    frames = model.config.max_frames
    resolution = model.clip.config.image_resolution
    video, indices = read_eval_frames(args.video, frames, resolution, args.video_backend)
    raw, indices = video.permute(0, 2, 3, 1).numpy(), indices.tolist()  # [T, H, W, 3] for the figure
    with torch.no_grad():
        prompts = model.prompts()
        result: VideoAttention = explicit_encode_video(model, video[None].to(device), prompts)
        similarity = None
        if args.caption is not None:
            from models.backbones import get_tokenizer

            ids, _ = get_tokenizer(model.config.backbone, model.clip)([args.caption], args.max_words)
            text = model.encode_text(ids.to(device), prompts)
            similarity = float(F.cosine_similarity(text.float(), result.features.float()).item())
            logit = float(model.logits(text, result.features).item())
    layer_count = result.attention.shape[1]
    parts = {k: v[0].cpu().double().numpy() for k, v in result.split(result.select(args.layer, args.prompt)).items()}
    masses = {"patches": parts["patches"].reshape(frames, -1).sum(-1), "cls": parts["cls"], "local": parts["local"].sum(-1)}
    layer_text = f"mean of {layer_count} layers" if args.layer == "mean" else f"layer {int(args.layer) % layer_count} (0-based) of {layer_count}"
    grid = f"{result.grid[0]}x{result.grid[1]}"
    title = [
        f"{Path(args.video).name}: global prompt {args.prompt}, {layer_text}, mean over heads; "
        f"{frames} frames, {grid} patches ({model.config.shared_latent_space} variant)",
        f'caption: "{args.caption}"' if args.caption is not None else "",
        f"text-video cosine similarity {similarity:.4f} (logit {logit:.2f}, {model.config.visual_output_type})"
        if similarity is not None else "",
    ]
    size = args.frame_size or resolution
    shown = raw
    if size != resolution:
        from PIL import Image

        shown = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in raw])
    figure = attention_figure(
        shown,
        parts["patches"],
        masses,
        float(parts["global"].sum()),
        title=title,
        frame_labels=[f"t={t} (frame {i})" for t, i in enumerate(indices)],
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    return {
        "frame_indices": indices,
        "frame_mass": (masses["patches"] + masses["cls"] + masses["local"]).tolist(),
        "global_mass": float(parts["global"].sum()),
        "similarity": similarity,
        "size": figure.size,
    }


def draw(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    require_path("--checkpoint", args.checkpoint, "pass a DGL checkpoint (ours, or an official ckpt.pth.tar)")
    require_path("--video", args.video, "pass the video file to draw")
    summary = run(args)
    print(f"wrote {args.out} ({summary['size'][0]}x{summary['size'][1]})")
    print("frames", summary["frame_indices"])
    print("mass per frame", " ".join(f"{m:.4f}" for m in summary["frame_mass"]), f"| global prompts {summary['global_mass']:.4f}")
    if summary["similarity"] is not None:
        print(f"cosine similarity {summary['similarity']:.4f}")


def main(argv: list[str] | None = None) -> int:
    """The exit code: user errors are one line and 2 (utils/cli.py)."""
    return cli.run(draw, argv, prog="visualize.py")


if __name__ == "__main__":
    sys.exit(main())
