"""What starting worker processes costs, by start method: the seconds a DataLoader waits for its first
batch beyond the batch's own work (paid once per epoch by a non-persistent training loader and twice per
evaluation: captions, then videos), and the seconds to start a pre-processing pool.

    python -m apps.bench.worker_start [--workers 2] [--repeats 5]

Each measurement runs in a fresh interpreter that has imported the project and run a multi-threaded
torch op, as training has; the minimum over the repeats is reported (other load on the machine only adds).
The dataset sent to the workers is a real `TrainPairDataset` (its split and tokenizer are what pickles).
"""
from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

from dataloaders.config import DataConfig
from dataloaders.datasets import TrainPairDataset
from dataloaders.splits import VideoTextSplit

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("fork", "forkserver", "spawn")


class CaptionsOnly(TrainPairDataset):
    """A training dataset whose items need no video files: only its pickling and the workers' start
    are measured."""

    def __getitem__(self, index: int) -> dict:
        ids, _ = self.tokenizer(self.split.captions[index], self.max_words)
        return {"input_ids": ids[0]}


def _dataset(videos: int = 1000) -> CaptionsOnly:
    """Over a split of `videos` placeholder files with 20 captions each (MSR-VTT's training size)."""
    split = VideoTextSplit(
        name="timing/train", video_ids=[f"video{i}" for i in range(videos)],
        video_paths=[Path(f"video{i}.mp4") for i in range(videos)], windows=None,
        captions=[f"a person is doing thing number {i} in a room" for i in range(videos * 20)],
        caption_video=[i // 20 for i in range(videos * 20)], multi_sentence=False,
    )
    return CaptionsOnly(split, DataConfig())


def _one_run(method: str, workers: int) -> dict:
    """In this process: seconds to the first batch of three successive epochs, and a pool's start."""
    import torch
    from torch.utils.data import DataLoader

    from dataloaders.workers import worker_context

    torch.set_num_threads(2)
    torch.ones(512, 512) @ torch.ones(512, 512)  # the parent holds an OpenMP pool, as after a training step
    context = worker_context() if method == "forkserver" else __import__("multiprocessing").get_context(method)
    dataset = _dataset()
    start = time.perf_counter()
    blob = pickle.dumps(dataset)
    pickle_s = time.perf_counter() - start
    in_process = iter(DataLoader(dataset, batch_size=8))
    next(in_process)  # warms the tokenizer's caches
    start = time.perf_counter()
    next(in_process)
    batch_s = time.perf_counter() - start
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, multiprocessing_context=context)
    epochs = []
    for _ in range(3):
        start = time.perf_counter()
        it = iter(loader)
        next(it)
        epochs.append(time.perf_counter() - start - batch_s)
        del it
    start = time.perf_counter()
    with context.Pool(workers) as pool:
        pool.map(abs, range(workers))
    pool_s = time.perf_counter() - start
    return {"pickle_mb": len(blob) / 2**20, "pickle_s": pickle_s, "first_epoch_s": epochs[0],
            "later_epoch_s": min(epochs[1:]), "pool_s": pool_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_one_run(args.child, args.workers)))
        return 0
    print(f"{args.workers} workers; minimum of {args.repeats} fresh processes; seconds beyond the batch's own work")
    print(f"{'method':<11} {'1st epoch':>9} {'later epoch':>11} {'per worker':>10} {'pool start':>10} {'pickle':>13}")
    for method in METHODS:
        runs = [json.loads(subprocess.run(
            [sys.executable, "-m", "apps.bench.worker_start", "--child", method, "--workers", str(args.workers)],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout) for _ in range(args.repeats)]
        best = {key: min(run[key] for run in runs) for key in runs[0]}
        print(f"{method:<11} {best['first_epoch_s']:>9.3f} {best['later_epoch_s']:>11.3f} "
              f"{best['later_epoch_s'] / args.workers:>10.3f} {best['pool_s']:>10.3f} "
              f"{best['pickle_mb']:>5.1f} MB {best['pickle_s']:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
