"""Resuming restores every rank's own RNG state, on any number of ranks and GPUs (checkpoints hold one state per
rank; older ones rank 0's alone, with a CUDA state per GPU rank 0 saw). CUDA states are fake tensors here: the
selection is what is tested, without a GPU."""
import random

import numpy as np
import torch

from utils.trainer import rank_rng_state, rng_state, set_rng_state


def seeded_state(seed: int) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return rng_state(torch.device("cpu"))


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def fake_cuda(n: int) -> list[torch.Tensor]:
    return [torch.full((16,), i, dtype=torch.uint8) for i in range(n)]


def test_every_rank_restores_its_own_state():
    saved = [seeded_state(10 + rank) for rank in range(2)]
    expected = []
    for rank in range(2):
        set_rng_state(saved[rank])
        expected.append(draws())
    assert expected[0] != expected[1]
    for rank in range(2):
        seeded_state(999)  # whatever this process did since
        state, notes = rank_rng_state(saved, rank, 2, None)
        set_rng_state(state)
        assert draws() == expected[rank] and notes == []


def test_four_ranks_resumed_on_two_gpus():
    saved = [{**seeded_state(rank), "cuda": cuda} for rank, cuda in enumerate(fake_cuda(4))]
    state0, notes0 = rank_rng_state(saved, 0, 2, cuda_index=0)
    state1, notes1 = rank_rng_state(saved, 1, 2, cuda_index=1)
    assert torch.equal(state0["cuda"], saved[0]["cuda"]) and torch.equal(state1["cuda"], saved[1]["cuda"])
    assert torch.equal(state1["torch"], saved[1]["torch"])
    assert len(notes0) == 1 and "4 ranks" in notes0[0] and "ranks 2-3 are not used" in notes0[0] and notes1 == []


def test_two_ranks_resumed_on_four():
    saved = [{**seeded_state(rank), "cuda": cuda} for rank, cuda in enumerate(fake_cuda(2))]
    state, notes = rank_rng_state(saved, 3, 4, cuda_index=3)
    assert state is None and "rank 3" in notes[0] and "keeps its seeded state" in notes[0]


def test_older_checkpoint_with_every_gpu_of_rank_0_on_fewer_devices():
    """Rank 0 of an older run saved the CUDA states of the 4 GPUs it saw; resumed on 2 GPUs (restoring all 4 there
    indexed devices that do not exist)."""
    legacy = {**seeded_state(0), "cuda": fake_cuda(4)}
    state0, notes0 = rank_rng_state(legacy, 0, 2, cuda_index=0)
    assert torch.equal(state0["cuda"], legacy["cuda"][0]) and notes0 == []
    state1, notes1 = rank_rng_state(legacy, 1, 2, cuda_index=1)
    assert state1 is None and "saved by 1 rank" in notes1[0]  # rank 0's CPU state is not every rank's
    state, notes = rank_rng_state({**seeded_state(0), "cuda": fake_cuda(1)}, 0, 1, cuda_index=2)
    assert "cuda" not in state and "covers 1 device(s), none for device 2" in notes[0]


def test_cuda_state_on_a_cpu_and_cpu_state_on_a_gpu_are_said():
    state, notes = rank_rng_state([{**seeded_state(0), "cuda": fake_cuda(1)[0]}], 0, 1, cuda_index=None)
    assert "cuda" not in state and "no CUDA device here" in notes[0]
    state, notes = rank_rng_state([seeded_state(0)], 0, 1, cuda_index=0)
    assert "cuda" not in state and "holds no CUDA RNG state" in notes[0]
