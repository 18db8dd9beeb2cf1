"""Observable instruments on meter ``otel_memory`` (SPEC v0.2, Metrics): process, system and
limit memory, the heap census, leak suspects, the idle RSS trend and watched collections.

    from otel_memory.sinks.gauges import install_metrics

    handle = install_metrics(config, reader)            # the global meter provider
    handle = install_metrics(config, reader, meter_provider=provider, profiler=profiler,
                             is_idle=lambda: not open_tasks)
    ...
    handle.close()                                      # callbacks report nothing from now on

One memory reading per collection cycle serves every memory instrument, and one heap census
serves both heap gauges (:class:`PerCycle`). The heap gauges report a stable set of classes
(:class:`StableClasses`) so that a dashboard's series do not churn with the census ranking.
Callbacks never raise: a failed reading is logged once on the ``otel_memory`` logger and the cycle
reports nothing for those instruments. Names, units and attributes are listed in
``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_memory.activity import watched
from otel_memory.activity.census import OTHER, ClassStats, HeapCensus, take_census
from otel_memory.base.config import Config
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.memory import MemoryReading
from otel_memory.base.trend import slope_per_hour
from otel_memory.base.version import __version__
from otel_memory.kernel.readings import PsutilReadingSource, ReadingSource
from otel_memory.sinks.forksafe import hold_collections_across_fork
from otel_memory.sinks.histograms import (
    METER_NAME,
    OTEL_MEMORY_TASK_RSS_GROWTH,
    OTEL_MEMORY_TASK_RSS_RETAINED,
)

PROCESS_MEMORY_USAGE = "process.memory.usage"
"""RSS, bytes (semantic conventions: observable up-down counter)."""
PROCESS_MEMORY_VIRTUAL = "process.memory.virtual"
"""VMS, bytes (semantic conventions: observable up-down counter)."""
SYSTEM_MEMORY_LINUX_AVAILABLE = "system.memory.linux.available"
"""The host's ``MemAvailable``, bytes (semantic conventions; Linux only)."""
OTEL_MEMORY_LIMIT = "otel_memory.limit"
"""The effective memory limit (smallest of host total and cgroup limits), bytes."""
OTEL_MEMORY_AVAILABLE = "otel_memory.available"
"""Effective available: host available capped by the room left under the cgroup limit, bytes."""
OTEL_MEMORY_FREE_RATIO = "otel_memory.free_ratio"
"""Effective available / effective limit, 0..1."""
OTEL_MEMORY_IDLE_TREND = "otel_memory.idle_trend"
"""Least-squares slope of RSS sampled while no task is open, bytes per hour."""
OTEL_MEMORY_EVENTS_DROPPED = "otel_memory.events.dropped"
"""OTLP log records of task lines dropped because the event writer fell behind (SPEC v0.3)."""
PYTHON_HEAP_OBJECTS = "python.heap.objects"
"""GC-tracked objects per class (a stable set of classes, plus ``other``)."""
PYTHON_HEAP_SIZE = "python.heap.size"
"""Shallow bytes (``sys.getsizeof``) per class, same classes as ``python.heap.objects``."""
PYTHON_HEAP_LEAK_SUSPECTS = "python.heap.leak_suspects"
"""Number of classes the leak detector currently suspects."""
PYTHON_HEAP_GROWTH_STREAK = "python.heap.growth_streak"
"""Consecutive growing snapshots of each suspect class."""
PYTHON_COLLECTION_SIZE = "python.collection.size"
"""``len()`` of each watched collection."""
PYTHON_ASYNCIO_TASKS = "python.asyncio.tasks"
"""Pending tasks of each watched asyncio loop."""

