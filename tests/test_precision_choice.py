"""``--precision amp`` picks bf16 only where the GPU's tensor cores run it (compute capability 8.0 on); on a V100 or
T4 it is fp16 with a loss scaler, although ``torch.cuda.is_bf16_supported()`` says yes there (emulation)."""
import pytest
import torch

from utils.step import amp_precision, resolve_precision


@pytest.mark.parametrize("capability, precision", [((6, 1), "fp16"), ((7, 0), "fp16"), ((7, 5), "fp16"),
                                                   ((8, 0), "bf16"), ((8, 6), "bf16"), ((9, 0), "bf16")])
def test_amp_by_compute_capability(capability, precision):
    assert amp_precision(capability) == precision


@pytest.mark.parametrize("name, capability, precision", [("Tesla V100", (7, 0), "fp16"), ("Tesla T4", (7, 5), "fp16"),
                                                         ("A100", (8, 0), "bf16"), ("H100", (9, 0), "bf16")])
def test_resolve_precision_on_a_described_gpu(monkeypatch, name, capability, precision):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on all four
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("amp", torch.device("cuda", 0)) == precision
    assert resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"
    assert resolve_precision("amp", torch.device("cpu")) == "fp32"
