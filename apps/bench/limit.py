"""The benchmark's matmul limit: an upper bound on the FLOP/s a section could reach, measured beside it.

On a shared machine a single GEMM sample reads low whenever another process holds a core, and an efficiency
against a low limit exceeds 1.0 (a run printed 1.12 and 1.40 against a median of samples spread over 118.7-176.9
GFLOP/s). So the limit is the best of samples taken right before and after each section, their spread is
reported, and an efficiency above 1.0 is never printed: the row is flagged if it still beats a re-measurement.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LimitSampler:
    """Samples ``measure()`` (FLOP/s of a plain GEMM) beside each section and sets its efficiency."""

    def __init__(self, measure: Callable[[], float], per_side: int = 3, retries: int = 5) -> None:
        self.measure, self.per_side, self.retries = measure, per_side, retries
        self.before_samples: list[float] = []
        self.all_samples: list[float] = []

    def _take(self, count: int) -> list[float]:
        samples = [self.measure() for _ in range(count)]
        self.all_samples += samples
        return samples

    def before(self) -> float:
        """Samples taken just before a section; returns their best (a provisional limit)."""
        self.before_samples = self._take(self.per_side)
        return max(self.before_samples)

    def finish(self, stats: dict[str, Any]) -> None:
        """Samples after the section, then limit = best of all beside it; efficiency <= 1.0 or flagged."""
        samples = self.before_samples + self._take(self.per_side)
        if stats["gflop_per_s"] * 1e9 > max(samples):
            samples += self._take(self.retries)
        apply_limit(stats, samples)


def apply_limit(stats: dict[str, Any], samples: list[float]) -> None:
    """Sets the limit fields of one section's stats from its matmul samples (FLOP/s)."""
    best, worst = max(samples), min(samples)
    achieved = stats["gflop_per_s"] * 1e9
    stats["matmul_gflop_per_s"] = best / 1e9
    stats["matmul_samples_gflop_per_s"] = [round(s / 1e9, 1) for s in samples]
    stats["matmul_spread"] = (best - worst) / best  # 0: steady machine; large: contended, limit uncertain
    if achieved > best:
        stats["efficiency"] = None
        stats["efficiency_flag"] = (f"section ran at {achieved / 1e9:.1f} GFLOP/s, above every matmul sample "
                                    f"(best {best / 1e9:.1f}): the limit is under-measured, no efficiency given")
    else:
        stats["efficiency"] = achieved / best


def efficiency_cell(stats: dict[str, Any]) -> str:
    """The table's efficiency column: the value, or 'flag' where the limit was under-measured."""
    return "flag" if stats.get("efficiency") is None else f"{stats['efficiency']:.2f}"


def limit_note(stats: dict[str, Any]) -> str:
    """Spread of the section's matmul samples, and the flag where there is one."""
    if "matmul_spread" not in stats:
        return ""
    note = f"limit spread {stats['matmul_spread']:.0%} over {len(stats['matmul_samples_gflop_per_s'])} samples"
    return note + (f"; {stats['efficiency_flag']}" if stats.get("efficiency_flag") else "")