METRIC_NAMES = (
    PROCESS_MEMORY_USAGE,
    PROCESS_MEMORY_VIRTUAL,
    SYSTEM_MEMORY_LINUX_AVAILABLE,
    OTEL_MEMORY_LIMIT,
    OTEL_MEMORY_AVAILABLE,
    OTEL_MEMORY_FREE_RATIO,
    OTEL_MEMORY_IDLE_TREND,
    OTEL_MEMORY_EVENTS_DROPPED,
    OTEL_MEMORY_TASK_RSS_GROWTH,
    OTEL_MEMORY_TASK_RSS_RETAINED,
    PYTHON_HEAP_OBJECTS,
    PYTHON_HEAP_SIZE,
    PYTHON_HEAP_LEAK_SUSPECTS,
    PYTHON_HEAP_GROWTH_STREAK,
    PYTHON_COLLECTION_SIZE,
    PYTHON_ASYNCIO_TASKS,
)
"""Every instrument this module can register."""

ATTR_PYTHON_TYPE = "python.type"
ATTR_COLLECTION_NAME = "collection.name"
ATTR_ASYNCIO_LOOP = "asyncio.loop"
ATTR_LIMIT_SOURCE = "otel_memory.limit.source"

STABLE_CLASS_HOLD = 10
"""Censuses a reported class must stay outside the top before another class may take its place."""

SYSTEM_METRICS_MODULE = "opentelemetry.instrumentation.system_metrics"

_log = logging.getLogger("otel_memory")
_T = TypeVar("_T")


class Suspect(Protocol):
    """A leak suspect as the gauges see it."""

    @property
    def name(self) -> str: ...

    @property
    def streak(self) -> int: ...


class CensusFeed(Protocol):
    """A running heap profiler: hands each census to listeners and knows the suspects."""

    def suspects(self) -> Sequence[Suspect]:
        """The current leak suspects (of both of the profiler's trends)."""
        ...

    def add_listener(self, listener: Callable[[HeapCensus], None]) -> None: ...

    def remove_listener(self, listener: Callable[[HeapCensus], None]) -> None: ...
_Callback = Callable[[CallbackOptions], Iterable[Observation]]


class PerCycle(Generic[_T]):
    """One value per collection cycle, shared by several consumers (instruments).

    A consumer gets the current value unless it already had it, in which case a new cycle has
    begun and a fresh value is produced. So each instrument sees each value once, and the value
    is produced once per cycle whatever order the SDK calls the callbacks in. ``offer`` lets a
    producer elsewhere (the profiler's census) hand in a value for the next cycle.
    """

    def __init__(self, produce: Callable[[], _T]) -> None:
        self._produce = produce
        self._lock = threading.Lock()
        self._value: _T | None = None
        self._has_value = False
        self._served: set[str] = set()
        self.produced = 0

    def offer(self, value: _T) -> None:
        """Make ``value`` the current value, unseen by every consumer."""
        with self._lock:
            self._value, self._has_value, self._served = value, True, set()

    def get(self, consumer: str) -> _T:
        """The current value, or a new one if ``consumer`` has already seen the current one."""
        with self._lock:
            if not self._has_value or consumer in self._served:
                self._value, self._has_value, self._served = self._produce(), True, set()
                self.produced += 1
            self._served.add(consumer)
            return self._value  # type: ignore[return-value]


