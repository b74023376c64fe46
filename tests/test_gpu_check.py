"""The GPU check runs on a bare CUDA image (torch, pytest, transformers; no PyAV, ftfy, regex, decord, simplejpeg,
Pillow): a module imports a library only where it uses it. Here the missing libraries are blocked by an import
hook in a child interpreter (``sitecustomize`` on its path), which then imports the modules the GPU tests need and
runs ``scripts/gpu_check.sh --dry-run`` (collects every GPU-check test file, runs the CUDA ones: they skip here)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_IMAGE = ("av", "ftfy", "regex", "decord", "simplejpeg", "PIL", "torchcodec", "wcwidth")
# What the GPU check's tests import: the model, the loss, the step, the trainer and evaluation, flags, the benchmark.
GPU_CHECK_MODULES = ("models.dgl", "models.losses", "models.backbones", "models.tokenizer", "utils.step", "utils.trainer",
                     "utils.evaluation", "utils.flags", "utils.run", "apps.bench.cli", "dataloaders.synthetic")

BLOCKER = f"""
import sys
BLOCKED = {set(ABSENT_ON_GPU_IMAGE)!r}
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU image)", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_blocker_blocks(bare_env):
    for name in ABSENT_ON_GPU_IMAGE[:3]:
        result = run([sys.executable, "-c", f"import {name}"], bare_env)
        assert result.returncode != 0 and "absent on the GPU image" in result.stderr


def test_gpu_check_modules_import_without_optional_libraries(bare_env):
    code = "import importlib\nfor name in %r:\n    importlib.import_module(name)\nprint('ok')" % (GPU_CHECK_MODULES,)
    result = run([sys.executable, "-c", code], bare_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def check_row(row: dict, section: str, memory: bool, model: str = "tiny") -> None:
    """One benchmark row of gpu_check.json: its identity and measured figures, each of the right kind."""
    assert "error" not in row, row
    variants = ("full",) if model == "blip-tiny" else ("transformer", "linear")
    assert row["model"] == model and row["variant"] in variants and row["section"] == section
    assert isinstance(row["grad_checkpointing"], bool) and row["batch"] >= 2
    for key in ("step_s", "items_per_s", "tflop", "tflop_per_s", "matmul_tflop_per_s"):
        assert isinstance(row[key], float) and row[key] > 0, (key, row)
    assert row["tflop_per_s"] == pytest.approx(row["tflop"] / row["step_s"])
    assert row["mfu"] is None or row["mfu"] == pytest.approx(row["tflop_per_s"] / row["matmul_tflop_per_s"])
    assert ("peak_mem_mb" in row) == memory


def test_gpu_check_dry_run_collects_skips_and_writes_the_json(bare_env, tmp_path):
    result = run(["bash", "scripts/gpu_check.sh", "--dry-run", str(tmp_path / "out")], bare_env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "ERROR" not in out and "Interrupted" not in out and " error" not in out, out[-4000:]  # pytest's words
    assert "tests collected" in out
    collected = int(out.split(" tests collected")[0].split()[-1])
    assert collected >= 40  # every GPU-check file contributes; a file that failed to import would have errored
    if not __import__("torch").cuda.is_available():
        assert "SKIPPED" in out and "no CUDA device" in out
    assert "gpu_check.json: every part came back" in (tmp_path / "out" / "gpu_check.log").read_text()
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert set(report) == {"schema", "tiny", "machine", "tests", "train", "encode", "blip", "eval_real_size"}
    assert report["schema"] == "gpu_check/1" and report["tiny"] is True
    assert {"date", "commit", "torch", "cuda", "gpu", "cpu", "cores"} <= set(report["machine"])
    assert report["tests"]["exit_code"] == 0 and "skipped" in report["tests"]["summary"]
    # Both latent spaces, with and without activation checkpointing; encoding once per latent space.
    assert sorted((r["variant"], r["grad_checkpointing"]) for r in report["train"]) == [
        ("linear", False), ("linear", True), ("transformer", False), ("transformer", True)]
    for row in report["train"]:
        check_row(row, "train_step", memory=True)
    assert sorted((r["variant"], r["section"]) for r in report["encode"]) == [
        ("linear", "encode_text"), ("linear", "encode_video"), ("transformer", "encode_text"), ("transformer", "encode_video")]
    for row in report["encode"]:
        check_row(row, row["section"], memory=False)
    # DGL-BLIP: the full fine-tuning step with and without checkpointing, encoding, the re-rank stage scaled by pairs.
    assert [(r["section"], r["grad_checkpointing"]) for r in report["blip"]] == [
        ("train_step", False), ("train_step", True), ("encode_video", False), ("encode_text", False),
        ("itm_rerank_k16", False), ("itm_rerank_k128", False)]
    for row in report["blip"]:
        check_row(row, row["section"], memory=row["section"] == "train_step", model="blip-tiny")
        if row["section"].startswith("itm_rerank"):
            assert row["stage"]["pairs"] == 2000 * row["batch"]
            assert row["stage"]["scaled_from_sample_s"] == pytest.approx(row["step_s"] * 2000)
    # PyAV is blocked here, as on a bare GPU image without the carried wheels: the evaluation says why it did not run.
    assert report["eval_real_size"] == {"skipped": report["eval_real_size"]["skipped"]}
    assert "PyAV" in report["eval_real_size"]["skipped"] and "absent on the GPU image" in report["eval_real_size"]["skipped"]
