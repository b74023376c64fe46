"""Re-encode videos to a low frame rate and a fixed short side, as the DGL/CLIP4Clip recipe expects.

    python preprocess/compress_video.py --input_root RAW --output_root OUT [--workers 8]   # or python -m ...

Every video under RAW becomes OUT/<same sub-folders>/<same name>: H.264 (libx264, yuv420p) at
--fps (3) with the short side scaled to --short_side (224), aspect ratio kept, both sides even,
video stream only. Names whose container cannot hold H.264 get ".mp4" appended (xxx.webm ->
xxx.webm.mp4; the DiDeMo loader matches that). Each output is written to a temporary file and renamed,
inputs are only read. Failures are listed with their error and the exit status is 1.

The settings each output was made with are appended to OUT/.compress_video.jsonl. A rerun skips the
outputs made with its own settings; outputs made with other ones (outputs without a record are read
for their short side and frame rate) are refused, naming them and their settings, unless --redo is
given: then they are encoded again. A rerun with other settings used to keep the old sizes silently.

Fixes over the official script: portrait videos keep their aspect ratio (the reference scaled
their width to 224 and squashed the height), sub-folders are mirrored (no name collisions),
failures are reported instead of ignored, and no ffmpeg executable is needed (PyAV's FFmpeg).
As the ffmpeg command line does, a display rotation (phone videos) is applied to the pixels, so the
output is upright and carries no rotation (mirror flags, which phones do not write, are not applied).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter
from tqdm import tqdm

if __package__ in (None, ""):  # run by path (python preprocess/X.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.parallel import parallel_map  # noqa: E402
from dataloaders.video_io import VIDEO_EXTENSIONS, check_complete  # noqa: E402
from utils.progress import progress as progress_bar  # noqa: E402
from utils import cli  # noqa: E402

H264_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv", ".avi")  # keep these names as they are
DEFAULT_FPS = 3  # the DGL/CLIP4Clip recipe; preprocess/check_dataset.py counts videos above these
DEFAULT_SHORT_SIDE = 224
MANIFEST = ".compress_video.jsonl"  # in --output_root: one {"output", "fps", "short_side"} record per encode
SHOWN = 5  # outputs listed in a refusal


# Filters that turn a frame upright, by its display rotation in counter-clockwise quarter turns.
UPRIGHT_FILTERS: dict[int, tuple[tuple[str, str | None], ...]] = {
    0: (),
    1: (("transpose", "cclock"),),
    2: (("hflip", None), ("vflip", None)),
    3: (("transpose", "clock"),),
}


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Settings:
    """What an output was made with."""

    fps: int
    short_side: int

    def __str__(self) -> str:
        return f"--fps {self.fps} --short_side {self.short_side}"


def read_manifest(output_root: Path) -> dict[str, Settings]:
    """Settings by output path (relative to output_root) from the manifest; the last record of a path wins."""
    path = output_root / MANIFEST
    if not path.is_file():
        return {}
    made = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            made[record["output"]] = Settings(int(record["fps"]), int(record["short_side"]))
        except (ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"{path} line {number} is not a settings record ({err!r}); fix or delete that line") from err
    return made


def record_settings(output_root: Path, target: Path, settings: Settings) -> None:
    with (output_root / MANIFEST).open("a", encoding="utf-8") as f:
        f.write(json.dumps({"output": target.relative_to(output_root).as_posix(), "fps": settings.fps,
                            "short_side": settings.short_side}) + "\n")


def probed_settings(target: Path) -> Settings | None:
    """The short side and (rounded) frame rate of an output without a record (written by an older version)."""
    try:
        with av.open(str(target)) as container:
            stream = container.streams.video[0]
            return Settings(round(float(stream.average_rate)), min(stream.width, stream.height))
    except (av.FFmpegError, IndexError, TypeError, ZeroDivisionError):
        return None


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side = short_side and the long side scaled and rounded
    down to an even number (yuv420p needs even sizes)."""
    if width >= height:
        return max(2, 2 * int(short_side * width / height / 2)), short_side
    return short_side, max(2, 2 * int(short_side * height / width / 2))


def target_path(source: Path, input_root: Path, output_root: Path) -> Path:
    target = output_root / source.relative_to(input_root)
    if source.suffix.lower() not in H264_CONTAINERS:
        target = target.with_name(target.name + ".mp4")
    return target


