"""The least-squares trend of a value over time: one fit for the live gauge and the CLI.

    from otel_memory.base.trend import fit, slope_per_hour

    slope_per_hour([(t0, 230.1), (t1, 231.0)])   # units per hour, or None
    found = fit(times, values)                   # slope per hour and r², or None

Times are seconds (any origin); the slope comes out in value units per hour. The fit is
:func:`statistics.linear_regression`; nothing else in the package fits a line.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Fit:
    """A least-squares line through ``(seconds, value)`` points.

    Args:
        slope_per_hour: value units gained per hour.
        r_squared: share of the values' variance the line explains (0..1); 0 when the
            values are all equal.
        points: how many points were fitted.
    """

    slope_per_hour: float
    r_squared: float
    points: int


def fit(times: Sequence[float], values: Sequence[float]) -> Fit | None:
    """Fit ``values`` against ``times`` (seconds); None for < 2 points or zero time spread."""
    if len(times) < 2 or len(times) != len(values):
        return None
    try:
        slope, _ = statistics.linear_regression(times, values)
    except statistics.StatisticsError:  # every time equal: no line to draw
        return None
    try:
        r_squared = min(1.0, statistics.correlation(times, values) ** 2)
    except statistics.StatisticsError:  # constant values: a flat line explains nothing
        r_squared = 0.0
    return Fit(slope_per_hour=slope * SECONDS_PER_HOUR, r_squared=r_squared, points=len(times))


def slope_per_hour(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points in units per hour; None if undefined."""
    pairs = list(points)
    if len(pairs) < 2:
        return None
    try:
        slope, _ = statistics.linear_regression([t for t, _ in pairs], [v for _, v in pairs])
    except statistics.StatisticsError:
        return None
    return slope * SECONDS_PER_HOUR
