"""Optional inference-time re-ranking of a [queries, gallery] similarity matrix: DSL and QB-Norm.

Neither is used by the DGL paper numbers; both are applied only on request and reported separately.
"""
from __future__ import annotations

import torch
from torch import Tensor


def dual_softmax(sim: Tensor, temperature: float) -> Tensor:
    """Dual-softmax re-scoring (DSL, CAMoE): ``sim * softmax(temperature * sim, dim=0)``.

    ``sim`` is [texts, videos]. The softmax runs over the text axis, i.e. for each video it is a prior on
    how strongly that video prefers this text over every other text; text-to-video ranks along each row
    then reward mutual best matches. CAMoE also multiplies by the number of texts, a global constant that
    cannot change any ranking, so it is left out. ``temperature`` multiplies the scores as given (use ~1
    for the x100 CLIP logits, ~100 for raw cosines).
    """
    return sim * torch.softmax(sim * temperature, dim=0)


def qb_norm(sim_test: Tensor, sim_bank: Tensor, k: int = 1, theta: int = 3, beta: float = 0.87) -> Tensor:
    """Querybank normalisation (spec §5.2) of ``sim_test`` [queries, gallery] with a fixed ``beta``.

    ``sim_bank`` [bank queries, gallery] scores the training-set queries against the same gallery. Gallery
    items in the top-``k`` of at least ``theta`` bank queries form the activation set; a test row whose
    top-1 item is activated is replaced by ``beta * s_ij - log(sum_q exp(beta * bank_qj))``, the log of the
    official ratio exp(beta s_ij) / n_j (same order along a row, but it cannot overflow or underflow);
    other rows keep their raw scores. Rows are thus on mixed scales: rank along rows (one retrieval
    direction) only. ``beta`` is fixed rather than swept on the test set (the official search tuned it on
    test R@1, spec §7 bug 30); 0.87 is the official flag default and, like ``theta`` = 3 (the official
    text-to-video value; it used 5 for video-to-text), applies to x100 logits.
    """
    if sim_test.shape[1] != sim_bank.shape[1]:
        raise ValueError(f"test and bank matrices must share the gallery, got {tuple(sim_test.shape)} "
                         f"and {tuple(sim_bank.shape)}")
    dtype = torch.promote_types(sim_test.dtype, torch.float32)
    sim_test, sim_bank = sim_test.to(dtype), sim_bank.to(dtype)
    bank_hits = torch.bincount(sim_bank.topk(k, dim=1).indices.flatten(), minlength=sim_bank.shape[1])
    activated = bank_hits >= theta
    log_norm = torch.logsumexp(beta * sim_bank, dim=0)
    normalised = beta * sim_test - log_norm
    return torch.where(activated[sim_test.argmax(dim=1)][:, None], normalised, sim_test)