class StableClasses:
    """The classes the heap gauges report: a bounded set that changes as little as possible.

    Each census's candidates are its top ``top_n`` classes by count and by size. A candidate
    joins the set while there is room (``capacity``, default ``2 * top_n``); a class in the set
    stays there while it exists, so its series never flickers with the ranking. When the set is
    full, a new candidate replaces only a class that has been outside the top for ``hold``
    censuses in a row (the longest first); otherwise it is folded into ``other``. Thread-safe.
    """

    def __init__(
        self, top_n: int, capacity: int | None = None, hold: int = STABLE_CLASS_HOLD
    ) -> None:
        self.top_n = max(top_n, 1)
        self.capacity = max(capacity if capacity is not None else 2 * self.top_n, 1)
        self.hold = max(hold, 1)
        self._last_top: dict[str, int] = {}  # reported class -> census number it was last top
        self._census_no = 0
        self._lock = threading.Lock()
        self._last: tuple[HeapCensus, list[ClassStats]] | None = None

    @property
    def reported(self) -> frozenset[str]:
        """The classes reported now."""
        with self._lock:
            return frozenset(self._last_top)

    def rows(self, census: HeapCensus) -> list[ClassStats]:
        """The reported classes of ``census`` plus ``other``; the set is updated once per census."""
        with self._lock:
            if self._last is not None and self._last[0] is census:
                return self._last[1]
            self._update(census)
            rows = [census.stats(name) for name in self._last_top]
            rows.sort(key=lambda row: (-row.count, row.name))
            rest_count = census.total_objects - sum(row.count for row in rows)
            rest_size = census.total_size - sum(row.size for row in rows)
            if len(rows) < len(census.counts):
                rows.append(ClassStats(OTHER, rest_count, rest_size))
            self._last = (census, rows)
            return rows

    def _update(self, census: HeapCensus) -> None:
        self._census_no += 1
        now = self._census_no
        for name in [name for name in self._last_top if census.counts.get(name, 0) == 0]:
            del self._last_top[name]  # the class is gone from the heap
        candidates = [row.name for row in census.top_by_count(self.top_n)]
        candidates += [row.name for row in census.top_by_size(self.top_n)]
        for name in dict.fromkeys(candidates):
            if name in self._last_top or len(self._last_top) < self.capacity:
                self._last_top[name] = now
                continue
            stale = min(self._last_top, key=self._last_top.__getitem__)
            if now - self._last_top[stale] > self.hold:
                del self._last_top[stale]
                self._last_top[name] = now


class _IdleSamples:
    """RSS samples taken while idle (the newest ``max_samples``); thread-safe."""

    def __init__(self, max_samples: int = 1440) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add(self, timestamp: float, rss: int) -> None:
        with self._lock:
            self._samples.append((timestamp, float(rss)))

    def __len__(self) -> int:
        return len(self._samples)

    def bytes_per_hour(self) -> float | None:
        with self._lock:
            samples = list(self._samples)
        return slope_per_hour(samples)


def system_metrics_exports(name: str) -> bool:
    """Whether opentelemetry-instrumentation-system-metrics is instrumented and exports ``name``.

    Asked at collection time, since instrumentors load in any order. The instrumentor is a
    singleton (``BaseInstrumentor.__new__``); its ``_config`` lists the metrics it registered.
    """
    module = sys.modules.get(SYSTEM_METRICS_MODULE)
    if module is None:
        return False
    try:
        instance = getattr(module.SystemMetricsInstrumentor, "_instance", None)
        if instance is None or not instance.is_instrumented_by_opentelemetry:
            return False
        config = getattr(instance, "_config", None)
        return isinstance(config, Mapping) and name in config
    except Exception:  # a future version without these internals: report ours
        return False


