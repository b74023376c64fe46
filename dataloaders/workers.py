"""How worker processes start (DataLoader workers, the pre-processing and indexing pools): never by
forking the parent.

A fork copies a process that may hold threads (torch's OpenMP pool after any parallel op, PyAV's threads)
but not the threads themselves, so a lock one of them held stays locked in the child: the pre-processing
pool hung in its first OpenMP region, and PyAV 19 deadlocked in forked DataLoader workers. A fork server
is a clean single-threaded process started once that imports the heavy modules (`PRELOAD`) and forks each
worker from itself, so a worker starts in a fraction of a second; `spawn` (a fresh interpreter per worker)
is the fallback where fork servers do not exist (Windows).
"""
from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext
from typing import Any

from torch.utils.data import DataLoader, Dataset

# Imported once by the fork server, so that workers inherit them instead of importing them each
# (together about 3 s on a busy 2-core machine); one that is not installed is skipped. "__main__" (the
# running script, Python's default) lets workers use its functions without importing it again. The only
# thread they start is OpenBLAS's pool (numpy), which shuts itself down around a fork.
PRELOAD = ["__main__", "torch", "av", "dataloaders.datasets"]


def worker_context() -> BaseContext:
    """The start method of every worker process of the project: a fork server where the platform has one
    (Linux, macOS), else spawn. Whatever is sent to a worker (datasets, collate functions, mapped
    functions) must therefore pickle: module-level functions and classes, no lambdas."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)  # no effect once the server runs; same list every time
        return context
    return multiprocessing.get_context("spawn")


def worker_loader(dataset: Dataset, num_workers: int, **options: Any) -> DataLoader:
    """A DataLoader whose workers, if any, start by `worker_context` (torch refuses a start method
    without workers)."""
    context = worker_context() if num_workers > 0 else None
    return DataLoader(dataset, num_workers=num_workers, multiprocessing_context=context, **options)
