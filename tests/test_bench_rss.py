"""The load bench's memory figures: growth is measured inside the measured window only, and what
the warm-up added is reported apart (never dropped)."""

from __future__ import annotations

from bench._reliability.procs import RssSampler
from bench.load import _warmup_growth

MB = 2**20


def sampler(points: list[tuple[float, float]]) -> RssSampler:
    rss = RssSampler({"worker": 0})
    rss.samples["worker"] = [(t, int(mb * MB)) for t, mb in points]
    return rss


def test_growth_is_taken_inside_the_measured_window_and_the_warm_up_is_reported_apart():
    # 100 MB idle, +50 MB during a 20 s warm-up, then flat for 60 s, then +6 MB in the last 20 s.
    points = [(float(t), 100.0 + min(t, 20) * 2.5 + (6.0 if t > 60 else 0.0)) for t in range(0, 81)]
    rss = sampler(points)
    assert rss.growth_mb("worker", 20.0) > 25  # from the first request: the warm-up's rise is in it
    measured = rss.growth_mb("worker", 20.0, since=20.0)
    assert 5.5 <= measured <= 6.5  # only the late growth
    assert abs(_warmup_growth(rss, "worker", 0.0, 20.0) - 50.0) < 3.0
    assert rss.peak_mb("worker") == 156.0


def test_a_flat_measured_window_shows_no_growth_and_the_trace_is_every_step():
    rss = sampler([(t * 0.5, 200.0) for t in range(0, 121)])
    assert rss.growth_mb("worker", 20.0, since=0.0) == 0.0
    trace = rss.trace_mb("worker", step=10.0)
    assert [t for t, _ in trace] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]  # 60.0 is the last sample too
    assert [t for t, _ in sampler([(0.0, 1.0), (6.0, 1.0), (8.0, 2.0)]).trace_mb("worker", 5.0)] == [0.0, 6.0, 8.0]
    assert {mb for _, mb in trace} == {200.0}
