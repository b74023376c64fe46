"""Every entry point runs the way users type it: by path from any folder, and with ``-m`` from the root."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataloaders.synthetic import write_video
from tests.test_compress_video import stream_facts
from tests.video_utils import corrupt_file

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("main.py", "retrieve.py", "visualize.py", "preprocess/compress_video.py", "preprocess/cache_frames.py",
                "preprocess/check_dataset.py", "preprocess/generate_video_path.py")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the script itself finds the code
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_runs_by_path_from_another_folder(script, tmp_path):
    result = run([str(ROOT / script), "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_runs_as_module_from_the_root(script):
    result = run(["-m", script.removesuffix(".py").replace("/", "."), "--help"], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_official_compress_command_by_path(tmp_path):
    """The official README's command and flags, from outside the checkout: mirrored, 3 fps, short side 224,
    and a corrupt input is named with a non-zero exit."""
    raw = tmp_path / "A"
    write_video(raw / "x" / "wide.mp4", 30, 320, 180, fps=30)
    write_video(raw / "tall.mp4", 20, 180, 320, fps=10)
    corrupt_file(raw / "x" / "broken.mp4")
    result = run([str(ROOT / "preprocess" / "compress_video.py"), "--input_root", "A", "--output_root", "B",
                  "--num_works", "2"], cwd=tmp_path)
    assert result.returncode == 1
    assert str(raw / "x" / "broken.mp4") in result.stderr
    assert stream_facts(tmp_path / "B" / "x" / "wide.mp4")[:3] == (398, 224, 3.0)
    assert stream_facts(tmp_path / "B" / "tall.mp4")[:3] == (224, 398, 3.0)
