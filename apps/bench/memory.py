"""Peak memory of a training step above the loaded model: CUDA allocator peak, or the CPU resident high-water mark.

On CPU the high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` after loading (``ru_maxrss``
where that is not available). In an isolated worker the warm-up runs with glibc's mmap threshold lowered so
that a freed tensor leaves the resident set at once and the mark follows live tensors (with glibc's default,
freed heap is kept and reused, which inflates it, mostly under checkpointing; ``--in_process`` never retunes
the host process and over-reports).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import sys
from pathlib import Path

import torch

from apps.bench.timing import sync_device

_MB = 1024 * 1024
# Thresholds while measuring (64 KiB / 128 KiB) and the ones glibc's dynamic thresholds reach by themselves
# (32 MiB / 64 MiB), restored for the timed part.
TIGHT_MALLOC = (64 * 1024, 128 * 1024)
STEADY_MALLOC = (32 * _MB, 64 * _MB)


def mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD; False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, mmap_threshold)) and bool(libc.mallopt(-1, trim_threshold))
    except (OSError, AttributeError):
        return False


def proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def can_reset_hwm() -> bool:
    return proc_status_kb("VmHWM") is not None and os.access("/proc/self/clear_refs", os.W_OK)


class PeakMemory:
    """Increase of peak memory over a baseline: CUDA allocator on GPU, resident high-water mark on CPU."""

    def __init__(self, device: torch.device, isolated: bool = True):
        self.device, self.isolated = device, isolated
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated"
        elif can_reset_hwm():
            self.method = "VmHWM - VmRSS after load (clear_refs reset)"
        else:
            self.method = "ru_maxrss - RSS after load (may include load transient)"
        self.tight = False

    def start(self) -> None:
        if self.device.type == "cuda":
            sync_device(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.tight = self.isolated and mallopt(*TIGHT_MALLOC)  # never retune a host process
        if self.tight and "mmap threshold" not in self.method:
            self.method += ", glibc mmap threshold 64 KiB"
        gc.collect()
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.base = proc_status_kb("VmRSS") * 1024 if proc_status_kb("VmRSS") else 0
        if can_reset_hwm():
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def stop(self) -> None:
        """Back to thresholds like glibc's dynamic steady state for the timed part."""
        if self.tight:
            mallopt(*STEADY_MALLOC)

    def peak_increase(self) -> tuple[float, float]:
        """(peak increase MB, baseline MB)."""
        if self.device.type == "cuda":
            sync_device(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif can_reset_hwm():
            peak = proc_status_kb("VmHWM") * 1024
        else:
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        return (peak - self.base) / _MB, self.base / _MB
