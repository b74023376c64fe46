"""Retrieval metrics: hand-computed ranks, the one-rank-per-query tie rule, multi-sentence groups."""
import numpy as np
import pytest
import torch

from utils import metrics
from utils.metrics import caption_group_max, format_metrics_table, retrieval_metrics


def official_metrics(x: torch.Tensor) -> dict[str, float]:
    """Plain re-statement of the official sort-based rule (ground truth on the diagonal; ties emit several ranks)."""
    ranks = []
    for row, gt in zip(x.tolist(), x.diag().tolist()):
        ordered = sorted(row, reverse=True)
        ranks += [pos for pos, value in enumerate(ordered) if value == gt]
    ranks = np.array(ranks)
    return {"R@1": 100 * np.mean(ranks < 1), "R@5": 100 * np.mean(ranks < 5), "R@10": 100 * np.mean(ranks < 10),
            "MdR": np.median(ranks) + 1, "MnR": np.mean(ranks) + 1}


def assert_metrics(got: dict[str, float], **expected: float) -> None:
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def test_perfect_identity():
    result = retrieval_metrics(torch.eye(6), torch.arange(6))
    for direction in ("t2v", "v2t"):
        assert_metrics(result[direction], **{"R@1": 100, "R@5": 100, "R@10": 100, "MdR": 1, "MnR": 1})


def test_reversed_ranks():
    # Every caption scores video j with j: caption i's own video i is beaten by the 3 - i videos above it.
    sim = torch.arange(4.0).expand(4, 4)
    result = retrieval_metrics(sim, torch.arange(4))
    assert_metrics(result["t2v"], **{"R@1": 25, "R@5": 100, "MdR": 2.5, "MnR": 2.5})  # ranks 3, 2, 1, 0
    # Transposed, every row is constant: all tied with the ground truth, so rank 0 each.
    assert_metrics(result["v2t"], **{"R@1": 100, "MdR": 1, "MnR": 1})


def test_ties_one_rank_per_query():
    sim = torch.tensor([[1.0, 1.0, 0.0],
                        [0.5, 0.5, 0.5],
                        [3.0, 2.0, 2.0]])
    result = retrieval_metrics(sim, torch.arange(3))
    assert_metrics(result["t2v"], **{"R@1": 200 / 3, "MdR": 1, "MnR": 4 / 3})  # ranks 0, 0, 1
    assert_metrics(result["v2t"], **{"R@1": 100 / 3, "MdR": 2, "MnR": 2})  # ranks 1, 2, 0
    # The official rule counts tied rows several times: 7 t2v ranks (0, 1 | 0, 1, 2 | 1, 2) for 3 queries.
    assert official_metrics(sim)["R@1"] == pytest.approx(100 * 2 / 7)


def test_multi_sentence_groups():
    # VATEX-like: 3 videos owning 3, 2 and 1 captions, captions not grouped by video.
    caption_video = torch.tensor([2, 0, 1, 2, 0, 2])
    sim = torch.tensor([[0.9, 0.1, 0.5],
                        [0.2, 0.3, 0.1],
                        [0.0, 0.8, 0.7],
                        [0.1, 0.2, 0.6],
                        [0.4, 0.3, 0.35],
                        [0.3, 0.6, 0.2]])
    grouped = caption_group_max(sim, caption_video)
    torch.testing.assert_close(grouped, torch.tensor([[0.4, 0.0, 0.9], [0.3, 0.8, 0.6], [0.35, 0.7, 0.6]]))
    result = retrieval_metrics(sim, caption_video)
    assert_metrics(result["t2v"], **{"R@1": 50, "R@5": 100, "MdR": 1.5, "MnR": 5 / 3})  # ranks 1,1,0,0,0,2
    assert_metrics(result["v2t"], **{"R@1": 100 / 3, "R@5": 100, "MdR": 2, "MnR": 5 / 3})  # ranks 1,0,1


def test_matches_official_rule_without_ties(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 7)  # exercise the blocked path
    sim = torch.randn(40, 40, generator=torch.Generator().manual_seed(0))
    result = retrieval_metrics(sim, torch.arange(40))
    for direction, matrix in (("t2v", sim), ("v2t", sim.T)):
        assert_metrics(result[direction], **official_metrics(matrix))


def test_half_precision_and_input_errors():
    sim = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    assert retrieval_metrics(sim.half(), torch.arange(5)) == retrieval_metrics(sim.half().float(), torch.arange(5))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.where(torch.eye(5, dtype=torch.bool), float("nan"), sim), torch.arange(5))
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(sim, torch.tensor([0, 0, 1, 2, 3]))
    with pytest.raises(ValueError, match="index"):
        retrieval_metrics(sim, torch.tensor([0, 1, 2, 3, 5]))


def test_format_metrics_table():
    result = retrieval_metrics(torch.eye(3), torch.arange(3))
    lines = format_metrics_table({"dgl": result, "dgl+dsl": result}).splitlines()
    assert len(lines) == 4
    assert lines[0].split("|")[1:3] == [" run     ", " T2V R@1 "]
    per_direction = ["100.0"] * 3 + ["1.0"] * 2
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["dgl"] + per_direction * 2
