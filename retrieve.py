"""Search a folder of videos with text: index it once with a DGL checkpoint, then query it instantly.

    python retrieve.py index --videos DIR [DIR|FILE ...] --checkpoint CKPT --out INDEX [--max_videos N]
                             [--video_list LIST]   # only the listed videos, e.g. a test split's CSV
    python retrieve.py search --index INDEX "a dog catches a frisbee" ["another query" ...] [--top_k 5] [--json]
                              [--itm_rerank K]   # a DGL-BLIP index: ITM re-scores each query's top K
    python retrieve.py search --index INDEX --video FILE --captions captions.txt [--top_k 5] [--json]
    python retrieve.py serve --index INDEX [--checkpoint CKPT] [--host 127.0.0.1] [--port 8000]

CKPT is our compact checkpoint or an official ``ckpt.pth.tar``. Running ``index`` again resumes an interrupted
run (finished videos are not re-encoded) and adds new or changed videos. ``search`` rebuilds the model recorded
in the index (or --checkpoint) and refuses any model other than the one the index was built with; ``serve``
does the same once, then answers queries from a web page (and a JSON API) until stopped.
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
from apps.itm_search import check_itm_rerank, ranking_label
from apps.retrieval import Retriever
from apps.search_server import make_server
from apps.search_service import SearchService, ServiceConfig
from apps.video_index import add_captions, find_videos, read_manifest
from apps.video_list import VideoList
from utils import cli
from utils.cli import ArgumentParser, require_path
from utils.flags import add_backbone_flags, add_model_flags, model_overrides


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs")
    p.add_argument("--video_backend", default="auto", choices=VIDEO_BACKENDS,
                   help="video decoder; auto: the first installed that reads the file")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode the videos of folders/files into an index folder")
    index.add_argument("--videos", nargs="+", required=True, help="folders (searched recursively) and/or video files")
    index.add_argument("--checkpoint", required=True, help="our compact checkpoint or an official ckpt.pth.tar")
    index.add_argument("--out", required=True, help="index folder (created, or resumed/extended)")
    index.add_argument("--video_list", help="index only the videos this file names: one id (file stem) per line, "
                       "or a CSV with a video_id column, e.g. MSRVTT_JSFUSION_test.csv (its sentence column is kept "
                       "as the videos' captions, the search page's examples)")
    index.add_argument("--batch_size", type=int, default=16, help="videos encoded at once")
    index.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    index.add_argument("--max_videos", type=int, help="encode at most this many videos now; run again for the rest")
    index.add_argument("--retry_failed", action="store_true", help="try again files that failed in an earlier run")
    index.add_argument("--shard_size", type=int, default=256, help="videos per atomically written shard")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(index)
    add_backbone_flags(index, default=None)
    add_model_flags(index, for_checkpoint=True)

    search = commands.add_parser("search", help="rank the indexed videos for text queries (or captions for a video)")
    search.add_argument("--index", required=True, help="index folder made by `retrieve.py index`")
    search.add_argument("queries", nargs="*", help="text queries, answered together")
    search.add_argument("--top_k", type=int, default=5, help="results per query")
    search.add_argument("--json", action="store_true", help="print JSON instead of tables")
    search.add_argument("--video", help="reverse direction: this video is the query ...")
    search.add_argument("--captions", help="... over the captions in this text file (one per line)")
    _index_model(search)

    serve = commands.add_parser("serve", help="a search page (and JSON API) over an index, in the browser")
    serve.add_argument("--index", required=True, help="index folder made by `retrieve.py index`")
    serve.add_argument("--host", default="127.0.0.1", help="default: this machine only")
    serve.add_argument("--port", type=int, default=8000, help="0: any free port")
    _index_model(serve)
    return parser


def _index_model(p: argparse.ArgumentParser) -> None:
    """Options of the commands that rebuild an index's model."""
    p.add_argument("--checkpoint", help="default: the checkpoint recorded in the index (must be the same model)")
    add_backbone_flags(p, default=None, choose=False)  # the backbone is the recorded checkpoint's
    p.add_argument("--max_words", type=int, default=32, help="query tokens kept (longer queries are cut)")
    p.add_argument("--itm_rerank", type=int, metavar="K",
                   help="an index of a --model dgl_blip checkpoint: re-score each text query's top K videos with the "
                        "ITM head (their tokens recomputed from the files), as main.py --itm_rerank evaluates; "
                        "default: the ITC ranking alone")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding processes for --itm_rerank's videos")
    p.add_argument("--batch_size", type=int, default=16, help="videos encoded at once for --itm_rerank")
    _common(p)


