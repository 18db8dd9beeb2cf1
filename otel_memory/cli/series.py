"""Bounded chart data from an unbounded stream: min/max-preserving time buckets and task bands.

    from otel_memory.cli.series import Bands, Downsampler

    samples = Downsampler(max_buckets=1000)
    samples.add(t, rss_mb, vms_mb, available_mb)       # once per line, any order
    points = samples.points(series=0, max_gap=240)     # [[(t, mb), ...], ...] line segments

Buckets are aligned on multiples of a width that doubles (merging neighbours) whenever there
are more than ``max_buckets`` of them, so memory stays bounded without knowing the time range
in advance. Each bucket keeps, per series, its lowest and its highest point, so spikes survive
downsampling: a series has at most twice ``max_buckets`` points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SERIES = ("rss", "vms", "available")
"""The series :class:`Downsampler` keeps, in the order ``add`` takes them."""

# Per bucket: first t, last t, then per series: t of min, min, t of max, max.
_FIRST, _LAST = 0, 1


def _series_slot(series: int) -> int:
    return 2 + 4 * series


class Downsampler:
    """At most ``max_buckets`` buckets per chart, each holding min and max of every series."""

    def __init__(self, max_buckets: int = 1000, initial_width: float = 1.0) -> None:
        if max_buckets < 2:
            raise ValueError("max_buckets must be >= 2")
        self.max_buckets = max_buckets
        self.width = initial_width
        self._buckets: dict[int, list[float]] = {}
        self.count = 0
        self.maximum = -math.inf

    def add(self, t: float, *values: float) -> None:
        """Account for one line: its time and one value per series in :data:`SERIES` order."""
        self.count += 1
        index = math.floor(t / self.width)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = [t, t]
            for value in values:
                bucket.extend((t, value, t, value))
            self._buckets[index] = bucket
            if len(self._buckets) > self.max_buckets:
                self._coarsen()
        else:
            if t < bucket[_FIRST]:  # noqa: PLR1730 -- cheaper than min() per line
                bucket[_FIRST] = t
            if t > bucket[_LAST]:  # noqa: PLR1730
                bucket[_LAST] = t
            slot = 2
            for value in values:
                if value < bucket[slot + 1]:
                    bucket[slot], bucket[slot + 1] = t, value
                if value > bucket[slot + 3]:
                    bucket[slot + 2], bucket[slot + 3] = t, value
                slot += 4
        for value in values:
            if value > self.maximum:  # noqa: PLR1730
                self.maximum = value

    def _coarsen(self) -> None:
        """Double the width until the buckets fit again, merging neighbours."""
        while len(self._buckets) > self.max_buckets:
            self.width *= 2
            merged: dict[int, list[float]] = {}
            for index, bucket in self._buckets.items():
                into = merged.get(index // 2)
                if into is None:
                    merged[index // 2] = bucket
                else:
                    _merge(into, bucket)
            self._buckets = merged

    @property
    def time_range(self) -> tuple[float, float] | None:
        """First and last time seen, or ``None`` before any line."""
        if not self._buckets:
            return None
        return (
            min(b[_FIRST] for b in self._buckets.values()),
            max(b[_LAST] for b in self._buckets.values()),
        )

    def points(self, series: int, max_gap: float) -> list[list[tuple[float, float]]]:
        """The series as line segments of ``(t, value)``, split where no line was written for
        longer than ``max_gap`` seconds (the process was not running)."""
        slot = _series_slot(series)
        segments: list[list[tuple[float, float]]] = []
        previous_last: float | None = None
        for index in sorted(self._buckets):
            bucket = self._buckets[index]
            if previous_last is None or bucket[_FIRST] - previous_last > max(max_gap, 0.0):
                segments.append([])
            low = (bucket[slot], bucket[slot + 1])
            high = (bucket[slot + 2], bucket[slot + 3])
            segments[-1].extend(sorted({low, high}))
            previous_last = bucket[_LAST]
        return segments


def _merge(into: list[float], other: list[float]) -> None:
    into[_FIRST] = min(into[_FIRST], other[_FIRST])
    into[_LAST] = max(into[_LAST], other[_LAST])
    for slot in range(2, len(into), 4):
        if other[slot + 1] < into[slot + 1]:
            into[slot], into[slot + 1] = other[slot], other[slot + 1]
        if other[slot + 3] > into[slot + 3]:
            into[slot + 2], into[slot + 3] = other[slot + 2], other[slot + 3]


@dataclass(frozen=True, slots=True)
class Band:
    """A task running from ``start`` to ``end`` (seconds on the analyzer's axis)."""

    task: str
    start: float
    end: float


class Bands:
    """START..END intervals, at most about ``limit``: when there are more, intervals of the same
    task closer than a growing gap are merged (they would touch on the chart anyway)."""

    def __init__(self, limit: int = 500, initial_gap: float = 60.0) -> None:
        self.limit = limit
        self.gap = initial_gap
        self._bands: list[Band] = []

    def add(self, task: str, start: float, end: float) -> None:
        """Record one interval."""
        self._bands.append(Band(task, start, max(start, end)))
        if len(self._bands) > 2 * self.limit:
            self._compact()

    def _compact(self) -> None:
        while True:
            self._bands = _merged(self._bands, self.gap)
            if len(self._bands) <= self.limit:
                return
            self.gap *= 2

    def bands(self) -> list[Band]:
        """The intervals (merged if there were many), by start time."""
        if len(self._bands) > self.limit:
            self._compact()
        return sorted(self._bands, key=lambda b: (b.start, b.task))


def _merged(bands: list[Band], gap: float) -> list[Band]:
    result: list[Band] = []
    for band in sorted(bands, key=lambda b: (b.task, b.start)):
        last = result[-1] if result else None
        if last is not None and last.task == band.task and band.start - last.end <= gap:
            result[-1] = Band(last.task, last.start, max(last.end, band.end))
        else:
            result.append(band)
    return result
