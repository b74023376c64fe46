"""ITM re-ranking (utils/itm_rerank.py): BLIP's combination rule against a naive per-pair loop, batching, K
beyond the gallery, thread-simulated ranks, and the real ITM head of a tiny DGL-BLIP."""
from __future__ import annotations

import threading

import pytest
import torch

from models.blip import load_blip
from models.blip.dgl_video import DGLBlip, DGLBlipConfig
from tests.blip_files import VOCAB, Size, write_hf_folder
from utils.itm_rerank import UNRANKED, blip_pair_scorer, itm_rerank


def naive(sim: torch.Tensor, k: int, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's evaluation loop, one query and one pair at a time."""
    t2v = torch.full(sim.shape, UNRANKED)
    v2t = torch.full(sim.t().shape, UNRANKED)
    for t in range(sim.shape[0]):
        for v in sim[t].argsort(descending=True)[:k].tolist():
            t2v[t, v] = table[t, v] + sim[t, v]
    for v in range(sim.shape[1]):
        for t in sim[:, v].argsort(descending=True)[:k].tolist():
            v2t[v, t] = table[t, v] + sim[t, v]
    return t2v, v2t


class Table:
    """A known ITM score per (text, video), recording each batched call."""

    def __init__(self, table: torch.Tensor):
        self.table, self.calls = table, []

    def __call__(self, texts: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(texts))
        return self.table[texts, videos]


def problem(texts: int = 7, videos: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(texts, videos, generator=g) * 2 - 1, torch.randn(texts, videos, generator=g) * 3


def test_batched_rerank_equals_blips_per_pair_loop():
    sim, table = problem()
    scorer = Table(table)
    t2v, v2t = itm_rerank(sim, k=3, score=scorer, chunk=2)
    ref_t2v, ref_v2t = naive(sim, 3, table)
    assert torch.equal(t2v, ref_t2v) and torch.equal(v2t, ref_v2t)
    assert scorer.calls == [6, 6, 6, 3] + [6, 6, 3]  # chunks of 2 queries x 3 pairs: 7 texts, then 5 videos
    assert ((t2v != UNRANKED).sum(1) == 3).all()


def test_itm_preferring_a_pair_moves_it_to_rank_one():
    sim, _ = problem(seed=1)
    table = torch.zeros_like(sim)
    target = sim[4].argsort(descending=True)[2].item()  # ITC ranks this video third for text 4
    table[4, target] = 5.0
    t2v, v2t = itm_rerank(sim, k=3, score=Table(table))
    assert sim[4].argmax() != target and t2v[4].argmax() == target
    others = [t for t in range(sim.shape[0]) if t != 4]
    assert torch.equal(t2v[others].argmax(1), sim[others].argmax(1))  # nothing else moves
    outside = sim[4].argsort(descending=True)[3].item()  # past K: no ITM score can lift it
    table[4, outside] = 50.0
    assert itm_rerank(sim, k=3, score=Table(table))[0][4, outside] == UNRANKED


def test_k_beyond_the_gallery_rescores_everything():
    sim, table = problem(texts=4, videos=3)
    t2v, v2t = itm_rerank(sim, k=50, score=Table(table))
    assert torch.equal(t2v, sim + table) and torch.equal(v2t, (sim + table).t())
    with pytest.raises(ValueError, match="--itm_rerank K must be >= 1"):
        itm_rerank(sim, k=0, score=Table(table))


class FakeWorld:
    """All-gather across threads, in rank order (the semantics of ``torch.distributed.all_gather``)."""

    def __init__(self, size: int):
        self.size, self.barrier, self.parts = size, threading.Barrier(size), [None] * size

    def gather_for(self, rank: int):
        def gather(x: torch.Tensor) -> torch.Tensor:
            self.parts[rank] = x
            self.barrier.wait()
            out = torch.cat(self.parts)
            self.barrier.wait()
            return out
        return gather


@pytest.mark.parametrize("texts,videos,ranks", [(7, 5, 2), (6, 4, 2), (2, 3, 4)])  # short and empty last ranks
def test_ranks_equal_one(texts, videos, ranks):
    sim, table = problem(texts, videos, seed=2)
    single = itm_rerank(sim, k=2, score=Table(table))
    world, results, scorers = FakeWorld(ranks), [None] * ranks, [Table(table) for _ in range(ranks)]

    def run(rank):
        results[rank] = itm_rerank(sim, k=2, score=scorers[rank], chunk=3, rank=rank, world_size=ranks,
                                   gather=world.gather_for(rank))
    threads = [threading.Thread(target=run, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for result in results:
        assert torch.equal(result[0], single[0]) and torch.equal(result[1], single[1])
    assert sum(sum(s.calls) for s in scorers) == 2 * (texts + videos)  # each query scored once, on one rank
    with pytest.raises(ValueError, match="needs a gather function"):
        itm_rerank(sim, k=2, score=Table(table), world_size=2)


def test_blip_pair_scorer_batches_the_real_itm_head(tmp_path):
    """Batched scores from a tiny DGL-BLIP equal its ITM head run pair by pair."""
    write_hf_folder(tmp_path, Size(32, 2, 2, 8, 32, 32, 2, 4))
    torch.manual_seed(0)
    model = DGLBlip(load_blip(tmp_path, temperature=0.07), DGLBlipConfig(global_prompt_length=2)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, len(VOCAB), (5, 8), generator=g)
    ids[:, 0] = len(VOCAB) + 1  # [ENC]
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        tokens = model.video_tokens(torch.randn(3, 2, 3, 32, 32, generator=g))
        sim = torch.rand(5, 3, generator=g)
        table = torch.stack([torch.stack([model.itm_logits(ids[t:t + 1], mask[t:t + 1], tokens[v:v + 1])[0, 1]
                                          for v in range(3)]) for t in range(5)])
        t2v, v2t = itm_rerank(sim, k=2, score=blip_pair_scorer(model.itm_logits, ids, mask, tokens), chunk=2)
    ref_t2v, ref_v2t = naive(sim, 2, table)
    assert table.std() > 0.05
    assert (t2v - ref_t2v).abs().max() < 1e-5 and (v2t - ref_v2t).abs().max() < 1e-5
