"""AdamW parameter groups and the per-step warm-up + cosine learning-rate schedule (spec §4.2-4.3)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# Name substrings of the DGL-added modules, both latent-space variants (spec §1.9). CLIP's own parameter
# names contain none of them.
NEW_MODULES = (
    "PromptTransformer", "unified_prompt_mlp", "unified_prompt_embedding", "prompt_proj", "prompt_embeddings",
    "visual_prompt_embedding", "prefix_text_prompt_proj_layer", "postfix_text_prompt_proj_layer",
)


def is_backbone(name: str, backbone_prefix: str = "clip.", new_modules: Sequence[str] = NEW_MODULES) -> bool:
    """Official rule: a CLIP parameter lives under ``clip.`` and is not one of the DGL additions."""
    return backbone_prefix in name and not any(m in name for m in new_modules)


def non_finite_optimizer_state(saved: dict[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module) -> list[str]:
    """Names of the non-finite (NaN or inf) entries of a saved optimiser state, e.g. ``exp_avg_sq of
    prompts.text`` or ``lr of group new_decay``: saved ids are matched to ``model``'s parameter names through
    ``optimizer``'s groups, in order, as ``Optimizer.load_state_dict`` matches them."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    param_name = {}
    for saved_group, group in zip(saved["param_groups"], optimizer.param_groups):
        param_name.update({i: name_of.get(id(p), f"parameter {i}") for i, p in zip(saved_group["params"], group["params"])})
    bad = []
    for i, entries in saved["state"].items():
        for key, value in entries.items():
            finite = torch.isfinite(value).all() if torch.is_tensor(value) else math.isfinite(value)
            if not finite:
                bad.append(f"{key} of {param_name.get(i, f'parameter {i}')}")
    for number, group in enumerate(saved["param_groups"]):
        for key, value in group.items():
            if isinstance(value, float) and not math.isfinite(value):
                bad.append(f"{key} of group {group.get('name', number)}")
    return bad


def param_groups(model: nn.Module, lr: float, coef_lr: float, weight_decay: float,
                 backbone_prefix: str = "clip.", new_modules: Sequence[str] = NEW_MODULES) -> list[dict[str, Any]]:
    """The official four groups (backbone/new x decay/no-decay), over trainable parameters only.

    Frozen parameters never enter the optimiser (no state, no checkpoint bloat). Trainable backbone
    parameters (only with freeze_clip=0) get ``lr * coef_lr``. For parity with the official code only
    names containing ``bias`` are exempt from weight decay: its ``LayerNorm.*`` exemptions match no CLIP
    name (``ln_*``), so LayerNorm gains and prompt embeddings ARE decayed (spec §7 bug 24, kept on purpose).
    Each group carries ``lr_mult`` for the scheduler; empty groups are dropped.
    """
    # (backbone, decay) in the official group order.
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (True, True): [], (True, False): [], (False, True): [], (False, False): []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            buckets[(is_backbone(name, backbone_prefix, new_modules), "bias" not in name)].append(param)
    groups = []
    for (backbone, decay), params in buckets.items():
        if params:
            lr_mult = coef_lr if backbone else 1.0
            groups.append({
                "name": f"{'clip' if backbone else 'new'}_{'decay' if decay else 'no_decay'}",
                "params": params,
                "lr": lr * lr_mult,
                "lr_mult": lr_mult,
                "weight_decay": weight_decay if decay else 0.0,
            })
    return groups


def model_param_groups(model: nn.Module, lr: float, coef_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """The model's own groups where it defines them (DGL-BLIP: BLIP's, every parameter decayed), else the
    official four of `param_groups`."""
    own = getattr(model, "param_groups", None)
    return own(lr, coef_lr, weight_decay) if own is not None else param_groups(model, lr, coef_lr, weight_decay)


def build_optimizer(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.98),
                    eps: float = 1e-6) -> torch.optim.AdamW:
    """AdamW with the official betas/eps; the fused kernel when every parameter is on CUDA."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


class WarmupCosine:
    """Linear warm-up from ``floor`` then cosine decay to ``floor``, set per optimiser step (spec §4.3).

    Call :meth:`step` once at the start of every optimiser step (before ``optimizer.step()``): the first
    call applies step 0, i.e. lr = ``floor``. Each group gets ``lr(s) * group['lr_mult']``.
    ``total_steps`` may be fractional, as in the official code ((len(loader) + gas - 1) / gas * epochs).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: float,
                 warmup_fraction: float = 0.1, floor: float = 1e-8) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.warmup_steps = warmup_fraction * total_steps
        self.floor = floor
        self.step_num = 0

    def lr_at(self, step: int) -> float:
        """Base learning rate (multiplier 1) at optimiser step ``step``."""
        # Strict "<" equals the official "<=" (both branches give base_lr at the boundary) and allows no warm-up.
        if step < self.warmup_steps:
            lr = min(self.floor + step / self.warmup_steps * (self.base_lr - self.floor), self.base_lr)
        else:
            progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
            lr = 0.5 * self.base_lr * (1.0 + math.cos(math.pi * progress))
        return max(lr, self.floor)

    def step(self) -> float:
        """Apply the learning rate of the current step to every group, advance, return the base lr."""
        lr = self.lr_at(self.step_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        self.step_num += 1
        return lr

    def state_dict(self) -> dict[str, float]:
        return {"step_num": self.step_num, "base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "floor": self.floor}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step_num = int(state["step_num"])
        self.base_lr = state["base_lr"]
        self.total_steps = state["total_steps"]
        self.warmup_steps = state["warmup_steps"]
        self.floor = state["floor"]
