"""The one least-squares fit (otel_memory.base.trend)."""

from __future__ import annotations

import pytest

from otel_memory.base.trend import fit, slope_per_hour

T0 = 1_763_280_000.0  # 2025-11-16: epoch-sized times must not lose precision


def test_slope_is_units_per_hour():
    points = [(T0 + 3600.0 * h, 100.0 + 2.5 * h) for h in range(10)]
    assert slope_per_hour(points) == pytest.approx(2.5)


def test_slope_of_noisy_points_is_the_least_squares_one():
    # x = 0, 1, 2 h; y = 0, 2, 1: Σ(x-x̄)(y-ȳ) = 1, Σ(x-x̄)² = 2.
    points = [(T0, 0.0), (T0 + 3600.0, 2.0), (T0 + 7200.0, 1.0)]
    assert slope_per_hour(iter(points)) == pytest.approx(0.5)


@pytest.mark.parametrize("points", [[], [(T0, 1.0)], [(T0, 1.0), (T0, 5.0), (T0, 9.0)]])
def test_no_slope_without_two_points_or_time_spread(points):
    assert slope_per_hour(points) is None
    assert fit([t for t, _ in points], [v for _, v in points]) is None


def test_fit_gives_r_squared():
    times = [T0 + 3600.0 * h for h in range(3)]
    found = fit(times, [0.0, 2.0, 1.0])
    assert found is not None
    assert found.slope_per_hour == pytest.approx(0.5)
    assert found.r_squared == pytest.approx(0.25)  # r = 1 / sqrt(2 * 2)
    assert found.points == 3
    flat = fit(times, [7.0, 7.0, 7.0])
    assert flat is not None
    assert (flat.slope_per_hour, flat.r_squared) == (0.0, 0.0)
