"""Latency of the search page's API, without the demo's 6-minute training: a DGL of the demo's shape with
random weights, indexes of random video features, the real server on an ephemeral port.

    python -m apps.search_latency [--videos 1100] [--big 100000] [--queries 50] [--threads 2] [--shape demo]

Prints the p50/p90 of (a) /api/search over HTTP (text encoding + ranking + JSON) on a demo-sized index and on
the big one, (b) ranking alone (`Retriever.similar`: one row against the gallery + top-k) on the big index, and
(c) the time the server takes at start to measure its low-confidence floor (`apps.search_confidence`).
``--shape vit-b-32`` times a ViT-B/32-sized model instead of the demo's.
Random weights cost what trained ones cost; the results themselves mean nothing.
"""
from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import torch

from apps.retrieval import INDEX_FORMAT, MANIFEST, FileStamp, Retriever, model_identity, write_shard
from apps.search_confidence import score_floor
from apps.search_server import serve_in_thread
from apps.search_service import SearchService
from models.clip import CLIP
from models.dgl import DGL, DGLConfig
from models.factory import create_model
from models.pretrained import CLIPConfig
from utils import cli

# The demo's tiny CLIP (preprocess/pretrain_tiny_clip.py's default recipe) and DGL-Transformer with T = 12.
DEMO_CLIP = CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=3, vision_width=128, vision_heads=2,
                       vision_patch_size=8, grid_size=4, context_length=32, vocab_size=49408, text_width=128,
                       text_heads=2, text_layers=3)
# OpenAI's ViT-B/32 sizes (what models.clip reads from its state dict), for timings at a real model's size.
VIT_B_32 = CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                      vision_patch_size=32, grid_size=7, context_length=77, vocab_size=49408, text_width=512,
                      text_heads=8, text_layers=12)
SHAPES = {"demo": DEMO_CLIP, "vit-b-32": VIT_B_32}
QUERY_WORDS = ["a", "red", "blue", "circle", "square", "moves", "left", "right", "grows", "shrinks", "up", "down"]


@dataclass(frozen=True)
class Percentiles:
    p50_ms: float
    p90_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Percentiles":
        cuts = statistics.quantiles([1000 * s for s in seconds], n=10)
        return cls(round(statistics.median(1000 * s for s in seconds), 2), round(cuts[8], 2))


def random_index(folder: Path, model: DGL, videos: int, seed: int = 0) -> None:
    """An index of ``videos`` random unit features for files that do not exist (they are never opened)."""
    folder.mkdir(parents=True)
    source = {"checkpoint": "random demo-shaped weights"}
    manifest = {"format": INDEX_FORMAT, "root": str(folder / "videos"), "model": model_identity(model),
                "dim": model.clip.config.embed_dim, "source": source}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    features = torch.randn(videos, model.clip.config.embed_dim, generator=torch.Generator().manual_seed(seed))
    write_shard(folder, [(FileStamp(f"video{i}.mp4", 0, 0), f) for i, f in enumerate(features)], [])


def queries(count: int) -> list[str]:
    """Distinct texts of 5-9 words (no query is answered from any cache)."""
    g = torch.Generator().manual_seed(1)
    return [f"{i} " + " ".join(QUERY_WORDS[j] for j in torch.randint(len(QUERY_WORDS), (5 + i % 5,), generator=g))
            for i in range(count)]


def api_latency(retriever: Retriever, texts: list[str], k: int = 12) -> Percentiles:
    """Round trips of /api/search on one keep-alive connection, one after another."""
    server, base = serve_in_thread(SearchService(retriever))
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    seconds = []
    try:
        for text in [texts[0], *texts]:  # the first warms up
            started = time.perf_counter()
            connection.request("GET", f"/api/search?q={quote(text)}&k={k}")
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"{base}: /api/search answered {response.status}: {response.read()!r}")
            response.read()
            seconds.append(time.perf_counter() - started)
    finally:
        connection.close()
        server.shutdown()
        server.server_close()
    return Percentiles.of(seconds[1:])


def ranking_latency(retriever: Retriever, repeats: int, k: int = 12) -> Percentiles:
    """`Retriever.similar`: one gallery row ranked against all rows (matmul + top-k), nothing else."""
    names = [s.rel for s in retriever.gallery.stamps]
    seconds = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        retriever.similar(names[(i * 7919) % len(names)], k)
        seconds.append(time.perf_counter() - started)
    return Percentiles.of(seconds[1:])


def main(argv: list[str] | None = None) -> None:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--videos", type=int, default=1100, help="the demo-sized index")
    p.add_argument("--big", type=int, default=100_000, help="the large index")
    p.add_argument("--queries", type=int, default=50, help="timed queries per index")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--shape", choices=sorted(SHAPES), default="demo", help="the model's sizes (random weights)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = DGLConfig(max_frames=12)
    shape = SHAPES[args.shape]
    model = create_model(config.backbone, CLIP(shape).state_dict(), dgl_config=config,
                         source=f"random {args.shape}-shaped CLIP", backbone_config=shape).model.eval()
    retriever = Retriever(model, "cpu", {"checkpoint": "random demo-shaped weights"}, workers=0)
    texts = queries(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        for videos in (args.videos, args.big):
            random_index(Path(tmp) / f"index{videos}", model, videos)
            retriever.open(Path(tmp) / f"index{videos}")
            print(f"{videos} videos, /api/search over HTTP (k=12): {api_latency(retriever, texts)}")
        print(f"{args.big} videos, ranking alone (k=12): {ranking_latency(retriever, args.queries)}")
        started = time.perf_counter()
        floor = score_floor(retriever)
        print(f"{args.big} videos, low-confidence floor at server start ({len(floor.probes_best)} probes): "
              f"{time.perf_counter() - started:.2f} s")
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
