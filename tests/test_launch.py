"""Who runs how many processes: the scripts' GPUS, CUDA_VISIBLE_DEVICES, torchrun's and srun's variables, and the
CUDA device each process binds. Fake environments and device counts; the shell script runs against a stub Python."""
import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from utils.config import build_config
from utils.distributed import LaunchEnv, device_ordinal, first_host, launch_env
from utils.runtime import relaunch_on_all_gpus

ROOT = Path(__file__).resolve().parents[1]
ARGV = ["--do_train", "1"]


def test_gpus_1_runs_one_process_on_a_machine_of_four():
    assert relaunch_on_all_gpus(ARGV, "main.py", environ={"DGL_GPUS": "1"}, gpus=4) is None


def test_gpus_2_of_four_runs_two_and_unset_runs_all():
    assert "--nproc_per_node=2" in relaunch_on_all_gpus(ARGV, "main.py", environ={"DGL_GPUS": "2"}, gpus=4)
    assert "--nproc_per_node=4" in relaunch_on_all_gpus(ARGV, "main.py", environ={}, gpus=4)
    assert relaunch_on_all_gpus(ARGV, "main.py", environ={"DGL_GPUS": "1"}, gpus=0) is None  # one CPU process


def test_more_gpus_than_visible_is_refused():
    with pytest.raises(SystemExit, match=r"GPUS=4, but 2 GPU\(s\) are visible \(CUDA_VISIBLE_DEVICES=0,1\)"):
        relaunch_on_all_gpus(ARGV, "main.py", environ={"DGL_GPUS": "4", "CUDA_VISIBLE_DEVICES": "0,1"}, gpus=2)
    with pytest.raises(SystemExit, match="GPUS=two: give a whole number"):
        relaunch_on_all_gpus(ARGV, "main.py", environ={"DGL_GPUS": "two"}, gpus=2)
    # no GPU at all: GPUS processes on the CPU (gloo), as the recipes ran before
    assert "--nproc_per_node=4" in relaunch_on_all_gpus(ARGV, "main.py", environ={"DGL_GPUS": "4"}, gpus=0)


