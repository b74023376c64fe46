"""DSL and QB-Norm re-ranking on small hand-built matrices."""
import math

import pytest
import torch

from utils.metrics import retrieval_metrics
from utils.rerank import dual_softmax, qb_norm


def test_dual_softmax_values_and_effect():
    sim = torch.tensor([[5.0, 0.0],
                        [3.0, 2.9]])
    prior = torch.stack([torch.softmax(sim[:, 0], 0), torch.softmax(sim[:, 1], 0)], dim=1)  # over texts
    torch.testing.assert_close(dual_softmax(sim, 1.0), sim * prior)
    # Text 1 narrowly prefers video 0, which text 0 claims far more strongly: DSL moves it to video 1.
    assert retrieval_metrics(sim, torch.arange(2))["t2v"]["R@1"] == 50
    assert retrieval_metrics(dual_softmax(sim, 1.0), torch.arange(2))["t2v"]["R@1"] == 100


def test_qb_norm_activated_rows_only():
    bank = torch.tensor([[2.0, 0.0, 0.0],
                         [2.0, 0.0, 0.0],
                         [2.0, 0.0, 0.0],
                         [0.0, 1.0, 0.0]])  # top-1 hits: item 0 three times, item 1 once
    test = torch.tensor([[1.0, 0.9, 0.0],    # top-1 is the hub item 0 -> normalised
                         [0.0, 0.5, 0.6]])   # top-1 is item 2, not activated -> raw
    out = qb_norm(test, bank, k=1, theta=3, beta=1.0)
    log_norm = torch.tensor([math.log(3 * math.e ** 2 + 1), math.log(3 + math.e), math.log(4)])
    torch.testing.assert_close(out[0], test[0] - log_norm)
    assert torch.equal(out[1], test[1])
    # Same order as the official ratio exp(beta * s) / n_j; the hub item 0 drops from first to last.
    ratio = test[0].exp() / log_norm.exp()
    assert torch.equal(out[0].argsort(), ratio.argsort())
    assert out[0].argmax() == 1


def test_qb_norm_top_k_threshold():
    bank = torch.tensor([[3.0, 2.0, 0.0],
                         [3.0, 0.0, 2.0],
                         [0.0, 3.0, 2.0]])  # top-2 sets {0,1}, {0,2}, {1,2}: every item hit twice
    test = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(qb_norm(test, bank, k=2, theta=3, beta=0.5), test)
    torch.testing.assert_close(qb_norm(test, bank, k=2, theta=2, beta=0.5),
                               0.5 * test - torch.logsumexp(0.5 * bank, dim=0))
    with pytest.raises(ValueError, match="gallery"):
        qb_norm(test, bank[:, :2])
