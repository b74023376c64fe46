"""Unordered parallel map for the pre-processing tools (in-process when workers <= 1)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from multiprocessing import Pool
from typing import Any


def parallel_map(function: Callable[[Any], Any], tasks: Sequence, workers: int) -> Iterator:
    """Yields function(task) for every task, in completion order. `function` must be picklable
    (module level) and should catch its own errors so that one failure does not stop the others."""
    if workers <= 1:
        yield from map(function, tasks)
        return
    with Pool(workers) as pool:
        yield from pool.imap_unordered(function, tasks)
