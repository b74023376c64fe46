"""The compact reference set is as sharp as the full one: the faults the parity tests exist to catch fail them.

Each fault is applied to our outputs or our model, and the very checks of test_reference_parity.py must
report it: a 1e-3 relative error in one gradient tensor (random sign, and a uniform scale), one swapped
prompt row, and a frame-CLS token taken one position off.
"""
import pytest
import torch

from models.dgl import DGL
from tests.reference import grad_errors
from tests.test_reference_parity import (
    OUTPUT_TYPES, build_reference, gradient_errors, text_errors, training_gradients, video_errors,
)


@pytest.fixture(scope="module", params=("transformer", "linear"))
def reference(request, fixture_dir):
    model, ids, video, expected = build_reference(fixture_dir, request.param)
    loss, grads = training_gradients(model, ids, video)
    assert gradient_errors(grads, expected) == []  # the faults below are the only difference
    return model, ids, video, expected, grads


def largest(grads: dict) -> str:
    return max(grads, key=lambda name: grads[name].numel())


@pytest.mark.parametrize("kind", ["random sign", "uniform"])
def test_relative_error_of_1e3_in_one_gradient_fails(reference, kind):
    *_, expected, grads = reference
    for name in (largest(grads), min(grads, key=lambda n: grads[n].numel())):
        g = grads[name]
        gen = torch.Generator().manual_seed(0)
        sign = torch.randint(0, 2, g.shape, generator=gen) * 2 - 1 if kind == "random sign" else torch.ones_like(g)
        if float(g.abs().max()) > 0:
            assert grad_errors(name, g * (1 + 1e-3 * sign), expected[f"grads/{name}"]), f"{kind} error in {name} passed"


def swap_rows(param: torch.nn.Parameter, i: int, j: int) -> None:
    with torch.no_grad():
        param[[i, j]] = param[[j, i]]


def test_swapped_prompt_row_fails(reference):
    model, ids, video, expected, _ = reference
    table = next(p for name, p in model.prompt_generator.named_parameters() if p.dim() >= 2 and p.shape[-2] > 1)
    rows = table if table.dim() == 2 else table[0]
    swap_rows(rows, 0, 1) if table.dim() == 2 else swap_rows(table.data[0], 0, 1)
    try:
        faults = text_errors(model, ids, expected) + video_errors(model, ids, video, expected, "global_prompt0")
        faults += gradient_errors(training_gradients(model, ids, video)[1], expected)
    finally:
        swap_rows(rows, 0, 1) if table.dim() == 2 else swap_rows(table.data[0], 0, 1)
    assert faults, "a swapped prompt row passed the parity checks"


def test_frame_cls_offset_fails(reference, monkeypatch):
    model, ids, video, expected, _ = reference
    pool = DGL._pool

    def off_by_one(visual, x, num_global, per_frame, output_type):  # every frame token read one position early
        return pool(visual, torch.cat([x[:, :num_global], x[:, num_global - 1 : -1]], dim=1), num_global, per_frame, output_type)

    monkeypatch.setattr(DGL, "_pool", staticmethod(off_by_one))
    faults = [f for t in OUTPUT_TYPES for f in video_errors(model, ids, video, expected, t)]
    assert any("frame_cls" in f or "global-local" in f for f in faults), faults
