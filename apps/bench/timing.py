"""Wall-clock timing that waits for the device, the machine's matrix-product limit, and the section statistics."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer or a memory reading sees it done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock seconds per call, and process CPU seconds per call (all threads; a noisy-machine diagnostic)."""
    for _ in range(warmup):
        fn()
    sync_device(device)
    times, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        sync_device(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return times, cpu


def matmul_limit(m: int, k: int, n: int, device: torch.device, min_time: float = 0.3,
                 dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a plain ``[m, k] x [k, n]`` product in ``dtype`` (the sections' autocast dtype): the practical
    GEMM limit of the machine right now."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device, dtype)
    b = torch.randn(k, n, generator=gen).to(device, dtype)
    for _ in range(2):
        torch.mm(a, b)
    sync_device(device)
    samples, spent = [], 0.0
    while len(samples) < 3 or (spent < min_time and len(samples) < 50):
        start = time.perf_counter()
        torch.mm(a, b)
        sync_device(device)
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return 2 * m * k * n / statistics.median(samples)


def section_stats(timing: tuple[list[float], list[float]], items: int, flops: int, limit: float) -> dict[str, Any]:
    """The JSON row of one section: times, throughput, achieved FLOP/s and efficiency against ``limit``."""
    times, cpu = timing
    median = statistics.median(times)
    return {
        "batch": items, "times_s": [round(t, 5) for t in times], "median_s": median, "min_s": min(times),
        "cpu_s": statistics.median(cpu),
        "items_per_s": items / median, "gflop": flops / 1e9, "gflop_per_s": flops / median / 1e9,
        "matmul_gflop_per_s": limit / 1e9, "efficiency": flops / median / limit,
    }


def profile_table(step: Callable[[], Any], device: torch.device, rows: int) -> str:
    """The top ``rows`` ops of one call of ``step`` by self time, with the GEMM / attention / other split."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync_device(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    share = {"GEMM": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::mkldnn_convolution",
                      "aten::convolution_backward"), "attention": ("scaled_dot_product",)}
    parts = {name: sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
             for name, keys in share.items()}
    summary = (f"self CPU time by kind: GEMM+conv {parts['GEMM']:.1%}, fused attention {parts['attention']:.1%}, "
               f"everything else {1 - sum(parts.values()):.1%} (elementwise, copies, LayerNorm, optimizer)")
    return summary + "\n" + events.table(sort_by=sort, row_limit=rows)
