"""Progress output that suits its stream: live bars on a terminal, a few whole lines in a log file, and a training
job whose redirected stderr holds readable lines (no carriage-return redraws) with the figures at --n_display."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.tiny_runs import train_flags
from utils.progress import progress

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def count_up(stream, **options) -> str:
    with progress(total=5000, desc="work", stream=stream, **options) as bar:
        for _ in range(5000):
            bar.update(1)
    return stream.getvalue()


def test_terminal_gets_a_live_bar():
    text = count_up(Terminal(), mininterval=0)
    assert text.count("\r") > 100 and "5000/5000" in text  # redrawn in place, many times


def test_file_gets_whole_lines_at_a_low_rate():
    text = count_up(io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text
    # A fast loop: the first state and the last one only (the next line would be due a minute later).
    assert len(lines) == 2 and lines[0].startswith("work:   0%") and "5000/5000" in lines[-1], lines


def test_disabled_and_file_quiet_bars_write_nothing():
    assert count_up(io.StringIO(), enabled=False) == ""
    assert count_up(io.StringIO(), in_files=False) == ""
    assert count_up(Terminal(), enabled=False) == ""


def test_training_log_in_a_file_has_no_bar_redraws(workspace, tmp_path):
    """main.py with its output in a file (``> train.log 2>&1``): no redraws; the step figures come as one log line
    per --n_display steps."""
    log = tmp_path / "train.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "main.py", *train_flags(workspace, "run_log", "--n_display", "2")],
                              cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_bytes().decode()  # not read_text(): universal newlines would turn "\r" into "\n"
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "epoch 1/2:" not in text  # no bar at all: the log lines carry its figures
    steps = [int(m) for m in re.findall(r"step (\d+)/\d+ \| loss .* \| eta \d+:\d\d:\d\d", text)]
    # 16 training videos x 2 captions in batches of 8, for 2 epochs: 8 steps; logged at step 1 and every 2nd.
    assert steps == [1, 2, 4, 6, 8], steps
