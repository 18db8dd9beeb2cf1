"""Bounded chart data from an unbounded stream: min/max-preserving time buckets and task bands.

    from otel_memory.cli.series import Bands, Downsampler

    samples = Downsampler(max_buckets=1000)
    samples.add(t, rss_mb, vms_mb, available_mb)       # once per line, any order
    columns = samples.columns(max_gap=240)             # times, and values per series

Buckets are aligned on multiples of a width that doubles (merging neighbours) whenever there
are more than ``max_buckets`` of them, so memory stays bounded without knowing the time range
in advance. Each bucket keeps, per series, its lowest and its highest point, so spikes survive
downsampling: a series has at most twice ``max_buckets`` points, each at its own time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_memory.cli.taskruns import TaskRun

SERIES = ("rss", "vms", "available")
"""The series :class:`Downsampler` keeps, in the order ``add`` takes them."""

_LOW_IS_WORSE = frozenset({"available"})

# Per bucket: first t, last t, then per series: t of min, min, t of max, max.
_FIRST, _LAST = 0, 1


def _series_slot(series: int) -> int:
    return 2 + 4 * series


@dataclass(frozen=True, slots=True)
class Columns:
    """Chart data: times; per series of :data:`SERIES` one value per time, ``None`` where the
    series has no point; ``gaps``, the rows where every line breaks."""

    times: list[float]
    values: list[list[float | None]]
    gaps: list[int]


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

    def columns(self, max_gap: float) -> Columns:
        """The buckets as aligned chart columns. A bucket gives one row per distinct time of
        its series' extremes, each at its true time; a series has ``None`` at the rows of the
        others. A row of ``None`` (listed in ``gaps``) stands wherever no line was written for
        longer than ``max_gap`` seconds (the process was not running)."""
        times: list[float] = []
        values: list[list[float | None]] = [[] for _ in SERIES]
        gaps: list[int] = []
        previous_last: float | None = None
        for index in sorted(self._buckets):
            bucket = self._buckets[index]
            if previous_last is not None and bucket[_FIRST] - previous_last > max(max_gap, 0.0):
                gaps.append(len(times))
                times.append((previous_last + bucket[_FIRST]) / 2)
                for column in values:
                    column.append(None)
            previous_last = bucket[_LAST]
            extremes = [_extremes(bucket, series) for series in range(len(SERIES))]
            for t in sorted({t for points in extremes for t in points}):
                times.append(t)
                for column, points in zip(values, extremes, strict=True):
                    column.append(points.get(t))
        return Columns(times, values, gaps)


def _extremes(bucket: list[float], series: int) -> dict[float, float]:
    """Time -> value of a series' lowest and highest point in a bucket; when both fall in the
    same second (two lines of one second), the worse of the two."""
    slot = _series_slot(series)
    low_t, low, high_t, high = bucket[slot : slot + 4]
    if low_t != high_t:
        return {low_t: low, high_t: high}
    return {low_t: low if SERIES[series] in _LOW_IS_WORSE else high}


def _merge(into: list[float], other: list[float]) -> None:
    into[_FIRST] = min(into[_FIRST], other[_FIRST])
    into[_LAST] = max(into[_LAST], other[_LAST])
    for slot in range(2, len(into), 4):
        if other[slot + 1] < into[slot + 1]:
            into[slot], into[slot + 1] = other[slot], other[slot + 1]
        if other[slot + 3] > into[slot + 3]:
            into[slot + 2], into[slot + 3] = other[slot + 2], other[slot + 3]


OTHER_TASKS = "(other tasks)"
"""The name bands of rare task names share once there are too many bands to draw."""
_NAMED_TASKS = 20


@dataclass(frozen=True, slots=True)
class Band:
    """A task running from ``start`` to ``end`` (seconds on the analyzer's axis).

    Args:
        task: the task name.
        start: when it started.
        end: when it ended; ``start`` when it never did (``reason`` ``"unfinished"``).
        reason: how it ended (:class:`~otel_memory.cli.taskruns.TaskRun`'s ``end_reason``),
            empty for merged bands.
        runs: how many runs this band stands for (more than one once bands are merged).
    """

    task: str
    start: float
    end: float
    reason: str = ""
    runs: int = 1


class Bands:
    """Task runs to draw, at most about ``limit``. When there are more, time is cut into
    buckets whose width doubles (as :class:`Downsampler` does) and the runs of one task
    starting in one bucket become one band, so that the bands stay spread over the whole
    chart; if one band per task is still too many, the rarest task names share one name,
    :data:`OTHER_TASKS`."""

    def __init__(self, limit: int = 1000, initial_width: float = 60.0) -> None:
        self.limit = limit
        self.width = initial_width
        self._bands: list[Band] = []

    def add(self, task: str, start: float, end: float, reason: str = "") -> None:
        """Record one interval."""
        self._bands.append(Band(task, start, max(start, end), reason))
        if len(self._bands) > 2 * self.limit:
            self._compact()

    def add_run(self, run: TaskRun) -> None:
        """Record one task run; one that never ended is drawn at its start."""
        end = run.start if run.end is None else run.end
        self.add(run.name, run.start, end, run.end_reason)

    def _compact(self) -> None:
        span = max(b.end for b in self._bands) - min(b.start for b in self._bands)
        self._bands = _merged(self._bands, self.width)
        while len(self._bands) > self.limit:
            if self.width > span:  # one band per name already: too many names
                self._bands = _fewer_names(self._bands)
            self.width *= 2
            self._bands = _merged(self._bands, self.width)

    def bands(self) -> list[Band]:
        """The runs (merged if there were many), by start time."""
        if len(self._bands) > self.limit:
            self._compact()
        return sorted(self._bands, key=lambda b: (b.start, b.task))


def _merged(bands: list[Band], width: float) -> list[Band]:
    """One band per task and bucket of ``width`` seconds (by start time)."""
    merged: dict[tuple[str, int], Band] = {}
    for band in bands:
        key = (band.task, math.floor(band.start / width))
        into = merged.get(key)
        merged[key] = band if into is None else Band(
            band.task,
            min(into.start, band.start),
            max(into.end, band.end),
            into.reason if into.reason == band.reason else "",
            into.runs + band.runs,
        )  # fmt: skip
    return list(merged.values())


def _fewer_names(bands: list[Band]) -> list[Band]:
    """Keep the most frequent task names; the others become :data:`OTHER_TASKS`."""
    counts = Counter(b.task for b in bands)
    kept = {name for name, _ in counts.most_common(_NAMED_TASKS)}
    return [b if b.task in kept else replace(b, task=OTHER_TASKS) for b in bands]
