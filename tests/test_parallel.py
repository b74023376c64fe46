"""dataloaders/parallel.py and dataloaders/workers.py: worker processes never start as forks of a threaded parent."""
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from dataloaders.parallel import parallel_map
from dataloaders.workers import worker_loader

ROOT = Path(__file__).resolve().parents[1]

# A parent that has run a multi-threaded torch op, then maps a torch op over workers: when the workers were
# plain forks, this hung in their first parallel region (OpenMP after fork) unless they ran single-threaded.
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


def test_workers_of_a_threaded_parent_finish_single_threaded(tmp_path):
    script = tmp_path / "threaded_parent.py"  # a file: workers import the mapped function from it
    script.write_text(AFTER_THREADED_PARENT)
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_in_process_when_one_worker_keeps_task_order():
    assert list(parallel_map(abs, [-3, 1, -2], 1)) == [3, 1, 2]


# The fork hazard itself: a lock that another thread of the parent holds while the workers start. A forked
# worker inherits it locked with no thread left to release it (what deadlocked PyAV 19 in DataLoader
# workers); a worker started by the fork server has its own, free copy.
HELD = threading.Lock()


def _takes_the_lock(_) -> bool:
    taken = HELD.acquire(timeout=5)
    if taken:
        HELD.release()
    return taken


class _LockDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> bool:
        return _takes_the_lock(index)


@pytest.fixture
def lock_held_by_a_thread():
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with HELD:
            taken.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    yield
    release.set()
    thread.join()


def test_pool_workers_do_not_inherit_a_lock_held_by_another_thread(lock_held_by_a_thread):
    assert list(parallel_map(_takes_the_lock, range(2), 2)) == [True, True]


def test_loader_workers_do_not_inherit_a_lock_held_by_another_thread(lock_held_by_a_thread):
    assert [bool(b) for b in worker_loader(_LockDataset(), 2, batch_size=None)] == [True, True]


def test_a_function_workers_cannot_import_is_refused_not_left_waiting():
    proc = subprocess.run([sys.executable, "-c", "from dataloaders.parallel import parallel_map\n"
                           "def f(x): return x\nlist(parallel_map(f, [1, 2], 2))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and "define it in a module or a script file" in proc.stderr, proc.stderr[-2000:]
