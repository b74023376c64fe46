"""utils/step.py: the gradients the optimiser receives are clipped to --clip_grad_norm, and only then.

AdamW divides each gradient by its own running magnitude, so a skipped clip hardly moves its update; an
optimiser that records the gradients handed to ``step()`` sees the clip directly.
"""
import copy
import math

import pytest
import torch
from torch import nn

from models.losses import create_loss
from utils.step import TrainStep


class RecordingOptimizer(torch.optim.Optimizer):
    """Changes nothing; keeps a copy of the gradients of every ``step()``."""

    def __init__(self, params) -> None:
        super().__init__(params, {})
        self.seen: list[list[torch.Tensor]] = []

    @torch.no_grad()
    def step(self, closure=None) -> None:
        self.seen.append([p.grad.clone() for group in self.param_groups for p in group["params"]])


class TwoTowers(nn.Module):
    """Text and video features from two linear maps, and CLIP's (frozen) temperature."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.text = nn.Linear(6, 4)
        self.video = nn.Linear(6, 4)
        self.clip = nn.Module()
        self.clip.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)), requires_grad=False)

    def forward(self, input_ids: torch.Tensor, video: torch.Tensor):
        return self.text(input_ids), self.video(video)


BATCH = (torch.randn(8, 6, generator=torch.Generator().manual_seed(1)),
         torch.randn(8, 6, generator=torch.Generator().manual_seed(2)))


def unclipped_gradients() -> list[torch.Tensor]:
    """The gradients of the step's loss, by plain autograd."""
    model = TwoTowers()
    text, video = model(*BATCH)
    create_loss("infonce")(text, video, model.clip.logit_scale).backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def total_norm(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))


def run_step(max_norm: float) -> tuple[list[torch.Tensor], float]:
    model = TwoTowers()
    optimizer = RecordingOptimizer([p for p in model.parameters() if p.requires_grad])
    step = TrainStep(model, create_loss("infonce"), optimizer, "fp32", torch.device("cpu"), clip_grad_norm=max_norm)
    _, grad_norm = step(*BATCH)
    assert len(optimizer.seen) == 1
    return optimizer.seen[0], float(grad_norm)


def test_gradients_above_the_limit_reach_the_optimiser_scaled_to_it():
    raw = unclipped_gradients()
    raw_norm = total_norm(raw)
    limit = raw_norm / 4
    seen, reported = run_step(limit)
    assert reported == pytest.approx(raw_norm, rel=1e-5)  # the log shows the norm before clipping
    assert total_norm(seen) == pytest.approx(limit, rel=1e-4)  # a skipped clip would hand over 4x the limit
    for got, want in zip(seen, raw):  # same direction: every tensor scaled by the same factor
        torch.testing.assert_close(got, want * (limit / raw_norm), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("headroom", [4.0, math.inf])
def test_gradients_below_the_limit_reach_the_optimiser_unchanged(headroom):
    raw = unclipped_gradients()
    seen, _ = run_step(total_norm(raw) * headroom)
    for got, want in zip(seen, raw):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def test_a_compiled_forward_is_used_as_given_and_gives_the_same_gradients():
    """``torch.compile``'s wrapper refuses ``bool()`` (it defines ``__len__``): the step must take it as its
    forward, not fall back to the model or fail. The eager backend traces with dynamo without a C++ compiler."""
    model = TwoTowers()
    optimizer = RecordingOptimizer([p for p in model.parameters() if p.requires_grad])
    compiled = torch.compile(model, backend="eager")
    step = TrainStep(model, create_loss("infonce"), optimizer, "fp32", torch.device("cpu"), net=compiled,
                     clip_grad_norm=math.inf)
    assert step.net is compiled
    step(*BATCH)
    for got, want in zip(optimizer.seen[0], unclipped_gradients()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
