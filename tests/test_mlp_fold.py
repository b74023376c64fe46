"""CLIP's MLP with QuickGELU's 1.702 folded into its weights (models/clip.py `Mlp`): the same function and
gradients as OpenAI's ``x * sigmoid(1.702 x)``, the same parameter names, and no elementwise pass of its own over
the hidden activation."""
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
