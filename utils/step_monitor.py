"""Training signals kept on the device between log lines, so that a step never waits for the host.

Reading a CUDA tensor (``.item()``, ``float()``, ``.tolist()``) blocks the host until the GPU has
finished everything queued, which empties the queue the data loader and the next step's launches
fill. The trainer therefore adds each step's loss and gradient norm here (device operations only)
and reads them, in one transfer, every ``n_display`` steps and before saving or evaluating. A
non-finite loss is remembered on the device with its step and raises at that read, naming the
videos of its batch: up to ``n_display - 1`` steps later than a per-step check would, and before
anything is saved.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class NonFiniteLossError(RuntimeError):
    pass


@dataclass(frozen=True)
class WindowStats:
    steps: int  # optimiser steps since the previous read
    mean_loss: float
    last_loss: float
    grad_norm: float  # of the last step, before clipping


class StepMonitor:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.last_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=self.device)
        self.first_bad_step = torch.full((), -1, dtype=torch.float64, device=self.device)
        self.batch_videos: dict[int, torch.Tensor] = {}  # step -> video indices (CPU) of its batch

    def add(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, video_index: torch.Tensor) -> None:
        """Records one step without reading any device value."""
        loss = loss.detach().to(torch.float64)
        bad = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, float(step), self.first_bad_step)
        self.loss_sum += loss
        self.last_loss = loss
        self.grad_norm = grad_norm.detach().to(torch.float64)
        self.steps += 1
        self.batch_videos[step] = video_index

    def read(self, video_ids: list[str], epoch: int) -> WindowStats | None:
        """One host read of the window since the last call (None when empty); raises NonFiniteLossError."""
        if self.steps == 0:
            return None
        values = torch.stack([self.loss_sum, self.last_loss, self.grad_norm, self.first_bad_step]).tolist()
        loss_sum, last_loss, grad_norm, bad_step = values
        if bad_step >= 0:
            names = [video_ids[i] for i in self.batch_videos[int(bad_step)].tolist()]
            raise NonFiniteLossError(
                f"loss is not finite at step {int(bad_step)} (epoch {epoch}; noticed at the next log read, "
                f"{self.steps} steps after the previous one); batch videos: {names}"
            )
        stats = WindowStats(self.steps, loss_sum / self.steps, last_loss, grad_norm)
        self._reset()
        return stats