def test_under_a_launcher_nothing_is_relaunched():
    for environ in ({"RANK": "0", "WORLD_SIZE": "4"},
                    {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_NODELIST": "n1"}):
        assert relaunch_on_all_gpus(ARGV, "main.py", environ={**environ, "DGL_GPUS": "4"}, gpus=4) is None


@pytest.mark.parametrize("nodelist, host", [("gpu07", "gpu07"), ("gpu[03-05,09],cpu1", "gpu03"), ("a,b", "a"),
                                            ("r[1-2]-n[7,9]", "r1-n7"), ("node[012-015]", "node012")])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_srun_variables():
    env = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_STEP_NODELIST": "gpu[11-12]", "SLURM_JOB_NODELIST": "gpu[11-14]"}
    assert launch_env(env) == LaunchEnv("slurm", 5, 8, 1, "gpu11", "29500")
    assert launch_env({**env, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}).master_addr == "10.0.0.1"
    # srun running torchrun (one per node): torchrun's variables decide
    assert launch_env({**env, "RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3"}).launcher == "torchrun"
    # the batch script itself (no job step), or one task: one process
    assert launch_env({k: v for k, v in env.items() if k != "SLURM_STEP_ID"}).launcher == "none"
    assert launch_env({**env, "SLURM_NTASKS": "1"}).launcher == "none"


def test_device_ordinal_with_per_rank_visibility():
    assert device_ordinal(3, 4) == 3  # torchrun: every process sees every GPU
    assert device_ordinal(3, 1) == 0  # srun --gpus-per-task=1: each process sees its own GPU as device 0
    with pytest.raises(SystemExit, match="local rank 3 needs GPU 3, but 2 GPUs are visible"):
        device_ordinal(3, 2)


@pytest.fixture
def stub_venv(tmp_path: Path) -> Path:
    """A venv whose python records its arguments and DGL_GPUS (the setup step sees it up to date)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text('#!/bin/sh\necho "DGL_GPUS=${DGL_GPUS:-} MASTER_ADDR=${MASTER_ADDR:-} $*" >> "$STUB_LOG"\n')
    python.chmod(0o755)
    stamped = ("requirements.txt", "scripts/_venv.sh", "scripts/setup_plan.py")  # what scripts/_venv.sh hashes
    want = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in stamped))
    (venv / ".dgl-requirements").write_text(want.hexdigest() + "\n")
    return venv


@pytest.mark.parametrize("extra, expected", [
    ({"GPUS": "1"}, "DGL_GPUS=1 MASTER_ADDR= main.py"),
    ({}, "DGL_GPUS=4 MASTER_ADDR= main.py"),  # the recipe's 4, checked against the visible GPUs by main.py
    ({"GPUS": "2", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "h0"},
     "-m torch.distributed.run --nproc_per_node=2 --nnodes=2 --node_rank=1 --master_addr=h0"),
])
def test_msrvtt_script_launch(stub_venv, tmp_path, extra, expected):
    log = tmp_path / "calls.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "NNODES", "PYTHON", "MASTER_ADDR")}
    env.update(DGL_VENV=str(stub_venv), STUB_LOG=str(log), DATA=str(tmp_path), **extra)
    result = subprocess.run(["bash", "scripts/msrvtt.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    call = log.read_text().strip()
    assert expected in call and "--datatype msrvtt" in call


def test_slurm_example_runs_the_recipe_once_per_task(stub_venv, tmp_path):
    """scripts/slurm_msrvtt.sbatch with stub srun/scontrol: every task runs main.py alone (no torchrun inside), the
    master is the job's first node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\nprintf "gpu11\\ngpu12\\n"\n')
    (bin_dir / "srun").write_text('#!/bin/sh\nshift\nSLURM_STEP_ID=0 SLURM_NTASKS=8 SLURM_PROCID=0 "$@"\n')  # drops its flag
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    log = tmp_path / "calls.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "NNODES", "PYTHON", "MASTER_ADDR", "SLURM_SUBMIT_DIR")}
    env.update(DGL_VENV=str(stub_venv), STUB_LOG=str(log), DATA=str(tmp_path), SLURM_JOB_NODELIST="gpu[11-12]",
               PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", EXTRA="--batch_size 64")
    result = subprocess.run(["bash", "scripts/slurm_msrvtt.sbatch"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    calls = [line for line in log.read_text().splitlines() if "main.py" in line]  # not the set-up's torch check
    assert len(calls) == 1, calls
    assert calls[0].startswith("DGL_GPUS=1 MASTER_ADDR=gpu11 main.py") and calls[0].endswith("--batch_size 64")


def test_msrvtt_blip_script_runs_the_tokenmix_recipe_on_dgl_blip(stub_venv, tmp_path):
    """scripts/msrvtt_blip.sh's command parses into DGL-BLIP full fine-tuning with the tokenmix settings (the
    shared _launch.sh flags of DGL's variant left out, its defaults overridden by the recipe's)."""
    log = tmp_path / "calls.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "NNODES", "PYTHON", "MASTER_ADDR", "EXTRA")}
    env.update(DGL_VENV=str(stub_venv), STUB_LOG=str(log), DATA=str(tmp_path), EXTRA="--seed 7")
    result = subprocess.run(["bash", "scripts/msrvtt_blip.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    call = log.read_text().strip().splitlines()[-1]  # the earlier lines are the venv's set-up
    assert call.startswith("DGL_GPUS=8 MASTER_ADDR= main.py ")
    cfg = build_config(shlex.split(call.split(" main.py ", 1)[1]))
    model, train, evaluation = cfg.model, cfg.train, cfg.eval
    assert (model.model, model.backbone, model.train_backbone, model.max_frames) == ("dgl_blip", "blip", True, 8)
    assert (train.lr * train.coef_lr, train.wd, train.epochs, train.batch_size, train.warmup_proportion) == \
        (pytest.approx(1e-5), 0.05, 6, 8, 0.0)
    blip = train.blip_loss
    assert (blip.queue_size, blip.alpha, blip.momentum, blip.itm_weight) == (57600, 0.4, 0.995, 1.0)
    assert (evaluation.itm_rerank, cfg.data.max_words, cfg.flags["image_resolution"], train.seed) == (128, 35, 224, 7)
