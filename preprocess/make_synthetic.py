"""Synthetic temporal video-text benchmark written in the MSR-VTT file layout.

Real MSR-VTT and CLIP weights cannot be fetched here, so this generator makes a small world of one
coloured shape moving on a plain background. The test split is made of *temporal twins*: two videos whose
raw frames are each other's time reversal, with captions that differ only in their temporal words. A model
that ignores frame order cannot tell twins apart, which is what makes the split a test of temporal modelling.

Usage: python preprocess/make_synthetic.py --out DIR [--seed 0] [--train_videos N] [--test_pairs M]
       [--frames F] [--size S] [--captions_per_video K] [--workers W]
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.parallel import parallel_map  # noqa: E402
from dataloaders.synthetic import add_reproducible_stream  # noqa: E402
from preprocess.synthetic_render import render_clip  # noqa: E402
from preprocess.synthetic_world import (  # noqa: E402
    CAPTION_TEMPLATES,
    MOTION_PAIRS,
    MOTION_PHRASES,
    MOTIONS,
    REVERSE,
    ClipAttrs,
    caption_variants,
    random_attrs,
)
from utils.progress import progress  # noqa: E402
from utils import cli  # noqa: E402

# Re-exported: tests and scripts have imported the world's names from here since before the split.
__all__ = [
    "MOTION_PHRASES",
    "MOTIONS",
    "REVERSE",
    "ClipAttrs",
    "SyntheticConfig",
    "make_dataset",
    "main",
    "render_clip",
]

FPS = 3


@dataclass
class SyntheticConfig:
    """Generator settings; the defaults match the project's demo scale."""

    seed: int = 0
    train_videos: int = 800
    # Training videos as time-reversed twin pairs too (adjacent ids; no static clips), so that a sampler that
    # keeps neighbours together (main.py --train_group_size 2) puts each video's reversal in its batch.
    train_twins: bool = False
    test_pairs: int = 150
    frames: int = 12
    size: int = 64
    captions_per_video: int = 5
    workers: int = 2
    crf: int = 18

    def validate(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ValueError("size must be an even number >= 16 (yuv420p needs even dimensions)")
        if self.train_twins and self.train_videos % 2:
            raise ValueError("train_twins needs an even number of train_videos")
        if self.frames < 2:
            raise ValueError("frames must be >= 2 for motion to exist")
        fewest = min(len(p) for p in MOTION_PHRASES.values()) * len(CAPTION_TEMPLATES)
        if not 1 <= self.captions_per_video <= fewest:
            raise ValueError(f"captions_per_video must be in [1, {fewest}] to keep captions distinct")


FLAG_HELP = {  # the command line's help for each SyntheticConfig field
    "seed": "random seed of the whole world (colours, shapes, motions, captions)",
    "train_videos": "training videos",
    "train_twins": "make the training videos time-reversed twin pairs too (see main.py --train_group_size 2)",
    "test_pairs": "test twin pairs (each a clip and its time reversal)",
    "frames": "frames per video",
    "size": "frame width and height in pixels (even, >= 16)",
    "captions_per_video": "captions per training video",
    "workers": "processes rendering videos",
    "crf": "H.264 quality (lower: larger, closer to the rendered frames)",
}


# ------------------------------------------------------------------------------------------------ planning
@dataclass
class Unit:
    """One render: a single train video, or a twin pair (second id gets the reversed frames)."""

    video_ids: list[str]
    attrs: list[ClipAttrs]
    captions: list[list[str]]
    render_seed: int
    split: str


def plan_units(cfg: SyntheticConfig) -> list[Unit]:
    """All random choices except the per-clip geometry, drawn in a fixed order from the seed."""
    rng = np.random.default_rng(cfg.seed)
    forward_motions = tuple(pair[0] for pair in MOTION_PAIRS)

    def twin_unit(first: int, split: str) -> Unit:
        a = random_attrs(rng, forward_motions)
        if rng.random() < 0.5:  # which twin comes first must not leak the motion direction
            a = replace(a, motion=REVERSE[a.motion])
        b = replace(a, motion=REVERSE[a.motion])
        caps = caption_variants([a, b], cfg.captions_per_video, rng)
        return Unit([f"video{first}", f"video{first + 1}"], [a, b], caps, int(rng.integers(2**63)), split)

    units = []
    if cfg.train_twins:
        units += [twin_unit(2 * j, "train") for j in range(cfg.train_videos // 2)]
    else:
        for i in range(cfg.train_videos):
            a = random_attrs(rng, MOTIONS)
            caps = caption_variants([a], cfg.captions_per_video, rng)
            units.append(Unit([f"video{i}"], [a], caps, int(rng.integers(2**63)), "train"))
    units += [twin_unit(cfg.train_videos + 2 * j, "test") for j in range(cfg.test_pairs)]
    return units


# ------------------------------------------------------------------------------------------------- writing
def write_video(path: Path, frames: np.ndarray, crf: int) -> None:
    """H.264/yuv420p mp4 at 3 fps, byte-reproducible whichever pool worker encodes it."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = add_reproducible_stream(container, "libx264", FPS, frames.shape[2], frames.shape[1],
                                         crf=str(crf), preset="medium")
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))


def _render_unit(job: tuple[Unit, int, int, int, str]) -> int:
    """Worker: render a unit's frames once and write each video (twin = same frames reversed)."""
    unit, frames, size, crf, video_dir = job
    clip = render_clip(unit.attrs[0], frames, size, np.random.default_rng(unit.render_seed))
    write_video(Path(video_dir) / f"{unit.video_ids[0]}.mp4", clip, crf)
    if len(unit.video_ids) == 2:
        write_video(Path(video_dir) / f"{unit.video_ids[1]}.mp4", clip[::-1], crf)
    return len(unit.video_ids)


def _encode_all(units: list[Unit], cfg: SyntheticConfig, video_dir: Path) -> None:
    jobs = [(u, cfg.frames, cfg.size, cfg.crf, str(video_dir)) for u in units]
    total = sum(len(u.video_ids) for u in units)
    with progress(total=total, desc="videos", unit="vid") as bar:
        for n in parallel_map(_render_unit, jobs, cfg.workers):
            bar.update(n)


def _write_annotations(units: list[Unit], cfg: SyntheticConfig, out: Path) -> None:
    """MSR-VTT files (train CSV, JSFUSION test CSV, data JSON) plus twins and generator metadata."""
    videos, sentences, meta, twins = [], [], {}, []
    for unit in units:
        for vid, attrs, caps in zip(unit.video_ids, unit.attrs, unit.captions):
            videos.append({"video_id": vid, "id": int(vid[5:]), "split": unit.split,
                           "url": f"synthetic://seed{cfg.seed}/{vid}"})
            sentences += [{"video_id": vid, "caption": c, "sen_id": len(sentences) + i} for i, c in enumerate(caps)]
            twin = [v for v in unit.video_ids if v != vid]
            meta[vid] = {**asdict(attrs), "split": unit.split, "twin": twin[0] if twin else None,
                         "render_seed": unit.render_seed}
        if unit.split == "test":
            twins.append(unit.video_ids)
    train = [v for u in units if u.split == "train" for v in u.video_ids]
    _write_csv(out / "MSRVTT_train.9k.csv", ["video_id"], [[v] for v in train])
    # one query per test video: its first caption (twins' first captions differ only in temporal words)
    test = [(v, caps[0]) for u in units if u.split == "test" for v, caps in zip(u.video_ids, u.captions)]
    test_rows = [[f"ret{i}", f"msr{v[5:]}", v, cap] for i, (v, cap) in enumerate(test)]
    _write_csv(out / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"], test_rows)
    _write_json(out / "MSRVTT_data.json", {"videos": videos, "sentences": sentences})
    _write_json(out / "twins.json", twins)
    _write_json(out / "synthetic_meta.json", {
        # workers is left out: it changes speed, never content, and the files stay byte-identical
        "config": {k: v for k, v in asdict(cfg).items() if k != "workers"}, "seed": cfg.seed, "fps": FPS,
        "render": "raw frames = render_clip(ClipAttrs(colour, shape, motion, background), frames, size, "
                  "np.random.default_rng(render_seed))",
        "versions": {"numpy": np.__version__, "av": av.__version__}, "videos": meta})


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def make_dataset(cfg: SyntheticConfig, out_dir: str | Path) -> dict:
    """Write the whole dataset into out_dir and return a short summary."""
    cfg.validate()
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    units = plan_units(cfg)
    _write_annotations(units, cfg, out)
    _encode_all(units, cfg, out / "videos")
    return {"out_dir": str(out), "train_videos": cfg.train_videos, "test_videos": 2 * cfg.test_pairs,
            "twin_pairs": cfg.test_pairs, "captions": (cfg.train_videos + 2 * cfg.test_pairs) * cfg.captions_per_video,
            "frames": cfg.frames, "size": cfg.size, "fps": FPS, "seed": cfg.seed}


def main(argv: list[str] | None = None) -> dict:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write the dataset to")
    defaults = SyntheticConfig()
    for name, value in asdict(defaults).items():
        if isinstance(value, bool):
            p.add_argument(f"--{name}", action="store_true", help=FLAG_HELP[name])
        else:
            p.add_argument(f"--{name}", type=type(value), default=value, help=FLAG_HELP[name])
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    del args["debug"]
    summary = make_dataset(SyntheticConfig(**args), out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(cli.run(main))
