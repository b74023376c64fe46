"""DGL-BLIP's cross-rank pieces on a real 2-process gloo group on the CPU: the summed-gradient gather ITM's
negatives use, the objective's ITC and queue against one process holding the whole batch, and ITM
re-ranking sharded over the ranks against unsharded."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.blip import load_blip
from models.blip.dgl_video import DGLBlip, DGLBlipConfig
from models.blip.losses import BlipLossConfig, gather_with_summed_grad
from models.blip.objective import DGLBlipObjective
from models.losses import gather_with_grad
from tests.blip_files import VOCAB, Size, write_hf_folder
from tests.test_distributed import free_port
from utils.itm_rerank import itm_rerank

WORLD, BATCH = 2, 3


def per_rank_loss(local: torch.Tensor, everything: torch.Tensor, rank: int) -> torch.Tensor:
    """A loss that differs per rank and reads other ranks' rows (as ITM reads their negatives)."""
    partner = everything.roll(1 + rank, dims=0)[: len(local)]
    return (local * partner).sum() + (everything[rank] ** 2).sum()


def check_summed_gradient_gather(rank: int) -> None:
    gen = torch.Generator().manual_seed(0)
    inputs, weight = torch.randn(WORLD * BATCH, 4, generator=gen), torch.randn(4, 5, generator=gen)
    local_w = weight.clone().requires_grad_()
    local = inputs[rank * BATCH:(rank + 1) * BATCH] @ local_w
    everything = gather_with_summed_grad(local)
    torch.testing.assert_close(everything, inputs @ weight)
    per_rank_loss(local, everything, rank).backward()
    dist.all_reduce(local_w.grad)
    ref_w = weight.clone().requires_grad_()
    rows = inputs @ ref_w
    mean = sum(per_rank_loss(rows[r * BATCH:(r + 1) * BATCH], rows, r) for r in range(WORLD)) / WORLD
    mean.backward()
    torch.testing.assert_close(local_w.grad / WORLD, ref_w.grad)  # DDP's average = the mean loss's gradient


def tiny(folder: str) -> DGLBlip:
    torch.manual_seed(0)
    return DGLBlip(load_blip(folder, temperature=0.07), DGLBlipConfig(global_prompt_length=2))


def check_objective(rank: int, folder: str) -> None:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, len(VOCAB), (WORLD * BATCH, 8), generator=g)
    ids[:, 0] = VOCAB.index("[CLS]")
    mask = torch.ones_like(ids)
    video = torch.randn(WORLD * BATCH, 2, 3, 32, 32, generator=g)
    video_ids = torch.tensor([0, 1, 2, 3, 1, 4])
    config = BlipLossConfig(alpha=0.4, queue_size=12, momentum=0.9)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    sharded = DGLBlipObjective(tiny(folder), config, enc_id=len(VOCAB) + 1,
                               generator=torch.Generator().manual_seed(rank))
    whole = DGLBlipObjective(tiny(folder), BlipLossConfig(alpha=0.4, queue_size=12, momentum=0.9, itm_weight=0),
                             enc_id=len(VOCAB) + 1)
    for step in range(2):  # the second step distils against a queue filled by the first
        losses = sharded(ids[mine], mask[mine], video[mine], video_ids[mine])
        torch.testing.assert_close(gather_with_grad(losses["itc"].detach()[None]),
                                   losses["itc"].detach().repeat(WORLD))  # every rank: the same global ITC
        dist.barrier()
        ref = single_process(whole, ids, mask, video, video_ids)
        torch.testing.assert_close(losses["itc"].detach(), ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(losses["backward"].detach(), WORLD * losses["itc"].detach() + losses["itm"].detach())
    torch.testing.assert_close(sharded.queue.entries()[2], whole.queue.entries()[2])
    torch.testing.assert_close(sharded.queue.entries()[1], whole.queue.entries()[1], atol=1e-6, rtol=0)


def single_process(objective: DGLBlipObjective, *batch) -> torch.Tensor:
    """The objective of one process holding the whole batch (no process group in play)."""
    initialized = dist.is_initialized
    dist.is_initialized = lambda: False  # type: ignore[assignment]
    try:
        return objective(*batch)["itc"].detach()
    finally:
        dist.is_initialized = initialized  # type: ignore[assignment]


def check_sharded_rerank(rank: int) -> None:
    gen = torch.Generator().manual_seed(4)
    sim, table = torch.rand(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    score = lambda t, v: table[t, v]  # noqa: E731
    single = itm_rerank(sim, k=3, score=score)
    sharded = itm_rerank(sim, k=3, score=score, chunk=2, rank=rank, world_size=WORLD, gather=gather_with_grad)
    assert torch.equal(sharded[0], single[0]) and torch.equal(sharded[1], single[1])


def worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        check_summed_gradient_gather(rank)
        check_objective(rank, folder)
        check_sharded_rerank(rank)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo(tmp_path):
    write_hf_folder(tmp_path, Size(32, 2, 2, 8, 32, 32, 2, 4))
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
