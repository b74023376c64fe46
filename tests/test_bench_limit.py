"""apps/bench/limit.py: the matmul limit is the best sample beside a section; efficiency never above 1.0."""
from apps.bench.limit import LimitSampler, apply_limit, efficiency_cell


def sampler_of(values):
    values = iter(v * 1e9 for v in values)
    return LimitSampler(lambda: next(values), per_side=3, retries=2)


def test_limit_is_the_best_sample_before_and_after_the_section():
    sampler = sampler_of([100, 150, 120, 90, 110, 130])
    assert sampler.before() == 150e9
    stats = {"gflop_per_s": 120.0}
    sampler.finish(stats)
    assert stats["matmul_gflop_per_s"] == 150 and stats["efficiency"] == 120 / 150
    assert stats["matmul_samples_gflop_per_s"] == [100, 150, 120, 90, 110, 130]
    assert stats["matmul_spread"] == (150 - 90) / 150
    assert len(sampler.all_samples) == 6


def test_a_section_above_every_sample_is_re_measured_then_flagged():
    sampler = sampler_of([100, 110, 105, 100, 100, 100, 250, 0])
    sampler.before()
    stats = {"gflop_per_s": 200.0}
    sampler.finish(stats)  # 200 > 110: two more samples, 250 among them
    assert stats["efficiency"] == 200 / 250 and stats["matmul_gflop_per_s"] == 250
    flagged = {"gflop_per_s": 300.0}
    apply_limit(flagged, [100e9, 250e9])
    assert flagged["efficiency"] is None and "under-measured" in flagged["efficiency_flag"]
    assert efficiency_cell(flagged) == "flag" and efficiency_cell(stats) == "0.80"
