"""CLIP's MLP with QuickGELU's 1.702 carried by its two products (models/clip.py `Mlp`): the same function and
gradients as OpenAI's ``x * sigmoid(1.702 x)``, the same parameter names, no elementwise pass of its own over the
hidden activation, and no scaled weight copies kept for backward."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from models.clip import Mlp


def openai_mlp(mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's formula, written out: c_proj(QuickGELU(c_fc(x)))."""
    h = F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)
    return F.linear(h * torch.sigmoid(1.702 * h), mlp.c_proj.weight, mlp.c_proj.bias)


def test_folded_quick_gelu_mlp_equals_openais_formula_with_gradients():
    torch.manual_seed(0)
    mlp = Mlp(16, 64, 12).double()
    for p in mlp.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    ours, ref = mlp(x), openai_mlp(mlp, x)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(ours.square().sum(), [x, *mlp.parameters()])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *mlp.parameters()])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert sorted(mlp.state_dict()) == ["c_fc.bias", "c_fc.weight", "c_proj.bias", "c_proj.weight"]


@pytest.mark.parametrize("frozen", [True, False])
def test_only_the_pre_activation_is_saved_for_backward_and_no_weight_copy(frozen):
    """What autograd keeps between forward and backward, in elements, besides the parameters themselves (shared,
    not copied): the pre-activation (rows x hidden), plus the input when c_fc's weight trains. Scaling the weights
    per call (W1 * 1.702, W2 / 1.702) would keep a copy of both for backward even when they are frozen."""
    rows, width, hidden = 40, 16, 64
    mlp = Mlp(width, hidden, width).requires_grad_(not frozen)
    params = {p.data_ptr() for p in mlp.parameters()}
    saved = []

    def pack(t):
        if t.data_ptr() not in params:
            saved.append(t.numel())
        return t

    x = torch.randn(rows, width, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = mlp(x)
    y.sum().backward()
    assert sum(saved) == rows * hidden + (0 if frozen else rows * width), saved


def test_under_bf16_autocast_outputs_and_gradients_follow_openais_formula():
    torch.manual_seed(3)
    mlp = Mlp(32, 128, 32)
    x = torch.randn(6, 7, 32, requires_grad=True)
    results = []
    for fn in (mlp, lambda v: openai_mlp(mlp, v)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(x)
        grads = torch.autograd.grad(y.float().square().sum(), [x, *mlp.parameters()])
        results.append((y, grads))
    (ours, ours_grads), (ref, ref_grads) = results
    assert ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), rtol=0.02, atol=0.02)
    for got, want in zip(ours_grads, ref_grads):
        assert got.dtype == want.dtype == torch.float32
        assert (got - want).norm() < 0.02 * want.norm()


def test_gelu_mlp_is_the_plain_composition():
    torch.manual_seed(1)
    mlp = Mlp(8, 32, 8, activation="gelu")
    x = torch.randn(4, 8)
    torch.testing.assert_close(mlp(x), mlp.c_proj(F.gelu(mlp.c_fc(x))), rtol=0, atol=0)


class HiddenOps(TorchDispatchMode):
    """Records the ops whose output is a hidden activation: ``rows x hidden`` (the widest tensor of a block), not
    a weight."""

    def __init__(self, rows: int, hidden: int):
        super().__init__()
        self.shape, self.ops = (rows, hidden), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and tuple(out.shape) == self.shape:
            self.ops.append(func.overloadpacket.__name__)
        return out


def test_no_elementwise_pass_over_the_hidden_activation_but_the_silu():
    """Forward: the first product and the silu; backward: silu's backward and the product's. The unfolded form
    (silu(1.702 h) / 1.702) adds a mul and a div forward and their two backward passes."""
    torch.manual_seed(2)
    mlp = Mlp(16, 64, 16).requires_grad_(False)  # the frozen backbone's case
    x = torch.randn(40, 16, requires_grad=True)
    with HiddenOps(40, 64) as seen:
        mlp(x).sum().backward()
    elementwise = [op for op in seen.ops if op not in ("addmm", "mm", "t", "view", "_unsafe_view", "expand")]
    assert elementwise == ["silu", "silu_backward"], seen.ops
