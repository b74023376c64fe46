"""On a GPU, the trainer's step (forward, loss, backward, clipping, AdamW, StepMonitor) never synchronises.

``torch.cuda.set_sync_debug_mode("error")`` makes every host-device synchronisation (``.item()``, a
device-to-host copy, a copy from pageable memory, ``nonzero`` ...) raise. Covered: fp32, bf16 and fp16 with its
GradScaler (fused AdamW takes the scaler's inf check on the device), gradient caching (2 chunks), activation
checkpointing, and 2 ranks under DDP with NCCL (needs 2 GPUs). Skipped without CUDA (run by
``bash scripts/gpu_check.sh``); DGL_TEST_DEVICE=cpu runs the one-process steps on the CPU, without the check, to
test the test code itself.
"""
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from dataloaders import collate_trimmed
from tests.test_dgl import random_ids, tiny_model
from models.losses import create_loss
from utils.distributed import cleanup, init_distributed
from utils.optim import build_optimizer, param_groups
from utils.step import TrainStep
from utils.step_monitor import StepMonitor
from utils.trainer import wrap_ddp

DEVICE = os.environ.get("DGL_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
BATCH = 4


def trainer_step(model, device: torch.device, precision: str, chunks: int = 1, net=None, world: int = 1) -> TrainStep:
    """The trainer's step (utils/step.py) with its optimizer, without data, logging or checkpoints."""
    return TrainStep(model, create_loss(), build_optimizer(param_groups(model, 1e-4, 1.0, 0.2), 1e-4), precision, device,
                     chunks, net=net, world_size=world)


def run_steps(device: torch.device, precision: str, chunks: int = 1, checkpointing: bool = False,
              world: int = 1, seed: int = 0) -> None:
    """Five steps, the last four with synchronisation forbidden; under DDP when a process group exists."""
    model = tiny_model().to(device).train()
    model.set_grad_checkpointing(checkpointing)
    net = wrap_ddp(model, device) if world > 1 else None
    train_step = trainer_step(model, device, precision, chunks, net, world)
    gen = torch.Generator().manual_seed(seed)
    items = [{"input_ids": ids, "input_mask": (torch.arange(len(ids)) <= ids.argmax()).long(),  # SOT..EOT, as tokenized
              "video": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)}
             for ids in random_ids(BATCH, length=24, seed=seed)]
    batch = collate_trimmed(items)
    if device.type == "cuda":
        batch = {key: value.pin_memory() for key, value in batch.items()}  # as the trainer's DataLoader does

    def step(number: int, monitor: StepMonitor) -> None:
        ids = batch["input_ids"].to(device, non_blocking=True)
        video = batch["video"].to(device, non_blocking=True)
        loss, grad_norm = train_step(ids, video)
        monitor.add(number, loss, grad_norm, torch.arange(BATCH))

    monitor = StepMonitor(device)
    step(1, monitor)  # first step: kernels load, AdamW creates its state, DDP builds its buckets
    monitor.read(["v"] * BATCH, 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for number in range(2, 6):
            step(number, monitor)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    stats = monitor.read(["v"] * BATCH, 1)
    assert stats.steps == 4 and math.isfinite(stats.mean_loss) and stats.grad_norm > 0
    if precision == "fp16":
        assert train_step.scaler.is_enabled() and train_step.scaler.get_scale() > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_steps_do_not_synchronise(precision):
    run_steps(torch.device(DEVICE), precision)


@pytest.mark.parametrize("precision, chunks, checkpointing", [("bf16", 2, False), ("fp16", 2, False),
                                                              ("bf16", 1, True), ("fp16", 2, True)])
def test_chunked_and_checkpointed_steps_do_not_synchronise(precision, chunks, checkpointing):
    run_steps(torch.device(DEVICE), precision, chunks, checkpointing)


def _nccl_worker(rank: int, port: int, precision: str, chunks: int, checkpointing: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    info = init_distributed(backend="nccl")
    try:
        run_steps(info.device, precision, chunks, checkpointing, world=2, seed=rank)
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason=f"2 ranks on NCCL need 2 CUDA devices; {torch.cuda.device_count()} visible")
@pytest.mark.parametrize("precision, chunks, checkpointing", [("bf16", 1, False), ("fp16", 2, True)])
def test_two_ranks_on_nccl_do_not_synchronise(precision, chunks, checkpointing):
    mp.spawn(_nccl_worker, args=(_free_port(), precision, chunks, checkpointing), nprocs=2, join=True)
