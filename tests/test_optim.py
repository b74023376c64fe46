"""Optimiser groups (official naming rule, trainable only) and the warm-up + cosine schedule (spec §4.2-4.3)."""
import pytest
import torch
from torch import nn

from utils.optim import WarmupCosine, build_optimizer, param_groups


class TinyVisual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 2, bias=False)
        self.ln_post = nn.LayerNorm(4)
        self.prompt_embeddings = nn.Parameter(torch.zeros(2, 4))


class TinyClip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = TinyVisual()
        self.ln_final = nn.LayerNorm(4)
        self.prompt_proj = nn.Linear(4, 4)
        self.PromptTransformer = nn.ModuleDict({"ln_1": nn.LayerNorm(4)})


class TinyModel(nn.Module):
    def __init__(self, freeze_clip: bool) -> None:
        super().__init__()
        self.clip = TinyClip()
        for name, param in self.named_parameters():
            if freeze_clip and name in BACKBONE:
                param.requires_grad_(False)


BACKBONE = {"clip.visual.conv1.weight", "clip.visual.ln_post.weight", "clip.visual.ln_post.bias",
            "clip.ln_final.weight", "clip.ln_final.bias"}


def names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_frozen_backbone_never_enters_the_optimizer():
    model = TinyModel(freeze_clip=True)
    groups = param_groups(model, lr=2e-3, coef_lr=1e-3, weight_decay=0.2)
    assert [g["name"] for g in groups] == ["new_decay", "new_no_decay"]
    # Parity with the official rule: LayerNorm gains and prompt embeddings are decayed, only biases exempt.
    assert names(model, groups[0]) == {"clip.visual.prompt_embeddings", "clip.prompt_proj.weight",
                                       "clip.PromptTransformer.ln_1.weight"}
    assert names(model, groups[1]) == {"clip.prompt_proj.bias", "clip.PromptTransformer.ln_1.bias"}
    assert [(g["lr"], g["lr_mult"], g["weight_decay"]) for g in groups] == [(2e-3, 1.0, 0.2), (2e-3, 1.0, 0.0)]


def test_trainable_backbone_gets_coef_lr():
    model = TinyModel(freeze_clip=False)
    groups = {g["name"]: g for g in param_groups(model, lr=2e-3, coef_lr=1e-3, weight_decay=0.2)}
    assert list(groups) == ["clip_decay", "clip_no_decay", "new_decay", "new_no_decay"]
    assert names(model, groups["clip_decay"]) == {"clip.visual.conv1.weight", "clip.visual.ln_post.weight",
                                                  "clip.ln_final.weight"}
    assert names(model, groups["clip_no_decay"]) == {"clip.visual.ln_post.bias", "clip.ln_final.bias"}
    assert groups["clip_decay"]["lr_mult"] == 1e-3 and groups["clip_decay"]["lr"] == pytest.approx(2e-6)
    assert groups["clip_no_decay"]["weight_decay"] == 0.0
    optimizer = build_optimizer(list(groups.values()), lr=2e-3)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def make_scheduler(total_steps: float = 351 * 5) -> WarmupCosine:
    model = TinyModel(freeze_clip=False)
    optimizer = build_optimizer(param_groups(model, lr=2e-3, coef_lr=1e-3, weight_decay=0.2), lr=2e-3)
    return WarmupCosine(optimizer, base_lr=2e-3, total_steps=total_steps)


def test_schedule_check_values():
    scheduler = make_scheduler()  # MSR-VTT: 351 steps/epoch x 5 epochs, warm-up 175.5 steps
    expected = {0: 1e-8, 100: 1.14e-3, 176: 2e-3, 500: 1.80e-3, 1000: 9.31e-4, 1500: 1.26e-4, 1754: 1e-8}
    for step, lr in expected.items():
        assert f"{scheduler.lr_at(step):.2e}" == f"{lr:.2e}", step


def test_step_sets_group_lrs_from_step_zero():
    scheduler = make_scheduler()
    assert scheduler.step() == 1e-8
    lr = scheduler.step()
    assert lr == pytest.approx(1e-8 + (2e-3 - 1e-8) / 175.5)
    assert [g["lr"] for g in scheduler.optimizer.param_groups] == pytest.approx([lr * 1e-3, lr * 1e-3, lr, lr])


def test_resume_is_exact():
    running = make_scheduler()
    for _ in range(300):
        running.step()
    resumed = make_scheduler(total_steps=1.0)  # wrong config on purpose: the state restores it
    resumed.load_state_dict(running.state_dict())
    assert [resumed.step() for _ in range(50)] == [running.step() for _ in range(50)]
    assert resumed.optimizer.param_groups[2]["lr"] == running.optimizer.param_groups[2]["lr"]
