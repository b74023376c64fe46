"""models/losses.py: symmetric InfoNCE against a 2x2 case written out by hand.

Texts t1 = (1, 0), t2 = (0, 1) and videos v1 = (0.6, 0.8), v2 = (0, 1) (given at other lengths: the loss
normalises) have the cosine matrix [[a, b], [c, d]] = [[0.6, 0], [0.8, 1]], which is not symmetric, so the
text-to-video term (rows) and the video-to-text term (columns) differ. With logit scale s = 10
(logit_scale = log 10), the logits are s times the cosines and

    t2v = ( -log(e^{sa} / (e^{sa} + e^{sb})) - log(e^{sd} / (e^{sc} + e^{sd})) ) / 2
    v2t = ( -log(e^{sa} / (e^{sa} + e^{sc})) - log(e^{sd} / (e^{sb} + e^{sd})) ) / 2
    loss = (t2v + v2t) / 2
"""
import math

import pytest
import torch

from models.losses import contrastive_loss, create_loss

A, B, C, D = 0.6, 0.0, 0.8, 1.0
S = 10.0
TEXT = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # t1, t2 at lengths 3 and 0.5
VIDEO = torch.tensor([[1.2, 1.6], [0.0, 7.0]])  # v1, v2 at lengths 2 and 7


def nll(positive: float, other: float) -> float:
    """-log of the softmax probability of `positive` against one `other` logit."""
    return -math.log(math.exp(positive) / (math.exp(positive) + math.exp(other)))


T2V = (nll(S * A, S * B) + nll(S * D, S * C)) / 2
V2T = (nll(S * A, S * C) + nll(S * D, S * B)) / 2


def test_symmetric_infonce_equals_the_hand_computed_value():
    loss = create_loss("infonce")(TEXT, VIDEO, torch.tensor(math.log(S)))
    # t2v = (log(1 + e^-6) + log(1 + e^-2)) / 2 = 0.0647, v2t = (log(1 + e^2) + log(1 + e^-10)) / 2 = 1.0635
    assert T2V == pytest.approx(0.0647, abs=1e-4) and V2T == pytest.approx(1.0635, abs=1e-4)
    assert float(loss) == pytest.approx((T2V + V2T) / 2, rel=1e-6)


def test_each_direction_normalises_over_its_own_axis():
    """The gradient of the loss with respect to logit (i, j) is (row softmax - [i = j]) / 4 from the t2v term
    plus (column softmax - [i = j]) / 4 from the v2t term: a loss that took both terms over rows (or both over
    columns) has the same value on a symmetric matrix but not this gradient."""
    logits = torch.tensor([[S * A, S * B], [S * C, S * D]], requires_grad=True)
    contrastive_loss(logits).backward()
    row = [[math.exp(S * A) / (math.exp(S * A) + math.exp(S * B)), math.exp(S * B) / (math.exp(S * A) + math.exp(S * B))],
           [math.exp(S * C) / (math.exp(S * C) + math.exp(S * D)), math.exp(S * D) / (math.exp(S * C) + math.exp(S * D))]]
    col = [[math.exp(S * A) / (math.exp(S * A) + math.exp(S * C)), math.exp(S * B) / (math.exp(S * B) + math.exp(S * D))],
           [math.exp(S * C) / (math.exp(S * A) + math.exp(S * C)), math.exp(S * D) / (math.exp(S * B) + math.exp(S * D))]]
    expected = [[(row[i][j] + col[i][j] - 2 * (i == j)) / 4 for j in range(2)] for i in range(2)]
    torch.testing.assert_close(logits.grad, torch.tensor(expected), rtol=1e-5, atol=1e-7)
    # swapping texts and videos swaps the two terms: same loss, transposed gradient
    swapped = logits.detach().t().clone().requires_grad_()
    contrastive_loss(swapped).backward()
    torch.testing.assert_close(swapped.grad, logits.grad.t(), rtol=1e-6, atol=1e-8)
