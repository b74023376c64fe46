"""The training step never reads device values on the host except every --n_display steps.

A read (``.item()``, ``float()``, ``.tolist()``, ...) of a CUDA tensor makes the host wait for the GPU. On
this CPU machine every tensor is a host tensor, so the test counts the reads that would wait on a GPU: reads,
from the project's own code, of floating-point tensors (what the model and the optimiser compute) or of
tensors on another device. Integer CPU tensors (token ids, video indices from the loader) are host data.
"""
import sys
from pathlib import Path

import pytest
import torch

from models.clip import CLIP
from models.dgl import DGL, DGLConfig
from tests.tiny_runs import TINY, train_flags
from utils.config import build_config
from utils.step import TrainStep
from utils.run import run
from utils.step_monitor import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]
READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__format__")


def count_host_reads(monkeypatch) -> list[tuple[int, str]]:
    """Patches the read methods of Tensor; returns the list the reads are appended to as (step, caller)."""
    reads, step = [], [0]
    real_step = TrainStep.__call__

    def counting_step(self, *args):
        step[0] += 1
        return real_step(self, *args)

    monkeypatch.setattr(TrainStep, "__call__", counting_step)
    for name in READS:
        real = getattr(torch.Tensor, name)

        def patched(self, *args, _real=real, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            project = (caller.startswith(str(ROOT)) and not caller.startswith(str(ROOT / "tests"))
                       and "site-packages" not in caller)  # the project's code, not a .venv inside the checkout
            if project and (self.is_floating_point() or self.device.type != "cpu"):
                reads.append((step[0], f"{_name} in {Path(caller).relative_to(ROOT)}:{sys._getframe(1).f_lineno}"))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    return reads


def test_training_reads_the_host_only_at_display_steps(workspace, monkeypatch):
    reads = count_host_reads(monkeypatch)
    # 16 videos x 2 captions / batch 8 = 4 steps per epoch; 2 epochs; display at steps 1, 3, 6 (and the epoch ends).
    run(build_config(train_flags(workspace, "host_reads", "--n_display", "3", "--max_steps", "7")))
    monitor = [step for step, what in reads if "step_monitor.py" in what]
    assert monitor == [1, 3, 4, 6, 7], reads  # one read each: displays 1, 3, 6; the epoch end after 4; the stop at 7
    others = {(step, what.split(":")[0]) for step, what in reads if "step_monitor.py" not in what}
    # Before step 1 only the backbone's fingerprint, taken when the model is built (models/backbone.py).
    assert all(" in models/backbone.py" in what for step, what in others if step == 0), others
    saving = {(step, what) for step, what in others if step > 0}
    assert {step for step, _ in saving} <= {4, 7}, others  # saving checkpoint_latest.pt copies weights to the host
    assert all(" in models/checkpoint" in what for _, what in saving), others  # checkpoint.py, checkpoint_file.py


def test_a_non_finite_loss_stops_training_at_the_next_read(workspace, monkeypatch):
    real, calls = TrainStep.__call__, [0]

    def nan_at_step_2(self, ids, video, *batch):
        calls[0] += 1
        loss, grad_norm = real(self, ids, video, *batch)
        return (loss * float("nan") if calls[0] == 2 else loss), grad_norm

    monkeypatch.setattr(TrainStep, "__call__", nan_at_step_2)
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 2 .*batch videos: \['"):
        run(build_config(train_flags(workspace, "nan", "--n_display", "3", "--max_steps", "5")))
    assert not (workspace / "nan" / "checkpoint_latest.pt").exists()


def test_text_encoding_on_a_device_never_reads_it():
    """On the meta device (no data at all) any read raises: encode_text must take the ids as given."""
    torch.manual_seed(0)
    model = DGL(CLIP(TINY), DGLConfig(max_frames=2, prompt_layers=2))
    ids = torch.zeros(3, 16, dtype=torch.long)
    ids[:, 0], ids[:, 1:5], ids[0, 5], ids[1:, 3] = 49406, 100, 49407, 49407
    trimmed = ids[:, :6]  # up to the batch's last EOT, as the loaders cut it
    with torch.no_grad():
        expected = model.encode_text(ids)  # on the CPU the model trims itself
        assert torch.allclose(model.encode_text(trimmed), expected, atol=1e-6)
        on_meta = model.to("meta").encode_text(trimmed.to("meta"))
    assert on_meta.shape == expected.shape
