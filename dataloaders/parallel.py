"""Unordered parallel map for the pre-processing tools (in-process when workers <= 1)."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from dataloaders.workers import worker_context


def parallel_map(function: Callable[[Any], Any], tasks: Sequence, workers: int) -> Iterator:
    """Yields function(task) for every task, in completion order. `function` must be picklable
    (module level) and should catch its own errors so that one failure does not stop the others.

    Workers start from the fork server (`worker_context`): a forked child of a process that has used
    torch's OpenMP pool hung in its first parallel op (as the benchmark did, building a cache after writing
    random weights). Each runs torch single-threaded: the workers already fill the cores.
    """
    if workers <= 1:
        yield from map(function, tasks)
        return
    if getattr(function, "__module__", None) == "__main__" and not hasattr(sys.modules["__main__"], "__file__"):
        # a worker could not import it, and a pool whose workers cannot read their task waits forever
        raise ValueError(f"parallel_map: {function.__qualname__} is defined in an interactive session or `python -c`; "
                         "define it in a module or a script file")
    with worker_context().Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield from pool.imap_unordered(function, tasks)
