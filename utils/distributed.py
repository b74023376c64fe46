"""torch.distributed helpers that also work, as no-ops, in a plain single process (spec §4.5, §7 bugs 14, 20-21, 28).

Launch with ``torchrun``: the process group is read from its environment variables (``env://``).
"""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_MONITOR_GROUP = None  # a gloo group kept apart from the training collectives, to find stuck ranks
_REPORT_GROUP = None  # another, for the early report's thread (a group serves one thread's collectives in order)
_RANK_PROCESSES: list[tuple[str, int, int]] = []  # (host, pid namespace, pid) of every rank, to end stuck local ones
MONITOR_WAIT_S = 60.0
# After a collective timed out, the other ranks get this share of --dist_timeout to answer the check that names
# the stuck ones. They entered the same collective within a step of each other, so they time out close together;
# the check used to wait a whole --dist_timeout (up to 60 s) more.
MONITOR_WAIT_SHARE = 0.1
# NCCL's watchdog ends every process --dist_timeout after a collective began, before Python sees an error: there
# the report is made earlier, by a thread, once this rank's main thread has made no progress for this share of it;
# the other ranks then get EARLY_WAIT_SHARE to join it, so that it ends before the watchdog.
EARLY_REPORT_SHARE = 0.7
EARLY_WAIT_SHARE = 0.2
_PROGRESS = {"phase": "starting", "since": time.monotonic()}


class StuckRankError(RuntimeError):
    """A collective waited longer than ``--dist_timeout``: another rank is stuck, stopped or gone."""


@dataclass(frozen=True)
class LaunchEnv:
    """Who started this process: ``torchrun`` (its RANK/WORLD_SIZE/LOCAL_RANK), ``slurm`` (``srun`` with several
    tasks: SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID) or ``none`` (one process)."""

    launcher: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: str | None = None


DEFAULT_MASTER_PORT = "29500"


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,09],cpu1`` -> ``gpu03``, ``r[1-2]-n[7,9]`` -> ``r1-n7``."""
    first, depth = [], 0
    for char in nodelist.strip():
        if char == "," and depth == 0:
            break
        depth += (char == "[") - (char == "]")
        first.append(char)
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], "".join(first))


def launch_env(environ: Mapping[str, str]) -> LaunchEnv:
    """The launcher's variables; torchrun's win (``srun torchrun ...`` runs one torchrun per node). Under ``srun``
    (SLURM_STEP_ID set: a job step, not the batch script itself) the master is MASTER_ADDR if given, else the
    step's first node; MASTER_PORT defaults to 29500."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return LaunchEnv("torchrun", int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)),
                         environ.get("MASTER_ADDR"), environ.get("MASTER_PORT"))
    if "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", 1)) > 1:
        nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
        master = environ.get("MASTER_ADDR") or (first_host(nodes) if nodes else None)
        if master is None:
            raise SystemExit("srun started several tasks but neither MASTER_ADDR nor SLURM_NODELIST is set: "
                             "export MASTER_ADDR=<first node's host name>")
        return LaunchEnv("slurm", int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"]),
                         int(environ.get("SLURM_LOCALID", 0)), master, environ.get("MASTER_PORT", DEFAULT_MASTER_PORT))
    return LaunchEnv("none")


def device_ordinal(local_rank: int, visible: int) -> int:
    """The CUDA device of a process with ``local_rank`` among ``visible`` GPUs: its local rank, or 0 where the
    launcher made one GPU visible per process (``srun --gpus-per-task=1`` sets CUDA_VISIBLE_DEVICES per task)."""
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise SystemExit(
        f"local rank {local_rank} needs GPU {local_rank}, but {visible} GPUs are visible "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): start at most {visible} "
        "processes per node (GPUS / --nproc_per_node)"
    )


