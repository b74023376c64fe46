"""Unordered parallel map for the pre-processing tools (in-process when workers <= 1)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from multiprocessing import Pool
from typing import Any

import torch


def parallel_map(function: Callable[[Any], Any], tasks: Sequence, workers: int) -> Iterator:
    """Yields function(task) for every task, in completion order. `function` must be picklable
    (module level) and should catch its own errors so that one failure does not stop the others.

    Each worker runs torch single-threaded: the workers already fill the cores, and a forked child of a
    process that has used torch's OpenMP pool hangs in its first parallel op (as the benchmark did, building
    a cache after writing random weights) unless it stays on one thread.
    """
    if workers <= 1:
        yield from map(function, tasks)
        return
    with Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield from pool.imap_unordered(function, tasks)
