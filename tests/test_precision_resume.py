"""A resume under another --precision than the checkpoint's is carried out and said: an fp16 resume of a bf16 or
fp32 checkpoint used to load the empty scaler state into fp16's enabled scaler and crash."""
import pytest
import torch

from utils.trainer import restore_scaler


def fp16_scaler() -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", init_scale=2.0**16)


def trained_fp16_scaler() -> dict:
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    scaler.scale(torch.ones((), requires_grad=True)).backward()  # lazy state exists once used
    return scaler.state_dict()


@pytest.mark.parametrize("saved", ["bf16", "fp32", None])  # None: an older checkpoint (no "precision" entry)
def test_fp16_resume_of_a_checkpoint_without_scaler(saved):
    ckpt = {"scaler": {}, **({"precision": saved} if saved else {})}
    scaler = fp16_scaler()
    note = restore_scaler(scaler, ckpt, "fp16")
    assert note and "continued in fp16" in note and "fresh loss scaler" in note and "65536" in note
    assert scaler.get_scale() == 2.0**16


def test_fp16_to_fp16_keeps_the_scale():
    scaler = fp16_scaler()
    assert restore_scaler(scaler, {"scaler": trained_fp16_scaler(), "precision": "fp16"}, "fp16") is None
    assert scaler.get_scale() == 8.0
    scaler = fp16_scaler()  # an older checkpoint: its scaler state says fp16
    assert restore_scaler(scaler, {"scaler": trained_fp16_scaler()}, "fp16") is None and scaler.get_scale() == 8.0


def test_fp16_checkpoint_resumed_in_bf16_drops_the_scaler():
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    note = restore_scaler(disabled, {"scaler": trained_fp16_scaler(), "precision": "fp16"}, "bf16")
    assert "trained in fp16, continued in bf16" in note and "dropped" in note


def test_bf16_to_fp32_is_said_and_same_precision_is_silent():
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert "trained in bf16, continued in fp32" in restore_scaler(disabled, {"scaler": {}, "precision": "bf16"}, "fp32")
    assert restore_scaler(disabled, {"scaler": {}, "precision": "bf16"}, "bf16") is None
    assert restore_scaler(disabled, {"scaler": {}}, "fp32") is None  # older checkpoint, no scaler: not fp16
