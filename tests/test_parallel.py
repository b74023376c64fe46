"""dataloaders/parallel.py: the pre-processing tools' worker pool."""
import subprocess
import sys
from pathlib import Path

from dataloaders.parallel import parallel_map

ROOT = Path(__file__).resolve().parents[1]

# A parent that has run a multi-threaded torch op, then maps a torch op over forked workers: before the
# workers were made single-threaded, this hung in the workers' first parallel region (OpenMP after fork).
AFTER_THREADED_PARENT = """
import math
import torch, torch.nn.functional as F
from dataloaders.parallel import parallel_map

def resize(seed):
    x = torch.rand(8, 3, 240, 320, generator=torch.Generator().manual_seed(seed))
    return seed, torch.get_num_threads(), float(F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True).mean())

if __name__ == "__main__":
    torch.set_num_threads(2)
    F.interpolate(torch.rand(8, 3, 240, 320), size=(224, 224), mode="bilinear", antialias=True)
    rows = sorted(parallel_map(resize, range(4), 2))
    assert [r[0] for r in rows] == [0, 1, 2, 3] and {r[1] for r in rows} == {1}, rows
    # the same values as in the parent, up to the rounding of another thread count
    assert all(math.isclose(r[2], resize(r[0])[2], rel_tol=1e-6) for r in rows), rows
    print("ok")
"""


def test_workers_of_a_threaded_parent_finish_single_threaded():
    proc = subprocess.run([sys.executable, "-c", AFTER_THREADED_PARENT], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_in_process_when_one_worker_keeps_task_order():
    assert list(parallel_map(abs, [-3, 1, -2], 1)) == [3, 1, 2]
