"""Leak suspects (classes that keep growing) and the idle RSS trend.

    from otel_memory.leaks import LeakDetector, slope_per_hour

    detector = LeakDetector(snapshots=3)
    for census in censuses:                      # consecutive heap censuses
        for suspect in detector.observe(census):  # classes that just became suspects
            report_suspect(suspect)
    slope_per_hour([(t0, 230.1), (t1, 231.0)])   # least-squares slope, units per hour

A class is a *suspect* when its object count grew in ``snapshots`` consecutive censuses (each
census counted more objects of that class than the one before it). A single steady count or a
drop resets its streak. The idle trend is the least-squares slope of RSS over samples taken
while no task is open, so work that frees its memory afterwards does not look like a leak.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import _logs
from opentelemetry._logs import LoggerProvider, SeverityNumber

from otel_memory.census import HeapCensus
from otel_memory.version import __version__

PROFILER_LOGGER = "memory_profiler"
"""The stdlib logger of the snapshot log and of leak warnings."""

LEAK_EVENT_NAME = "otel_memory.leak_suspect"
"""``event_name`` of the OpenTelemetry log record sent for each new suspect."""

ATTR_PYTHON_TYPE = "python.type"
ATTR_GROWTH_STREAK = "python.heap.growth_streak"
ATTR_COUNT_BEFORE = "python.heap.objects.before"
ATTR_COUNT_NOW = "python.heap.objects.now"
ATTR_GROWTH = "python.heap.objects.growth"

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class LeakSuspect:
    """A class whose count grew in ``streak`` consecutive snapshots, from ``before`` to ``now``."""

    name: str
    streak: int
    before: int
    now: int

    @property
    def growth(self) -> int:
        """Objects gained over the streak."""
        return self.now - self.before


@dataclass(slots=True)
class _Track:
    count: int
    before: int
    streak: int = 0


class LeakDetector:
    """Compares each census with the previous one; thread-safe."""

    def __init__(self, snapshots: int = 3) -> None:
        if snapshots < 1:
            raise ValueError(f"snapshots must be >= 1, got {snapshots}")
        self.snapshots = snapshots
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()

    def observe(self, census: HeapCensus) -> list[LeakSuspect]:
        """Feed the next census; returns the classes that became suspects with it."""
        return self.observe_counts(census.counts)

    def observe_counts(self, counts: Mapping[str, int]) -> list[LeakSuspect]:
        """Like :meth:`observe`, from plain per-class counts."""
        new: list[LeakSuspect] = []
        with self._lock:
            tracks: dict[str, _Track] = {}
            for name, count in counts.items():
                track = self._tracks.get(name)
                if track is None:
                    tracks[name] = _Track(count=count, before=count)
                    continue
                if count > track.count:
                    track.streak += 1
                else:
                    track.streak, track.before = 0, count
                track.count = count
                tracks[name] = track
                if track.streak == self.snapshots:
                    new.append(self._suspect(name, track))
            self._tracks = tracks  # classes gone from the heap are forgotten
        return sorted(new, key=lambda s: (-s.growth, s.name))

    def suspects(self) -> list[LeakSuspect]:
        """Every current suspect, the biggest growth first."""
        with self._lock:
            found = [
                self._suspect(name, track)
                for name, track in self._tracks.items()
                if track.streak >= self.snapshots
            ]
        return sorted(found, key=lambda s: (-s.growth, s.name))

    @staticmethod
    def _suspect(name: str, track: _Track) -> LeakSuspect:
        return LeakSuspect(name=name, streak=track.streak, before=track.before, now=track.count)


def describe(suspect: LeakSuspect) -> str:
    """The warning text for one suspect."""
    return (
        f"Leak suspect: {suspect.name} grew in {suspect.streak} consecutive snapshots: "
        f"{suspect.before:,} -> {suspect.now:,} objects (+{suspect.growth:,})"
    )


def report_suspect(
    suspect: LeakSuspect,
    *,
    logger: logging.Logger | None = None,
    logger_provider: LoggerProvider | None = None,
) -> None:
    """A WARNING on ``memory_profiler`` and an OpenTelemetry log record (Logs Bridge API)."""
    text = describe(suspect)
    (logger or logging.getLogger(PROFILER_LOGGER)).warning(text)
    now = time.time_ns()
    _logs.get_logger("otel_memory", __version__, logger_provider=logger_provider).emit(
        timestamp=now,
        observed_timestamp=now,
        severity_number=SeverityNumber.WARN,
        severity_text="WARNING",
        body=text,
        event_name=LEAK_EVENT_NAME,
        attributes={
            ATTR_PYTHON_TYPE: suspect.name,
            ATTR_GROWTH_STREAK: suspect.streak,
            ATTR_COUNT_BEFORE: suspect.before,
            ATTR_COUNT_NOW: suspect.now,
            ATTR_GROWTH: suspect.growth,
        },
    )


def slope_per_hour(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, in value units per hour.

    None with fewer than two points or when all points share one timestamp. The CLI can feed it
    ``(timestamp, rss_mb)`` of ``Idle`` lines to get MB per hour.
    """
    pts = list(points)
    if len(pts) < 2:
        return None
    mean_t = sum(t for t, _ in pts) / len(pts)
    mean_v = sum(v for _, v in pts) / len(pts)
    spread = sum((t - mean_t) ** 2 for t, _ in pts)
    if spread == 0:
        return None
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in pts)
    return covariance / spread * SECONDS_PER_HOUR


class IdleTrend:
    """RSS samples taken while idle (the newest ``max_samples``) and their slope; thread-safe."""

    def __init__(self, max_samples: int = 1440) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add(self, timestamp: float, rss: int) -> None:
        """Record one idle RSS sample (bytes)."""
        with self._lock:
            self._samples.append((timestamp, float(rss)))

    def __len__(self) -> int:
        return len(self._samples)

    def bytes_per_hour(self) -> float | None:
        """The idle RSS slope in bytes per hour, or None with too few samples."""
        with self._lock:
            samples = list(self._samples)
        return slope_per_hour(samples)
