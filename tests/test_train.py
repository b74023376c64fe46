"""Training and evaluation through main.py on a generated MSR-VTT-layout dataset and tiny CLIPs (CPU, gloo)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from utils.config import build_config
from utils.run import run
from tests.tiny_runs import data_flags, train_flags

ROOT = Path(__file__).resolve().parents[1]
def prompts(path: Path) -> dict:
    return torch.load(path, weights_only=False)["state_dict"]


def assert_same_prompts(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), f"{name}: {(a[name] - b[name]).abs().max():.3g}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, flags: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(ROOT / "main.py"), *flags]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_resume_continues_exactly(workspace):
    run(build_config(train_flags(workspace, "six", "--max_steps", "6")))
    run(build_config(train_flags(workspace, "three", "--max_steps", "3")))
    first = workspace / "three" / "checkpoint_latest.pt"
    assert torch.load(first, weights_only=False)["global_step"] == 3
    initial = prompts(first)
    run(build_config(train_flags(workspace, "three", "--max_steps", "6", "--resume", str(first))))
    resumed = prompts(workspace / "three" / "checkpoint_latest.pt")
    assert_same_prompts(resumed, prompts(workspace / "six" / "checkpoint_latest.pt"), atol=0)
    assert any(not torch.equal(initial[k], resumed[k]) for k in initial)  # training did move the prompts


def test_chunked_accumulation_equals_full_batch(workspace):
    run(build_config(train_flags(workspace, "full", "--max_steps", "2")))
    run(build_config(train_flags(workspace, "chunks", "--max_steps", "2", "--gradient_accumulation_steps", "2")))
    assert_same_prompts(prompts(workspace / "chunks" / "checkpoint_latest.pt"),
                        prompts(workspace / "full" / "checkpoint_latest.pt"), atol=2e-6)


def test_two_ranks_equal_one_process_on_the_global_batch(workspace):
    run(build_config(train_flags(workspace, "single", "--max_steps", "2", "--batch_size", "8")))
    torchrun(2, train_flags(workspace, "ddp", "--max_steps", "2", "--batch_size", "4"))
    assert_same_prompts(prompts(workspace / "ddp" / "checkpoint_latest.pt"),
                        prompts(workspace / "single" / "checkpoint_latest.pt"), atol=2e-6)


def test_official_checkpoint_evaluates_identically_on_one_and_two_ranks(workspace, fixture_dir):
    args = json.loads((fixture_dir / "config.json").read_text())["variants"]["transformer"]["args"]
    flags = data_flags(workspace) + [
        "--do_eval", "1", "--pretrained_clip_name", str(fixture_dir / "tiny_clip_jit.pt"),
        "--resume", str(fixture_dir / "dgl_transformer_ckpt.pth.tar"), "--batch_size_val", "3",
        "--shared_latent_space", args["shared_latent_space"], "--max_frames", str(args["max_frames"]),
        "--text_prompt_length", str(args["text_prompt_length"]),
        "--local_each_frame_prompt_length", str(args["local_each_frame_prompt_length"]),
        "--global_visual_prompt_length", str(args["global_visual_prompt_length"]),
        "--unified_transformer_layers", str(args["unified_transformer_layers"]),
    ]
    single = run(build_config(flags + ["--output_dir", str(workspace / "eval1")]))
    torchrun(2, flags + ["--output_dir", str(workspace / "eval2")])
    double = json.loads((workspace / "eval2" / "eval_metrics.json").read_text())
    assert single == double
    assert single["DGL-transformer"]["t2v"]["R@10"] == 100.0  # 8 test videos: every caption's video is in the top 10


def test_epoch_sampler_shards_global_batches_and_keeps_groups_together():
    from utils.trainer import EpochSampler

    single = list(EpochSampler(22, 8, 0, 1, seed=5, group_size=2))
    ranks = [list(EpochSampler(22, 4, r, 2, seed=5, group_size=2)) for r in range(2)]
    assert len(single) == 16 and len(set(single)) == 16
    for b in range(2):  # global batch b is the same samples on 1 or 2 ranks
        assert sorted(single[8 * b : 8 * b + 8]) == sorted(ranks[0][4 * b : 4 * b + 4] + ranks[1][4 * b : 4 * b + 4])
    assert all(single[i] // 2 == single[i + 1] // 2 for i in range(0, 16, 2))  # twins stay adjacent
    resumed = EpochSampler(22, 8, 0, 1, seed=5, group_size=2)
    resumed.set_position(0, 1)
    assert list(resumed) == single[8:]
