"""A stopped rank ends a 2-process gloo run within --dist_timeout, with an error naming that rank."""
import os
import signal
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.distributed import StuckRankError, cleanup, init_distributed, report_stuck_ranks

TIMEOUT_MIN = 2 / 60  # 2 s


def worker(rank: int, port: int, report: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), CUDA_VISIBLE_DEVICES="")
    init_distributed(timeout_minutes=TIMEOUT_MIN)
    if rank == 1:
        os.kill(os.getpid(), signal.SIGSTOP)  # as `kill -STOP` from outside: alive, connected, silent
    start = time.monotonic()
    try:
        with report_stuck_ranks(TIMEOUT_MIN):
            dist.all_reduce(torch.ones(3))
    except StuckRankError as err:
        with open(report, "w") as f:
            f.write(f"{time.monotonic() - start:.1f}\n{err}")
    cleanup()


def test_stopped_rank_is_named_instead_of_hanging(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = tmp_path / "rank0.txt"
    context = mp.start_processes(worker, args=(port, str(report)), nprocs=2, join=False, start_method="spawn")
    rank0, rank1 = context.processes
    rank0.join(timeout=60)
    for process in (rank0, rank1):
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join()
    seconds, message = report.read_text().split("\n", 1)
    assert float(seconds) < 10  # 2 s timeout + 2 s check, not a hang
    assert message.startswith("rank 0: a collective waited more than --dist_timeout 0.0333333 min; ")
    assert "Ranks 1 failed to pass monitoredBarrier" in message