def plan_jobs(input_root: Path, output_root: Path, extensions: Collection[str] = VIDEO_EXTENSIONS) -> list[Job]:
    """One job per video file under input_root (sorted), mirrored under output_root."""
    sources = sorted(p for p in input_root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    jobs = [Job(source, target_path(source, input_root, output_root)) for source in sources]
    targets: dict[Path, Path] = {}
    for job in jobs:
        if job.target in targets:
            raise SystemExit(f"{targets[job.target]} and {job.source} would both be written to {job.target}; rename one.")
        targets[job.target] = job.source
    return jobs


def _frame_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream):
    """Decoded frames with usable timestamps: AVI and timestamp-less streams get pts = i / rate."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    synthesize = "avi" in container.format.name.split(",")
    for index, frame in enumerate(container.decode(stream)):
        if synthesize or frame.pts is None:
            frame.pts = round(index / (rate * stream.time_base))
        yield frame


def compress(source: Path, target: Path, fps: int, short_side: int) -> None:
    """Writes target from source (temporary file, then rename); a truncated source is refused, not
    compressed into a short output that later looks whole."""
    check_complete(source)
    temp = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(source)) as inp, av.open(str(temp), "w") as out:
            if not inp.streams.video:
                raise ValueError("no video stream")
            stream = inp.streams.video[0]
            frames = _frame_times(inp, stream)
            first = next(frames, None)
            if first is None:
                raise ValueError("no frame could be decoded")
            quarter_turns = round(first.rotation / 90) % 4
            coded = (stream.codec_context.width, stream.codec_context.height)
            width, height = output_size(*(coded[::-1] if quarter_turns % 2 else coded), short_side)
            encoder = out.add_stream("libx264", rate=fps)
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            if target.suffix.lower() == ".avi":
                encoder.codec_context.max_b_frames = 0  # AVI cannot carry B-frame timestamps
            graph = av.filter.Graph()
            graph.link_nodes(
                graph.add_buffer(template=stream),
                *(graph.add(name, args) for name, args in UPRIGHT_FILTERS[quarter_turns]),
                graph.add("fps", str(fps)),
                graph.add("scale", f"{width}:{height}:flags=bicubic"),
                graph.add("format", "yuv420p"),
                graph.add("buffersink"),
            ).configure()
            count = 0
            for frame in itertools.chain([first], frames, [None]):  # None flushes
                graph.push(frame)
                while True:
                    try:
                        scaled = graph.pull()
                    except (av.BlockingIOError, av.EOFError):
                        break
                    scaled.pts, scaled.time_base = count, Fraction(1, fps)
                    out.mux(encoder.encode(scaled))
                    count += 1
            if count == 0:
                raise ValueError("no frame came out of the filters")
            out.mux(encoder.encode())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(output_root: Path) -> list[Path]:
    """Deletes ``.NAME.partial-PID.EXT`` files of compressions whose process is gone (killed runs); the
    partial files of a live process (a concurrent run) are left alone."""
    removed = []
    for path in sorted(output_root.rglob(".*.partial-*")):
        pid = path.name.rsplit(".partial-", 1)[1].split(".", 1)[0]
        if pid.isdigit() and path.is_file() and not pid_alive(int(pid)):
            path.unlink()
            removed.append(path)
    return removed


def _run(args: tuple[Job, int, int]) -> tuple[Job, str | None]:
    job, fps, short_side = args
    try:
        compress(job.source, job.target, fps, short_side)
    except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the others
        return job, f"{type(err).__name__}: {err}"
    return job, None


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_root", type=Path, required=True, help="folder of the original videos (searched recursively)")
    parser.add_argument("--output_root", type=Path, required=True, help="folder for the compressed copies (same sub-folders)")
    parser.add_argument("--workers", "--num_works", dest="workers", type=int, default=os.cpu_count() or 1,
                        help="parallel encodes (--num_works: the official script's name)")
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS, help="frame rate of the copies")
    parser.add_argument("--short_side", type=int, default=DEFAULT_SHORT_SIDE, help="pixels of the shorter side (even)")
    parser.add_argument("--redo", action="store_true",
                        help="encode again the outputs that were made with other --fps/--short_side (default: refuse)")
    args = parser.parse_args(argv)
    input_root, output_root = args.input_root.resolve(), args.output_root.resolve()
    if not input_root.is_dir():
        parser.error(f"--input_root {input_root} is not a folder")
    if output_root == input_root or input_root in output_root.parents:
        parser.error("--output_root must lie outside --input_root (outputs would be re-read as inputs)")
    if args.short_side % 2 or args.short_side < 2 or args.fps < 1:
        parser.error("--short_side must be even and >= 2, --fps >= 1")

    if output_root.is_dir():
        for path in remove_stale_partials(output_root):
            print(f"removed {path}, left by an interrupted compression", file=sys.stderr)
    jobs = plan_jobs(input_root, output_root)
    wanted = Settings(args.fps, args.short_side)
    recorded = read_manifest(output_root)
    todo = [job for job in jobs if not job.target.exists()]
    other = []  # (job, settings it was made with, None: unreadable)
    for job in jobs:
        if job.target.exists():
            made = recorded.get(job.target.relative_to(output_root).as_posix()) or probed_settings(job.target)
            if made != wanted:
                other.append((job, made))
    if other and not args.redo:
        examples = "\n  ".join(f"{job.target}: {made or 'unreadable'}" for job, made in other[:SHOWN])
        print(f"{len(other)} outputs under {output_root} were made with other settings than {wanted}, e.g.\n  {examples}\n"
              "Fix: pass another --output_root, the settings they were made with, or --redo to encode them again.",
              file=sys.stderr)
        return 2
    done = len(jobs) - len(todo) - len(other)
    todo += [job for job, _ in other]
    print(f"{len(jobs)} videos under {input_root}: {done} already done with {wanted}, {len(other)} made with other "
          f"settings to encode again, {len(todo) - len(other)} to compress", file=sys.stderr)
    tasks = [(job, args.fps, args.short_side) for job in todo]
    failures = []
    with progress_bar(total=len(tasks), unit="video") as progress:
        for job, error in parallel_map(_run, tasks, args.workers):
            if error is not None:
                failures.append((job, error))
                tqdm.write(f"FAILED {job.source}: {error}", file=sys.stderr)
            else:
                record_settings(output_root, job.target, wanted)
            progress.update()
    if failures:
        print(f"{len(failures)} of {len(todo)} videos failed:", file=sys.stderr)
        for job, error in failures:
            print(f"  {job.source}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
