"""Evaluation on more ranks than items: a rank with an empty shard takes part in the gathers and every rank gets
every item's feature (it used to hang: the empty rank gathered ``(1, 0)`` against the others' ``(1, E)``)."""
import os
import socket
import time

import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from utils.distributed import cleanup, init_distributed
from utils.evaluation import _encode

WORLD, WIDTH, DEADLINE_S = 2, 5, 120


class Items(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.full((3,), float(index)), "index": index}


def encode(x: torch.Tensor) -> torch.Tensor:
    return x.sum(-1, keepdim=True) + torch.arange(WIDTH)


def worker(rank: int, port: int, n: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), CUDA_VISIBLE_DEVICES="")
    init_distributed(backend="gloo", timeout_minutes=1)
    feats = _encode(Items(n), encode, "x", "index", batch_size=4, workers=0, device="cpu", desc="items")
    expected = torch.stack([encode(torch.full((3,), float(i))) for i in range(n)])
    torch.testing.assert_close(feats, expected)
    cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_with_deadline(n: int) -> None:
    """Spawn the ranks; a hang fails the test after ``DEADLINE_S`` (the processes are ended) instead of hanging CI."""
    context = mp.start_processes(worker, args=(free_port(), n), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, f"evaluation of {n} item(s) on {WORLD} ranks hung"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def test_one_item_on_two_ranks():
    run_with_deadline(1)


def test_uneven_shards_on_two_ranks():
    run_with_deadline(3)
