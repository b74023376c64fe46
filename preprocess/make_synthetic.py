"""Synthetic temporal video-text benchmark written in the MSR-VTT file layout.

Real MSR-VTT and CLIP weights cannot be fetched here, so this generator makes a small world of one
coloured shape moving on a plain background. The test split is made of *temporal twins*: two videos whose
raw frames are each other's time reversal, with captions that differ only in their temporal words. A model
that ignores frame order cannot tell twins apart, which is what makes the split a test of temporal modelling.

Usage: python preprocess/make_synthetic.py --out DIR [--seed 0] [--train_videos N] [--test_pairs M]
       [--frames F] [--size S] [--captions_per_video K] [--workers W]
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

FPS = 3

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle", "cross")
# Synonyms used in captions; the first word is the canonical name.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
}

# A motion and its time reversal. The first of each pair is the one whose trajectory is drawn; the second
# is drawn as the first played backwards, so twins are exact reversals by construction.
MOTION_PAIRS = (
    ("left_to_right", "right_to_left"),
    ("upward", "downward"),
    ("growing", "shrinking"),
    ("appearing", "disappearing"),
)
REVERSE = {a: b for a, b in MOTION_PAIRS} | {b: a for a, b in MOTION_PAIRS}
MOTIONS = tuple(itertools.chain.from_iterable(MOTION_PAIRS)) + ("static",)

# Phrases are aligned by index across a pair so twin captions differ only in temporal words.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left_to_right": ("moves from left to right", "slides to the right",
                      "travels rightward across the frame", "goes from the left side to the right side"),
    "right_to_left": ("moves from right to left", "slides to the left",
                      "travels leftward across the frame", "goes from the right side to the left side"),
    "upward": ("moves upward", "rises to the top", "goes up", "travels from the bottom to the top"),
    "downward": ("moves downward", "sinks to the bottom", "goes down", "travels from the top to the bottom"),
    "growing": ("grows", "gets bigger", "becomes larger and larger", "grows from small to large"),
    "shrinking": ("shrinks", "gets smaller", "becomes smaller and smaller", "shrinks from large to small"),
    "appearing": ("appears", "fades in", "gradually becomes visible", "emerges from the background"),
    "disappearing": ("disappears", "fades out", "gradually becomes invisible", "vanishes into the background"),
    "static": ("stays still", "does not move", "remains in place", "stands still in the frame"),
}
CAPTION_TEMPLATES = (
    "{a} {colour} {shape} {motion}",
    "the {colour} {shape} {motion}",
    "{a} {colour} {shape} {motion} on {a_bg} {background} background",
    "on {a_bg} {background} background {a} {colour} {shape} {motion}",
    "there is {a} {colour} {shape} that {motion}",
    "a video of {a} {colour} {shape} that {motion}",
)


@dataclass(frozen=True)
class ClipAttrs:
    """What a clip shows; the caption vocabulary is derived from these names."""

    colour: str
    shape: str
    motion: str
    background: str


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


@dataclass
class Track:
    """Per-frame shape geometry in unit coordinates (fractions of the frame side) and opacity."""

    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    alpha: np.ndarray

    def reversed(self) -> "Track":
        return Track(self.cx[::-1], self.cy[::-1], self.r[::-1], self.alpha[::-1])


# ----------------------------------------------------------------------------------------------- drawing
def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Inside-test in coordinates normalised by the shape radius (y points down)."""
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85
    if shape == "triangle":  # apex up, base below; area similar to the circle
        return (dy <= 0.8) & (np.abs(dx) <= (dy + 1.0) / 1.8)
    if shape == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= 0.33) & (ay <= 1.0)) | ((ay <= 0.33) & (ax <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def draw_frames(cx: np.ndarray, cy: np.ndarray, r: np.ndarray, alpha: np.ndarray, shapes: list[str],
                colours: np.ndarray, backgrounds: np.ndarray, size: int) -> np.ndarray:
    """The one renderer: N frames, each one shape on a plain background -> uint8 [N,S,S,3].

    Geometry is in pixels; colours/backgrounds are [N,3]. Videos and stills both go through here so the
    pretraining stills and the benchmark videos look the same.
    """
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - cx[:, None, None]) / r[:, None, None]
    dy = (grid[None, :, None] - cy[:, None, None]) / r[:, None, None]
    mask = np.zeros(dx.shape[:1] + (size, size), dtype=bool)
    shapes_arr = np.asarray(shapes)
    for shape in set(shapes):
        sel = shapes_arr == shape
        mask[sel] = _shape_mask(shape, dx[sel], dy[sel])
    weight = (mask * alpha[:, None, None])[..., None]
    bg = backgrounds[:, None, None, :].astype(np.float32)
    fg = colours[:, None, None, :].astype(np.float32)
    return np.rint(bg + weight * (fg - bg)).astype(np.uint8)


# -------------------------------------------------------------------------------------------- trajectories
def _slide(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear travel along one axis with random size, start and speed, staying inside the frame."""
    r = rng.uniform(0.09, 0.15)
    lo, hi = r, 1.0 - r
    dist = rng.uniform(0.5, 0.9) * (hi - lo)
    start = rng.uniform(lo, hi - dist)
    along = start + dist * t
    across = np.full_like(t, rng.uniform(lo, hi))
    return along, across, r


def _track_left_to_right(rng: np.random.Generator, t: np.ndarray) -> Track:
    x, y, r = _slide(rng, t)
    return Track(x, y, np.full_like(t, r), np.ones_like(t))


def _track_upward(rng: np.random.Generator, t: np.ndarray) -> Track:
    y, x, r = _slide(rng, t)
    return Track(x, 1.0 - y, np.full_like(t, r), np.ones_like(t))


def _track_growing(rng: np.random.Generator, t: np.ndarray) -> Track:
    r0, r1 = rng.uniform(0.04, 0.08), rng.uniform(0.2, 0.3)
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    return Track(np.full_like(t, cx), np.full_like(t, cy), r0 + (r1 - r0) * t, np.ones_like(t))


def _track_appearing(rng: np.random.Generator, t: np.ndarray) -> Track:
    r = rng.uniform(0.09, 0.16)
    cx, cy = rng.uniform(r, 1.0 - r, size=2)
    t0, t1 = rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
    alpha = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return Track(np.full_like(t, cx), np.full_like(t, cy), np.full_like(t, r), alpha)


def _track_static(rng: np.random.Generator, t: np.ndarray) -> Track:
    r = rng.uniform(0.09, 0.16)
    cx, cy = rng.uniform(r, 1.0 - r, size=2)
    return Track(np.full_like(t, cx), np.full_like(t, cy), np.full_like(t, r), np.ones_like(t))


_TRACKS = {
    "left_to_right": _track_left_to_right,
    "upward": _track_upward,
    "growing": _track_growing,
    "appearing": _track_appearing,
    "static": _track_static,
}


def render_clip(attrs: ClipAttrs, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one clip -> uint8 [F,S,S,3]. A reversed motion with the same rng state gives the exact
    time reversal of its forward partner."""
    forward = attrs.motion in _TRACKS
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    track = _TRACKS[attrs.motion if forward else REVERSE[attrs.motion]](rng, t)
    if not forward:
        track = track.reversed()
    return draw_frames(
        track.cx * size, track.cy * size, track.r * size, track.alpha, [attrs.shape] * frames,
        np.tile(COLOURS[attrs.colour], (frames, 1)), np.tile(BACKGROUNDS[attrs.background], (frames, 1)), size,
    )


# ---------------------------------------------------------------------------------------------- captions
def article(word: str) -> str:
    """Indefinite article, so captions read like the human-written MSR-VTT ones ("an orange ...")."""
    return "an" if word[0] in "aeiou" else "a"


def caption_variants(attrs: list[ClipAttrs], k: int, rng: np.random.Generator) -> list[list[str]]:
    """K distinct captions for each clip in `attrs`, sharing template, phrase index and shape word across
    the clips, so a twin pair's captions differ only in the motion phrase."""
    n_phrases = min(len(MOTION_PHRASES[a.motion]) for a in attrs)
    words = SHAPE_WORDS[attrs[0].shape]
    combos = list(itertools.product(range(len(CAPTION_TEMPLATES)), range(n_phrases), range(len(words))))
    picks = rng.choice(len(combos), size=k, replace=False)
    out: list[list[str]] = []
    for a in attrs:
        caps = []
        for ti, pi, wi in (combos[i] for i in picks):
            caps.append(CAPTION_TEMPLATES[ti].format(
                a=article(a.colour), colour=a.colour, shape=words[wi], motion=MOTION_PHRASES[a.motion][pi],
                a_bg=article(a.background), background=a.background))
        out.append(caps)
    return out


# ------------------------------------------------------------------------------------------------ planning
@dataclass
class Unit:
    """One render: a single train video, or a twin pair (second id gets the reversed frames)."""

    video_ids: list[str]
    attrs: list[ClipAttrs]
    captions: list[list[str]]
    render_seed: int
    split: str


def random_attrs(rng: np.random.Generator, motions: tuple[str, ...]) -> ClipAttrs:
    return ClipAttrs(
        colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(SHAPES)),
        motion=str(rng.choice(motions)), background=str(rng.choice(list(BACKGROUNDS))),
    )


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
    """H.264/yuv420p mp4 at 3 fps, byte-reproducible: one encoder thread, and no macroblock-tree rate
    control, whose SIMD path reads uninitialised memory on frames this small (the bytes then depended on
    the process's heap history, i.e. on which pool worker encoded a clip)."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
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
    with tqdm(total=total, desc="videos", unit="vid") as bar:
        if cfg.workers <= 1:
            for job in jobs:
                bar.update(_render_unit(job))
            return
        with multiprocessing.Pool(cfg.workers) as pool:
            for n in pool.imap_unordered(_render_unit, jobs, chunksize=8):
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    defaults = SyntheticConfig()
    for name, value in asdict(defaults).items():
        if isinstance(value, bool):
            p.add_argument(f"--{name}", action="store_true")
        else:
            p.add_argument(f"--{name}", type=type(value), default=value)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    summary = make_dataset(SyntheticConfig(**args), out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