def open_index(args: argparse.Namespace) -> Retriever:
    require_path("--index", args.index, "pass the folder `retrieve.py index --out` wrote")
    if args.checkpoint is not None:
        require_path("--checkpoint", args.checkpoint, "pass the checkpoint the index was built with, or leave it out")
    if args.itm_rerank is not None:  # refused before the model loads
        check_itm_rerank(args.itm_rerank, read_manifest(args.index)["model"]["dgl_config"].get("model", "dgl"))
    return Retriever.from_index(
        args.index, args.checkpoint, args.pretrained_clip_name, args.pretrained_dir, args.device,
        video_backend=args.video_backend, max_words=args.max_words, workers=args.workers, batch_size=args.batch_size,
    )


def run_index(args: argparse.Namespace) -> None:
    require_path("--checkpoint", args.checkpoint, "pass a DGL checkpoint (ours, or an official ckpt.pth.tar)")
    for folder in args.videos:
        require_path("--videos", folder, "pass folders or video files that exist")
    videos, listed = args.videos, None
    if args.video_list:  # checked before the model loads
        listed = VideoList.read(args.video_list)
        videos = listed.select(find_videos(args.videos), " ".join(args.videos))
    retriever = Retriever.from_checkpoint(
        args.checkpoint, args.pretrained_clip_name, args.pretrained_dir, args.device, model_overrides(vars(args)),
        batch_size=args.batch_size, workers=args.workers, video_backend=args.video_backend,
    )
    report = retriever.index(
        videos, args.out, max_videos=args.max_videos, retry_failed=args.retry_failed,
        shard_size=args.shard_size, progress=not args.quiet,
    )
    if listed and listed.captions:
        root = retriever.gallery.root
        add_captions(args.out, {path.relative_to(root).as_posix(): listed.captions[path.stem]
                                for path in videos if path.stem in listed.captions})
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
    if args.video and args.itm_rerank is not None:
        raise ValueError("--itm_rerank re-ranks the videos of text queries: drop it with --video")
    if args.video:
        require_path("--video", args.video, "pass the video to find captions for")
        require_path("--captions", args.captions, "pass a text file with one caption per line")
    retriever = open_index(args)
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
    gallery, rerank = retriever.gallery, args.itm_rerank or 0
    results = retriever.search(args.queries, args.top_k, itm_rerank=rerank)
    ranking = ranking_label(retriever.model.config, rerank)
    if args.json:
        print(json.dumps({"index": str(gallery.folder.resolve()), "videos": len(gallery), "ranking": ranking, "queries": [
            {"query": q, "results": [{"rank": r, "path": h.path, "score": h.score, "logit": h.logit, "rerank": h.rerank}
                                     for r, h in enumerate(hits, 1)]}
            for q, hits in zip(args.queries, results)]}, indent=1))
        return
    print(f"{gallery.folder}: {len(gallery)} videos under {gallery.root}; ranking: {ranking}")
    for query, hits in zip(args.queries, results):
        print(f'\n"{query}"')
        print(f"{'#':>3} {'cosine':>7} {'logit':>7}{' re-rank' if rerank else ''}  video")
        for rank, hit in enumerate(hits, 1):
            rescored = "" if not rerank else f" {'-':>7}" if hit.rerank is None else f" {hit.rerank:>7.3f}"
            print(f"{rank:>3} {hit.score:>7.4f} {hit.logit:>7.2f}{rescored}  {os.path.relpath(hit.path, gallery.root)}")


def run_serve(args: argparse.Namespace) -> None:
    # the model loads once; another model's index is refused here
    service = SearchService(open_index(args), ServiceConfig(itm_rerank=args.itm_rerank or 0))
    try:
        server = make_server(service, args.host, args.port)
    except OSError as err:
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({err}); pick another --port") from None
    host, port = server.server_address[:2]
    print(f"{len(service.gallery)} videos from {service.gallery.folder}: search them at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def run(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    {"index": run_index, "search": run_search, "serve": run_serve}[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """The exit code: user errors are one line and 2 (utils/cli.py)."""
    return cli.run(run, argv, prog="retrieve.py")


if __name__ == "__main__":
    sys.exit(main())
