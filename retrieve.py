"""Search a folder of videos with text: index it once with a DGL checkpoint, then query it instantly.

    python retrieve.py index --videos DIR [DIR|FILE ...] --checkpoint CKPT --out INDEX [--max_videos N]
    python retrieve.py search --index INDEX "a dog catches a frisbee" ["another query" ...] [--top_k 5] [--json]
    python retrieve.py search --index INDEX --video FILE --captions captions.txt [--top_k 5] [--json]

CKPT is our compact checkpoint or an official ``ckpt.pth.tar``. Running ``index`` again resumes an interrupted
run (finished videos are not re-encoded) and adds new or changed videos. ``search`` rebuilds the model recorded
in the index (or --checkpoint) and refuses any model other than the one the index was built with.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from dataloaders.config import VIDEO_BACKENDS
from dataloaders.video_io import VideoReadError
from apps.retrieval import Retriever
from utils.flags import add_backbone_flags, add_model_flags, model_overrides


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--video_backend", default="auto", choices=VIDEO_BACKENDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode the videos of folders/files into an index folder")
    index.add_argument("--videos", nargs="+", required=True, help="folders (searched recursively) and/or video files")
    index.add_argument("--checkpoint", required=True, help="our compact checkpoint or an official ckpt.pth.tar")
    index.add_argument("--out", required=True, help="index folder (created, or resumed/extended)")
    index.add_argument("--batch_size", type=int, default=16)
    index.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    index.add_argument("--max_videos", type=int, help="encode at most this many videos now; run again for the rest")
    index.add_argument("--retry_failed", action="store_true", help="try again files that failed in an earlier run")
    index.add_argument("--shard_size", type=int, default=256, help="videos per atomically written shard")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(index)
    add_backbone_flags(index, default=None)
    add_model_flags(index, for_checkpoint=True)

    search = commands.add_parser("search", help="rank the indexed videos for text queries (or captions for a video)")
    search.add_argument("--index", required=True)
    search.add_argument("queries", nargs="*", help="text queries, answered together")
    search.add_argument("--top_k", type=int, default=5)
    search.add_argument("--json", action="store_true", help="print JSON instead of tables")
    search.add_argument("--video", help="reverse direction: this video is the query ...")
    search.add_argument("--captions", help="... over the captions in this text file (one per line)")
    search.add_argument("--checkpoint", help="default: the checkpoint recorded in the index (must be the same model)")
    add_backbone_flags(search, default=None)
    search.add_argument("--max_words", type=int, default=32)
    _common(search)
    return parser


def run_index(args: argparse.Namespace) -> None:
    retriever = Retriever.from_checkpoint(
        args.checkpoint, args.pretrained_clip_name, args.pretrained_dir, args.device, model_overrides(vars(args)),
        batch_size=args.batch_size, workers=args.workers, video_backend=args.video_backend,
    )
    report = retriever.index(
        args.videos, args.out, max_videos=args.max_videos, retry_failed=args.retry_failed,
        shard_size=args.shard_size, progress=not args.quiet,
    )
    print(report.summary())
    print(f"index: {Path(args.out).resolve()} (root {retriever.gallery.root})")


def read_captions(path: str) -> tuple[list[str], list[int]]:
    """Non-empty lines and their 1-based line numbers."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    kept = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    if not kept:
        raise ValueError(f"{path}: no captions (one per line)")
    return [c for _, c in kept], [n for n, _ in kept]


def run_search(args: argparse.Namespace) -> None:
    if bool(args.video) != bool(args.captions) or bool(args.video) == bool(args.queries):
        raise ValueError("give text queries, or --video FILE with --captions FILE (not both)")
    retriever = Retriever.from_index(
        args.index, args.checkpoint, args.pretrained_clip_name, args.pretrained_dir, args.device,
        video_backend=args.video_backend, max_words=args.max_words,
    )
    if args.video:
        captions, line_numbers = read_captions(args.captions)
        hits = retriever.rank_captions(args.video, captions, args.top_k)
        rows = [{"rank": r, "line": line_numbers[h.line], "caption": h.caption, "score": h.score, "logit": h.logit}
                for r, h in enumerate(hits, 1)]
        if args.json:
            print(json.dumps({"video": str(Path(args.video).resolve()), "results": rows}, indent=1))
            return
        print(f"{args.video}: {len(rows)} of {len(captions)} captions")
        print(f"{'#':>3} {'cosine':>7} {'logit':>7} {'line':>5}  caption")
        for row in rows:
            print(f"{row['rank']:>3} {row['score']:>7.4f} {row['logit']:>7.2f} {row['line']:>5}  {row['caption']}")
        return
    gallery = retriever.gallery
    results = retriever.search(args.queries, args.top_k)
    if args.json:
        print(json.dumps({"index": str(gallery.folder.resolve()), "videos": len(gallery), "queries": [
            {"query": q, "results": [{"rank": r, "path": h.path, "score": h.score, "logit": h.logit}
                                     for r, h in enumerate(hits, 1)]}
            for q, hits in zip(args.queries, results)]}, indent=1))
        return
    print(f"{gallery.folder}: {len(gallery)} videos under {gallery.root}")
    for query, hits in zip(args.queries, results):
        print(f'\n"{query}"')
        print(f"{'#':>3} {'cosine':>7} {'logit':>7}  video")
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>3} {hit.score:>7.4f} {hit.logit:>7.2f}  {os.path.relpath(hit.path, gallery.root)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        (run_index if args.command == "index" else run_search)(args)
    except (FileNotFoundError, ValueError, VideoReadError) as err:  # user errors: a message, not a traceback
        print(f"retrieve.py {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
