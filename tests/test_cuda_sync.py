"""On a GPU, the trainer's step (forward, loss, backward, clipping, AdamW, StepMonitor) never synchronises.

``torch.cuda.set_sync_debug_mode("error")`` makes every host-device synchronisation (``.item()``, a
device-to-host copy, a copy from pageable memory, ``nonzero`` ...) raise. Skipped without CUDA (run by
``bash scripts/gpu_check.sh``); DGL_TEST_DEVICE=cpu runs the same steps on the CPU, without the check,
to test the test code itself.
"""
import math
import os

import pytest
import torch

from dataloaders import collate_trimmed
from tests.test_dgl import random_ids, tiny_model
from models.losses import create_loss
from utils.optim import build_optimizer, param_groups
from utils.step import TrainStep
from utils.step_monitor import StepMonitor

DEVICE = os.environ.get("DGL_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


def trainer_step(model, device: torch.device, precision: str) -> TrainStep:
    """The trainer's step (utils/step.py) with its optimizer, without data, logging or checkpoints."""
    return TrainStep(model, create_loss(), build_optimizer(param_groups(model, 1e-4, 1.0, 0.2), 1e-4), precision, device)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_steps_do_not_synchronise(precision):
    device = torch.device(DEVICE)
    train_step = trainer_step(tiny_model().to(device).train(), device, precision)
    gen = torch.Generator().manual_seed(0)
    items = [{"input_ids": ids, "video": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)}
             for ids in random_ids(4, length=24)]
    batch = collate_trimmed(items)
    if device.type == "cuda":
        batch = {key: value.pin_memory() for key, value in batch.items()}  # as the trainer's DataLoader does

    def step(number: int, monitor: StepMonitor) -> None:
        ids = batch["input_ids"].to(device, non_blocking=True)
        video = batch["video"].to(device, non_blocking=True)
        loss, grad_norm = train_step(ids, video)
        monitor.add(number, loss, grad_norm, torch.arange(4))

    monitor = StepMonitor(device)
    step(1, monitor)  # first step: kernels load, AdamW creates its state
    monitor.read(["v"] * 4, 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for number in range(2, 6):
            step(number, monitor)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    stats = monitor.read(["v"] * 4, 1)
    assert stats.steps == 4 and math.isfinite(stats.mean_loss) and stats.grad_norm > 0