def init_distributed(backend: str | None = None, timeout_minutes: float = 10.0) -> DistInfo:
    """Join the process group of torchrun or srun (nccl on CUDA, gloo on CPU) and bind this rank's CUDA device.

    A collective that waits more than ``timeout_minutes`` raises instead of hanging (see
    `report_stuck_ranks`): on gloo (CPU) the error names the ranks that do not answer. NCCL runs collectives
    asynchronously and its watchdog thread ends the process after the same timeout before Python sees an error,
    so there a thread logs the report earlier (`_EarlyReporter`). Without a launcher's variables this is a single
    process: world 1, no process group, and every helper below degrades to a no-op.
    """
    env = launch_env(os.environ)
    if env.launcher == "slurm":  # as torchrun would have set them, for env:// and for any library that reads them
        os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank),
                          MASTER_ADDR=env.master_addr, MASTER_PORT=env.master_port)
    if torch.cuda.is_available():
        device = torch.device("cuda", device_ordinal(env.local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if env.launcher != "none" and not dist.is_initialized():
        timeout = timedelta(minutes=timeout_minutes)
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"), init_method="env://", timeout=timeout)
        global _MONITOR_GROUP
        _MONITOR_GROUP = dist.new_group(backend="gloo", timeout=timeout)
        global _REPORT_GROUP
        _REPORT_GROUP = dist.new_group(backend="gloo", timeout=timeout)
        _RANK_PROCESSES[:] = [None] * dist.get_world_size()
        dist.all_gather_object(_RANK_PROCESSES, _process_identity(), group=_MONITOR_GROUP)
    return DistInfo(get_rank(), get_world_size(), env.local_rank, device)


def _process_identity() -> tuple[str, int, int]:
    """(host name, PID namespace, pid): a pid names this process only where the first two are the same (containers
    on one host may share its name but not its PIDs). The namespace is -1 where /proc has none (not Linux)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = -1
    return socket.gethostname(), namespace, os.getpid()


def _stuck_ranks(wait_s: float) -> str:
    """Which ranks do not answer (gloo's monitored barrier names them), as one line."""
    try:
        dist.monitored_barrier(group=_MONITOR_GROUP, timeout=timedelta(seconds=wait_s), wait_all_ranks=True)
    except RuntimeError as err:
        return str(err).strip().splitlines()[-1]
    return "every rank answered a check afterwards (the slow rank recovered)"


def end_stuck_local_ranks(monitor_line: str) -> str:
    """Kills the ranks named in gloo's ``Ranks 1, 3 failed to pass monitoredBarrier`` line that run on this host,
    so that the run ends now (torchrun gives a stopped process 30 s to answer SIGTERM before it kills it); returns
    what it did, or ""."""
    named = re.search(r"Ranks? ([\d, ]+) failed", monitor_line)
    if not named or not _RANK_PROCESSES:
        return ""
    host, namespace, own_pid = _process_identity()
    killed = []
    for rank in (int(r) for r in named.group(1).replace(",", " ").split()):
        if rank >= len(_RANK_PROCESSES):
            continue
        rank_host, rank_namespace, pid = _RANK_PROCESSES[rank]
        if (rank_host, rank_namespace) == (host, namespace) and pid != own_pid:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(f"rank {rank} (pid {pid})")
            except ProcessLookupError:
                pass
    return f"killed the stuck {', '.join(killed)} on this host so that the run ends now" if killed else ""


def note_progress(phase: str) -> None:
    """Records what this rank's main thread starts doing now ("training step 12"): the early report names it."""
    _PROGRESS.update(phase=phase, since=time.monotonic())


def _early_report(wait_s: float) -> str:
    """One line: the ranks that do not answer within ``wait_s`` (a stopped or dead process), else every rank's
    phase and for how long it has been in it (the one in another phase than the rest is the stuck one)."""
    try:
        dist.monitored_barrier(group=_REPORT_GROUP, timeout=timedelta(seconds=wait_s), wait_all_ranks=True)
    except RuntimeError as err:
        return str(err).strip().splitlines()[-1]
    phases: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(phases, (_PROGRESS["phase"], time.monotonic() - _PROGRESS["since"]), group=_REPORT_GROUP)
    return "; ".join(f"rank {rank}: {phase} for {seconds:.0f} s" for rank, (phase, seconds) in enumerate(phases))


class _EarlyReporter(threading.Thread):
    """Logs the stuck-rank report from a thread when the main thread has made no progress (`note_progress`) for
    EARLY_REPORT_SHARE of --dist_timeout: on NCCL the main thread never sees the timeout before the watchdog ends
    the process. Reports once per stall."""

    def __init__(self, timeout_s: float):
        super().__init__(name="dgl-stuck-rank-report", daemon=True)
        self.timeout_s, self.done = timeout_s, threading.Event()

    def run(self) -> None:
        reported = None
        while not self.done.wait(min(1.0, self.timeout_s / 20)):
            since = _PROGRESS["since"]
            if since == reported or time.monotonic() - since < EARLY_REPORT_SHARE * self.timeout_s:
                continue
            reported = since
            try:
                line = _early_report(EARLY_WAIT_SHARE * self.timeout_s)
            except RuntimeError as err:  # the group itself failed: say so, the watchdog ends the run anyway
                line = f"the check failed: {str(err).strip().splitlines()[-1]}"
            logger.error("rank %d: no progress for %.0f s of --dist_timeout %.0f s; %s", get_rank(),
                         time.monotonic() - since, self.timeout_s, line)


@contextmanager
def report_stuck_ranks(timeout_minutes: float, early: bool | None = None) -> Iterator[None]:
    """Turns a collective's timeout into a `StuckRankError` naming the ranks that do not answer. ``early`` (default:
    on NCCL) also starts `_EarlyReporter`, whose log line comes before NCCL's watchdog ends the process."""
    if early is None:
        early = dist.is_initialized() and dist.get_backend() == "nccl"
    reporter = _EarlyReporter(timeout_minutes * 60) if early and dist.is_initialized() else None
    if reporter is not None:
        reporter.start()
    try:
        yield
    except RuntimeError as err:
        timed_out = isinstance(err, dist.DistBackendError) or "timed out" in str(err).lower()
        if not (timed_out and dist.is_initialized()):
            raise
        stuck = _stuck_ranks(min(MONITOR_WAIT_S, MONITOR_WAIT_SHARE * timeout_minutes * 60))
        message = (
            f"rank {get_rank()}: a collective waited more than --dist_timeout {timeout_minutes:g} min; {stuck}. "
            "Fix: see why that rank stopped (its log, memory, a debugger); raise --dist_timeout for very slow steps."
        )
        logger.error(message)  # before any kill: the launcher then ends this process too, maybe before it reports
        killed = end_stuck_local_ranks(stuck)
        if killed:
            logger.error(killed)
        raise StuckRankError(message) from err
    finally:
        if reporter is not None:
            reporter.done.set()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> list[Any]:
    """Picklable ``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _all_gather_uneven(x: Tensor) -> Tensor:
    """Concatenate tensors whose first dimension differs between ranks (pad to the largest, then trim).

    The trailing dimensions come from the ranks that hold rows: a rank with none (an evaluation shard smaller
    than the world) may pass any empty tensor of the same number of dimensions, e.g. ``empty(0, 0)``.
    """
    world = get_world_size()
    if world == 1:
        return x
    shape = torch.tensor(x.shape, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    sizes_list = [int(s[0]) for s in shapes]
    trailing = {tuple(int(d) for d in s[1:]) for s, n in zip(shapes, sizes_list) if n}
    if len(trailing) > 1:
        raise ValueError(f"ranks hold rows of different shapes {sorted(trailing)}; they cannot be concatenated")
    rest = trailing.pop() if trailing else tuple(x.shape[1:])
    padded = x.new_zeros((max(sizes_list), *rest))
    if len(x):
        padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes_list)])


@torch.no_grad()
def gather_eval_features(local_feats: Tensor, local_indices: Tensor, total: int) -> Tensor:
    """Reassemble the full [total, ...] feature matrix, in dataset index order, on every rank.

    Each rank encodes any subset of the dataset (shards may differ in size) and passes the features with
    their global indices. Every index in ``[0, total)`` must be covered; an index seen twice (e.g. the
    padding of a ``DistributedSampler``) is written once, so items are never duplicated or dropped.
    """
    feats = _all_gather_uneven(local_feats)
    indices = _all_gather_uneven(local_indices.to(device=local_feats.device, dtype=torch.long))
    if indices.numel() and (indices.min() < 0 or indices.max() >= total):
        raise ValueError(f"feature indices must lie in [0, {total})")
    covered = torch.zeros(total, dtype=torch.bool, device=indices.device)
    covered[indices] = True
    if not covered.all():
        raise ValueError("some items were encoded by no rank; evaluation would silently drop them")
    out = feats.new_empty((total, *feats.shape[1:]))
    out[indices] = feats
    return out


def shard_indices(n: int, rank: int, world: int) -> range:
    """Contiguous evaluation shard of ``range(n)`` for ``rank``; sizes differ by at most one, none repeats."""
    return range(rank * n // world, (rank + 1) * n // world)