class MetricsHandle:
    """What :func:`install_metrics` registered; :meth:`close` turns every callback into a no-op.

    OpenTelemetry cannot unregister instruments, so a closed handle's instruments stay on the
    meter and simply report nothing. A collection cycle under way when it closes (``stop()`` on
    the main thread while the reader's thread collects) still reports whole: the instruments
    that share a cycle's reading or census all report it, or none do, so ``python.heap.size``
    never lacks classes that ``python.heap.objects`` reported.
    """

    def __init__(
        self,
        config: Config,
        reading_source: Callable[[], ReadingSource],
        profiler: CensusFeed | None,
        is_idle: Callable[[], bool] | None,
        take: Callable[[], HeapCensus],
    ) -> None:
        self._config = config
        self._source = reading_source
        self._profiler = profiler
        self._is_idle = is_idle
        self._closed = threading.Event()
        self._warn_once = WarnOnce(_log)
        self.idle_trend = _IdleSamples()
        self.classes = StableClasses(config.profiling.top_n_classes)
        self.readings: PerCycle[MemoryReading | None] = PerCycle(self._read)
        self.censuses: PerCycle[HeapCensus | None] = PerCycle(
            lambda: None if self.closed else take()
        )
        if profiler is not None:
            profiler.add_listener(self.censuses.offer)
        self.callbacks: dict[str, _Callback] = {
            PROCESS_MEMORY_USAGE: self.semconv_callback(PROCESS_MEMORY_USAGE, lambda r: r.rss),
            PROCESS_MEMORY_VIRTUAL: self.semconv_callback(PROCESS_MEMORY_VIRTUAL, lambda r: r.vms),
            OTEL_MEMORY_LIMIT: self.limit_callback,
            OTEL_MEMORY_AVAILABLE: self.memory_callback(
                OTEL_MEMORY_AVAILABLE, lambda r: r.system_available
            ),
            OTEL_MEMORY_FREE_RATIO: self.memory_callback(
                OTEL_MEMORY_FREE_RATIO, lambda r: r.free_ratio
            ),
            OTEL_MEMORY_IDLE_TREND: self.idle_trend_callback,
            PYTHON_COLLECTION_SIZE: self.collections_callback,
            PYTHON_ASYNCIO_TASKS: self.asyncio_tasks_callback,
        }
        """What this handle reports, by instrument name."""
        if sys.platform.startswith("linux"):
            self.callbacks[SYSTEM_MEMORY_LINUX_AVAILABLE] = self.semconv_callback(
                SYSTEM_MEMORY_LINUX_AVAILABLE,
                lambda r: r.system_available if r.host_available is None else r.host_available,
            )
        if config.profiling.enabled:
            self.callbacks[PYTHON_HEAP_OBJECTS] = self.heap_callback(
                PYTHON_HEAP_OBJECTS, lambda row: row.count
            )
            self.callbacks[PYTHON_HEAP_SIZE] = self.heap_callback(
                PYTHON_HEAP_SIZE, lambda row: row.size
            )
            if profiler is not None:
                self.callbacks[PYTHON_HEAP_LEAK_SUSPECTS] = self.leak_suspects_callback
                self.callbacks[PYTHON_HEAP_GROWTH_STREAK] = self.growth_streak_callback

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Stop reporting; idempotent. The slot keeps dispatching to this handle until another
        is installed, so a cycle under way finishes; the next cycle reports nothing."""
        self._closed.set()
        profiler, self._profiler = self._profiler, None  # the handle may outlive its monitor
        if profiler is not None:
            profiler.remove_listener(self.censuses.offer)

    def _read(self) -> MemoryReading | None:
        """One reading for the cycle (and an idle-trend sample when no task is open); none once
        closed."""
        if self.closed:
            return None
        try:
            reading = self._source().read()
        except Exception as exc:  # psutil.Error, OSError, or a broken custom source
            self._warn_once("read", "otel_memory: memory gauges skipped, reading failed: %r", exc)
            return None
        try:
            if self._is_idle is not None and self._is_idle():
                self.idle_trend.add(reading.timestamp, reading.rss)
        except Exception as exc:  # a custom is_idle; the gauges still get their reading
            self._warn_once("idle", "otel_memory: idle check failed: %r", exc)
        return reading

    # ----------------------------------------------------------------------- callbacks

    def memory_callback(self, name: str, value: Callable[[MemoryReading], float]) -> _Callback:
        """A memory instrument's callback: ``value`` of this cycle's reading."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            reading = self.readings.get(name)  # None once closed, unless a cycle is under way
            return [] if reading is None else [Observation(value(reading))]

        return callback

    def semconv_callback(self, name: str, value: Callable[[MemoryReading], float]) -> _Callback:
        """Like :meth:`memory_callback`, silent while system-metrics exports ``name`` itself."""
        inner = self.memory_callback(name, value)

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if system_metrics_exports(name):
                return []
            return inner(options)

        return callback

    def limit_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``otel_memory.limit``: the effective limit, labelled with where it comes from."""
        reading = self.readings.get(OTEL_MEMORY_LIMIT)
        if reading is None:
            return []
        return [Observation(reading.system_total, {ATTR_LIMIT_SOURCE: reading.limit_source})]

    def heap_callback(self, name: str, value: Callable[[ClassStats], int]) -> _Callback:
        """A heap gauge's callback: ``value(row)`` per reported class of this cycle's census."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                census = self.censuses.get(name)  # None once closed, unless a cycle is under way
                rows = [] if census is None else self.classes.rows(census)
            except Exception as exc:  # a census touches every object's type: report, go on
                self._warn_once("census", "otel_memory: heap gauges skipped: %r", exc)
                return []
            return [Observation(value(row), {ATTR_PYTHON_TYPE: row.name}) for row in rows]

        return callback

    def idle_trend_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``otel_memory.idle_trend``: bytes per hour, once there are two idle samples."""
        if self.closed:
            return []
        slope = self.idle_trend.bytes_per_hour()
        return [] if slope is None else [Observation(slope)]

    def leak_suspects_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``python.heap.leak_suspects``: how many classes are suspects now."""
        profiler = self._profiler
        if self.closed or profiler is None:
            return []
        try:
            return [Observation(len(profiler.suspects()))]
        except Exception as exc:  # the detector is another module's: never into the scrape
            self._warn_once("suspects", "otel_memory: leak gauges skipped: %r", exc)
            return []

    def growth_streak_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``python.heap.growth_streak``: the streak of each suspect (at most top N of them)."""
        profiler = self._profiler
        if self.closed or profiler is None:
            return []
        try:
            suspects = profiler.suspects()[: self._config.profiling.top_n_classes]
            return [Observation(s.streak, {ATTR_PYTHON_TYPE: s.name}) for s in suspects]
        except Exception as exc:
            self._warn_once("suspects", "otel_memory: leak gauges skipped: %r", exc)
            return []

    def collections_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``python.collection.size``: ``len()`` of each watched collection."""
        if self.closed:
            return []
        return [
            Observation(size, {ATTR_COLLECTION_NAME: name})
            for name, size in watched.collection_sizes()
        ]

    def asyncio_tasks_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``python.asyncio.tasks``: pending tasks of each watched loop."""
        if self.closed:
            return []
        return [
            Observation(count, {ATTR_ASYNCIO_LOOP: name})
            for name, count in watched.asyncio_task_counts()
        ]


@dataclass(frozen=True, slots=True)
class _Instrument:
    name: str
    kind: Literal["gauge", "updown", "counter"]
    unit: str
    description: str


_INSTRUMENTS = {
    i.name: i
    for i in (
        _Instrument(
            PROCESS_MEMORY_USAGE, "updown", "By", "The amount of physical memory in use (RSS)."
        ),
        _Instrument(
            PROCESS_MEMORY_VIRTUAL, "updown", "By", "The amount of committed virtual memory (VMS)."
        ),
        _Instrument(
            SYSTEM_MEMORY_LINUX_AVAILABLE,
            "updown",
            "By",
            "An estimate of how much memory is available for starting new applications, "
            "without causing swapping (host MemAvailable).",
        ),
        _Instrument(
            OTEL_MEMORY_LIMIT,
            "updown",
            "By",
            "The effective memory limit: host MemTotal or a smaller cgroup limit.",
        ),
        _Instrument(
            OTEL_MEMORY_AVAILABLE,
            "updown",
            "By",
            "Effective available memory: host MemAvailable capped by the room under the limit.",
        ),
        _Instrument(
            OTEL_MEMORY_FREE_RATIO, "gauge", "1", "Effective available / effective limit."
        ),
        _Instrument(
            OTEL_MEMORY_IDLE_TREND, "gauge", "By/h", "Slope of RSS while no task is open."
        ),
        _Instrument(
            OTEL_MEMORY_EVENTS_DROPPED, "counter", "{event}",
            "OTLP log records of task lines dropped because the event writer fell behind.",
        ),
        _Instrument(
            PYTHON_COLLECTION_SIZE, "gauge", "{item}", "len() of each watched collection."
        ),
        _Instrument(
            PYTHON_ASYNCIO_TASKS,
            "gauge",
            "{task}",
            "Pending tasks of each watched asyncio loop.",
        ),
        _Instrument(
            PYTHON_HEAP_OBJECTS,
            "gauge",
            "{object}",
            "GC-tracked objects per class (a stable set of classes, plus other).",
        ),
        _Instrument(
            PYTHON_HEAP_SIZE,
            "gauge",
            "By",
            "Shallow size (sys.getsizeof) of GC-tracked objects per class.",
        ),
        _Instrument(
            PYTHON_HEAP_LEAK_SUSPECTS,
            "gauge",
            "{class}",
            "Classes the leak detector suspects.",
        ),
        _Instrument(
            PYTHON_HEAP_GROWTH_STREAK,
            "gauge",
            "{snapshot}",
            "Consecutive growing snapshots of each leak-suspect class.",
        ),
    )
}


class _Slot:
    """The instruments registered on one meter provider and the handle they report for.

    OpenTelemetry keeps the first callbacks of an instrument name and ignores any registered
    later, so each instrument is created once per provider with a callback that dispatches to
    the handle installed now; a start/stop/start cycle then keeps reporting. The handle is
    chosen once per collection cycle, so a cycle under way when another is installed finishes
    with the one it began with.
    """

    def __init__(self) -> None:
        self.handle: MetricsHandle | None = None
        self.registered: set[str] = set()
        self._cycle_handle: PerCycle[MetricsHandle | None] = PerCycle(lambda: self.handle)

    def dispatcher(self, name: str) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            handle = self._cycle_handle.get(name)
            found = None if handle is None else handle.callbacks.get(name)
            return [] if found is None else found(options)

        return callback


_slots: weakref.WeakKeyDictionary[object, _Slot] = weakref.WeakKeyDictionary()
_slots_lock = threading.Lock()


def install_metrics(
    config: Config,
    *,
    meter_provider: MeterProvider | None = None,
    reading_source: ReadingSource | Callable[[], ReadingSource] | None = None,
    profiler: CensusFeed | None = None,
    is_idle: Callable[[], bool] | None = None,
    take: Callable[[], HeapCensus] = take_census,
    events_dropped: Callable[[], int] | None = None,
) -> MetricsHandle:
    """Register the instruments on meter ``otel_memory``; ``close()`` the returned handle to stop.

    Memory, limit, idle-trend and watched-collection instruments always report; the heap gauges
    only when ``config.profiling.enabled``, and the leak gauges only when a running ``profiler``
    (the heap profiler) is given, whose censuses the heap gauges
    then reuse. ``is_idle`` says whether no task is open (the idle trend samples RSS only then;
    without it the trend reports nothing). ``reading_source`` is a source, or a function returning
    the current one (the runtime's, looked up every cycle); default: this process via psutil.
    One handle reports per meter provider: installing again replaces the
    previous handle. An SDK provider's collections are held across forks from then on
    (:func:`~otel_memory.sinks.forksafe.hold_collections_across_fork`), so a forked worker can
    still export its own series.
    """
    handle = MetricsHandle(config, _source_getter(reading_source), profiler, is_idle, take)
    if events_dropped is not None:
        handle.callbacks[OTEL_MEMORY_EVENTS_DROPPED] = _count_callback(handle, events_dropped)
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    hold_collections_across_fork(provider)
    meter = metrics.get_meter(METER_NAME, __version__, provider)
    with _slots_lock:
        slot = _slots.get(provider)
        if slot is None:
            slot = _slots[provider] = _Slot()
        for name in handle.callbacks:
            if name not in slot.registered:
                spec = _INSTRUMENTS[name]
                create = {
                    "updown": meter.create_observable_up_down_counter,
                    "counter": meter.create_observable_counter,
                    "gauge": meter.create_observable_gauge,
                }[spec.kind]
                create(name, [slot.dispatcher(name)], unit=spec.unit, description=spec.description)
                slot.registered.add(name)
        slot.handle = handle
    return handle


def _source_getter(
    given: ReadingSource | Callable[[], ReadingSource] | None,
) -> Callable[[], ReadingSource]:
    """What each cycle reads: a source, the current one of a getter, or a private psutil one."""
    if given is None:
        source: ReadingSource = PsutilReadingSource()
        return lambda: source
    if callable(given) and not hasattr(given, "read"):
        return given
    fixed: ReadingSource = given  # type: ignore[assignment]
    return lambda: fixed


def _count_callback(handle: MetricsHandle, count: Callable[[], int]) -> _Callback:
    """A monotonic count's callback (``events_dropped``: the monitor's event pipeline)."""

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [] if handle.closed else [Observation(count())]

    return callback
