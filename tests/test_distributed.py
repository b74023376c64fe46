"""Distributed helpers: single-process no-ops, and a real 2-process gloo group on the CPU."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from models.losses import gather_with_grad as all_gather_with_grad
from utils.distributed import (DistInfo, all_gather_object, barrier, cleanup,
                               gather_eval_features, init_distributed, is_main, shard_indices)

WORLD, BATCH, TOTAL = 2, 3, 7


def global_loss(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a whole (gathered) batch, as the training loss."""
    logits = text @ video.T
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_single_process_is_a_no_op(monkeypatch):
    if dist.is_initialized():
        pytest.skip("another test in this process owns a process group")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert not dist.is_initialized() and is_main()
    x = torch.randn(2, 3, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    barrier()
    cleanup()


def test_gather_eval_features_single_process():
    feats = torch.arange(2.0 * TOTAL).view(TOTAL, 2)
    order = torch.tensor([4, 0, 6, 2, 1, 5, 3, 0])  # shuffled, with one duplicate (sampler padding)
    torch.testing.assert_close(gather_eval_features(feats[order], order, TOTAL), feats)
    with pytest.raises(ValueError, match="no rank"):
        gather_eval_features(feats[:5], torch.arange(5), TOTAL)
    with pytest.raises(ValueError, match="lie in"):
        gather_eval_features(feats, torch.arange(TOTAL) + 1, TOTAL)


@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (2, 4), (0, 2)])
def test_shard_indices_partition(n, world):
    shards = [shard_indices(n, rank, world) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def worker(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    # As torchrun would set them; CUDA hidden so the test also runs on a single-GPU machine.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), CUDA_VISIBLE_DEVICES="")
    info = init_distributed(backend="gloo")
    assert info == DistInfo(rank, WORLD, rank, info.device) and info.is_main == (rank == 0)

    # Same global data on both ranks; each rank encodes its own slice with a shared weight.
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(WORLD * BATCH, 4, generator=gen)
    video = torch.randn(WORLD * BATCH, 5, generator=gen)
    weight = torch.randn(4, 5, generator=gen)
    local_in = inputs[rank * BATCH:(rank + 1) * BATCH].clone().requires_grad_()
    local_w = weight.clone().requires_grad_()
    gathered = all_gather_with_grad(local_in @ local_w)
    torch.testing.assert_close(gathered, inputs @ weight)
    global_loss(gathered, video).backward()

    ref_in, ref_w = inputs.clone().requires_grad_(), weight.clone().requires_grad_()
    global_loss(ref_in @ ref_w, video).backward()
    # The local slice gets the full gradient of the global loss; other slices are constants ...
    torch.testing.assert_close(local_in.grad, ref_in.grad[rank * BATCH:(rank + 1) * BATCH])
    # ... so the ranks' shared-weight gradients sum to the global gradient (DDP's average: that / world).
    dist.all_reduce(local_w.grad)
    torch.testing.assert_close(local_w.grad, ref_w.grad)

    # Uneven shards, contiguous (4 + 3) and strided like a DistributedSampler without padding.
    feats = torch.arange(3.0 * TOTAL).view(TOTAL, 3)
    for idx in (torch.tensor(shard_indices(TOTAL, rank, WORLD)), torch.arange(rank, TOTAL, WORLD)):
        torch.testing.assert_close(gather_eval_features(feats[idx], idx, TOTAL), feats)
    assert all_gather_object(rank) == list(range(WORLD))
    barrier()
    cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo():
    mp.spawn(worker, args=(free_port(),), nprocs=WORLD, join=True)
