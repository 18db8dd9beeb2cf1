"""Leak suspects: classes whose objects keep accumulating, census after census.

    from otel_memory.guards.leaks import LeakDetector, report_suspect

    detector = LeakDetector(snapshots=3)
    for census in censuses:                       # e.g. each taken right after a full gc
        for suspect in detector.observe(census):   # classes that just became suspects
            report_suspect(suspect)

The detector only sees what it is fed, and applies the rules below. The
:class:`~.profiler.Profiler` runs two: one fed censuses taken right after a full
(generation 2) collection, so unreachable cycles, which that collection freed, never count; and
one fed every census with ``confirm=True``, whose candidates become suspects only once the
:mod:`~.reachability` check ties their new instances to a root (``confirm(name,
path)``), so garbage never counts there either and a leak is named without waiting for the
host's full collection. A class is a candidate only when all of these hold:

- **Sustained**: its count grew in each of the last ``snapshots`` censuses (a flat or falling
  census resets the streak). ``before`` is its count when the streak began (0 for a class
  absent from the previous census: a leak of a class that had no instance yet).
- **Large**: it gained at least ``min_growth`` (1,000) objects and at least ``min_ratio`` (20 %)
  of ``before`` over the streak. In-flight work (a batch of handlers, a request's objects, a
  queue of spans) moves classes by tens to hundreds of objects and then drops back; the leak this
  exists for gains thousands of objects a second, tens of thousands per snapshot, 10-100x the
  bar. 1,000 objects of ~100 B is ~100 KB: less is not worth an alert. The ratio is taken from
  the start of the streak, so a class with a large steady population drifting with load is not a
  suspect, while a real leak keeps its streak and eventually passes 20 % whatever its base.
- **Not ours**: classes of ``otel_memory`` and ``opentelemetry`` (SDK, exporters,
  instrumentations: spans in export queues, aggregations, exemplar reservoirs) never are.
- **Generic types need strong evidence.** Builtins and the standard library's plumbing
  (``dict``, ``list``, ``collections.defaultdict``, ``collections.deque``, locks, weakrefs,
  asyncio futures...) are what every class's work is made of, the SDK's included. Such a type is
  a suspect only with 10x the bar (10,000 objects, 50 %) *and* that much growth left over after
  subtracting, census by census, what every specific class (ours and the SDK's included) gained
  meanwhile: a leaking ``Message`` that owns a list makes ``list`` grow as much, and only
  ``Message`` is named. A module-level dict of plain dicts is still caught.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import _logs
from opentelemetry._logs import LoggerProvider, SeverityNumber

from otel_memory.activity.census import HeapCensus
from otel_memory.base.version import __version__

PROFILER_LOGGER = "memory_profiler"
"""The stdlib logger of the snapshot log and of leak warnings."""

LEAK_EVENT_NAME = "otel_memory.leak_suspect"
"""``event_name`` of the OpenTelemetry log record sent for each new suspect."""

ATTR_PYTHON_TYPE = "python.type"
ATTR_GROWTH_STREAK = "python.heap.growth_streak"
ATTR_COUNT_BEFORE = "python.heap.objects.before"
ATTR_COUNT_NOW = "python.heap.objects.now"
ATTR_GROWTH = "python.heap.objects.growth"
ATTR_LEAK_PATH = "otel_memory.leak.path"
"""The chain of references from a root to one new instance (string[], root first)."""

MIN_GROWTH = 1_000
"""Objects a class must gain over its streak to be a suspect."""
MIN_RATIO = 0.2
"""Growth over the streak relative to the count when it began."""
GENERIC_FACTOR = 10
"""How much more a generic type must gain (unexplained) than :data:`MIN_GROWTH`."""
GENERIC_MIN_RATIO = 0.5
"""The relative bar for generic types."""

OWN_MODULES = ("otel_memory", "opentelemetry")
"""Classes from these packages are never suspects: the monitor's and the SDK's own work."""
GENERIC_MODULES = (
    "collections",
    "_collections",
    "threading",
    "_thread",
    "queue",
    "_queue",
    "weakref",
    "_weakref",
    "_weakrefset",
    "asyncio",
    "_asyncio",
    "concurrent.futures",
    "contextvars",
    "_contextvars",
    "functools",
    "_functools",
    "types",
)
"""Standard-library plumbing treated like builtins (see the module docstring)."""


class Kind(enum.Enum):
    """How the detector treats a class."""

    SPECIFIC = "specific"
    GENERIC = "generic"
    OWN = "own"


@functools.lru_cache(maxsize=8192)
def kind_of(name: str) -> Kind:
    """The kind of a census class name (``dict``, ``module.QualName``)."""
    if "." not in name:
        return Kind.GENERIC  # builtins are named bare
    if any(name.startswith(module + ".") for module in OWN_MODULES):
        return Kind.OWN
    if any(name.startswith(module + ".") for module in GENERIC_MODULES):
        return Kind.GENERIC
    return Kind.SPECIFIC


@dataclass(frozen=True, slots=True)
class LeakSuspect:
    """A class whose count grew in ``streak`` consecutive snapshots, from ``before`` to ``now``."""

    name: str
    streak: int
    before: int
    now: int
    path: tuple[str, ...] = ()

    @property
    def growth(self) -> int:
        """Objects gained over the streak."""
        return self.now - self.before

    @property
    def per_snapshot(self) -> int:
        """Objects gained per snapshot over the streak (at least 1)."""
        return max(1, self.growth // max(self.streak, 1))


@dataclass(slots=True)
class _Track:
    count: int
    before: int
    streak: int = 0
    unexplained: int = 0  # generic types: growth not matched by specific classes meanwhile


class LeakDetector:
    """Compares each census with the previous one; thread-safe.

    Args:
        snapshots: growing censuses in a row needed (``leak_snapshots``).
        min_growth: objects a specific class must gain over its streak.
        min_ratio: gain relative to the count at the start of the streak.
        confirm: a class that meets the rules is only a *candidate* until :meth:`confirm` is
            called for it (the profiler checks its new instances for reachability first);
            :meth:`observe` returns the unconfirmed candidates at every census.
    """

    def __init__(
        self,
        snapshots: int = 3,
        *,
        min_growth: int = MIN_GROWTH,
        min_ratio: float = MIN_RATIO,
        confirm: bool = False,
    ) -> None:
        if snapshots < 1:
            raise ValueError(f"snapshots must be >= 1, got {snapshots}")
        self.snapshots = snapshots
        self.min_growth = min_growth
        self.min_ratio = min_ratio
        self.needs_confirmation = confirm
        self._tracks: dict[str, _Track] = {}
        self._flagged: set[str] = set()
        self._paths: dict[str, tuple[str, ...]] = {}
        self._seen = False  # a census was observed: classes new after it grew from 0
        self._lock = threading.Lock()

    def observe(self, census: HeapCensus) -> list[LeakSuspect]:
        """Feed the next census; returns the classes that became suspects with it."""
        return self.observe_counts(census.counts)

    def observe_counts(self, counts: Mapping[str, int]) -> list[LeakSuspect]:
        """Like :meth:`observe`, from plain per-class counts (candidates, with ``confirm``)."""
        new: list[LeakSuspect] = []
        with self._lock:
            old = self._tracks
            first = not self._seen
            self._seen = True
            specific_gain = sum(
                count - old[name].count if name in old else count
                for name, count in counts.items()
                if kind_of(name) is not Kind.GENERIC
                and count > (old[name].count if name in old else 0)
            )
            tracks: dict[str, _Track] = {}
            for name, count in counts.items():
                track = old.get(name)
                if track is None:
                    if first:
                        tracks[name] = _Track(count=count, before=count)
                        continue
                    # absent from the previous census: it grew from 0 (a leak of a class that
                    # had no instance yet counts from its first)
                    track = _Track(count=0, before=0)
                gain = count - track.count
                if gain > 0:
                    track.streak += 1
                    track.unexplained += max(0, gain - specific_gain)
                else:
                    track.streak, track.before, track.unexplained = 0, count, 0
                track.count = count
                tracks[name] = track
                if not self._qualifies(name, track):
                    self._flagged.discard(name)
                    self._paths.pop(name, None)
                elif name not in self._flagged:
                    if not self.needs_confirmation:
                        self._flagged.add(name)
                    new.append(_suspect(name, track))
            self._tracks = tracks  # classes gone from the heap are forgotten
            self._flagged &= tracks.keys()
            for gone in self._paths.keys() - self._flagged:
                del self._paths[gone]
        return sorted(new, key=lambda s: (-s.growth, s.name))

    def confirm(self, name: str, path: tuple[str, ...] = ()) -> LeakSuspect | None:
        """Make a candidate a suspect (held by ``path``); None if it no longer qualifies."""
        with self._lock:
            track = self._tracks.get(name)
            if track is None or not self._qualifies(name, track):
                return None
            self._flagged.add(name)
            self._paths[name] = path
            return _suspect(name, track, path)

    def is_suspect(self, name: str) -> bool:
        """Whether ``name`` is a suspect now."""
        with self._lock:
            return name in self._flagged

    def suspects(self) -> list[LeakSuspect]:
        """Every current suspect, the biggest growth first."""
        with self._lock:
            found = [
                _suspect(name, self._tracks[name], self._paths.get(name, ()))
                for name in self._flagged
            ]
        return sorted(found, key=lambda s: (-s.growth, s.name))

    def _qualifies(self, name: str, track: _Track) -> bool:
        if track.streak < self.snapshots:
            return False
        kind = kind_of(name)
        if kind is Kind.OWN:
            return False
        growth = track.count - track.before
        if kind is Kind.GENERIC:
            return (
                track.unexplained >= GENERIC_FACTOR * self.min_growth
                and growth >= GENERIC_MIN_RATIO * track.before
            )
        return growth >= self.min_growth and growth >= self.min_ratio * track.before


def _suspect(name: str, track: _Track, path: tuple[str, ...] = ()) -> LeakSuspect:
    return LeakSuspect(
        name=name, streak=track.streak, before=track.before, now=track.count, path=path
    )


def describe(suspect: LeakSuspect) -> str:
    """The warning text for one suspect."""
    text = (
        f"Leak suspect: {suspect.name} grew in {suspect.streak} consecutive snapshots: "
        f"{suspect.before:,} -> {suspect.now:,} objects (+{suspect.growth:,})"
    )
    return f"{text}; held by: {' -> '.join(suspect.path)}" if suspect.path else text


def report_suspect(
    suspect: LeakSuspect,
    *,
    logger: logging.Logger | None = None,
    logger_provider: LoggerProvider | None = None,
) -> None:
    """A WARNING on ``memory_profiler`` and an OpenTelemetry log record (Logs Bridge API)."""
    text = describe(suspect)
    (logger or logging.getLogger(PROFILER_LOGGER)).warning(text)
    attributes: dict[str, str | int | list[str]] = {
        ATTR_PYTHON_TYPE: suspect.name,
        ATTR_GROWTH_STREAK: suspect.streak,
        ATTR_COUNT_BEFORE: suspect.before,
        ATTR_COUNT_NOW: suspect.now,
        ATTR_GROWTH: suspect.growth,
    }
    if suspect.path:
        attributes[ATTR_LEAK_PATH] = list(suspect.path)
    now = time.time_ns()
    _logs.get_logger("otel_memory", __version__, logger_provider=logger_provider).emit(
        timestamp=now,
        observed_timestamp=now,
        severity_number=SeverityNumber.WARN,
        severity_text="WARNING",
        body=text,
        event_name=LEAK_EVENT_NAME,
        attributes=attributes,
    )
