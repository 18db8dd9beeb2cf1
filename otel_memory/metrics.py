"""Gauges on meter ``otel_memory``: process and system memory, the heap census, leak suspects,
the idle RSS trend and watched collections.

    from otel_memory.metrics import install_metrics

    handle = install_metrics(config)                    # the global meter provider
    handle = install_metrics(config, meter_provider=provider, profiler=profiler_handle)
    ...
    handle.close()                                      # callbacks report nothing from now on

One memory reading per collection cycle serves the four memory gauges, and one heap census
serves both heap gauges (:class:`PerCycle`). Callbacks never raise: a failed reading is logged
once on the ``otel_memory`` logger and the cycle reports nothing for those gauges. Names, units
and attributes are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_memory import tasks, watched
from otel_memory.census import HeapCensus, take_census
from otel_memory.config import Config
from otel_memory.leaks import IdleTrend
from otel_memory.profiler import Profiler
from otel_memory.readings import MemoryReading, ReadingSource, get_reading_source
from otel_memory.version import __version__

METER_NAME = "otel_memory"

PROCESS_MEMORY_USAGE = "process.memory.usage"
"""RSS, bytes (semantic conventions)."""
PROCESS_MEMORY_VIRTUAL = "process.memory.virtual"
"""VMS, bytes (semantic conventions)."""
SYSTEM_MEMORY_AVAILABLE = "system.memory.linux.available"
"""psutil's ``available``, bytes (the semantic-convention name of Linux ``MemAvailable``)."""
SYSTEM_MEMORY_FREE_RATIO = "system.memory.free_ratio"
"""available / total, 0..1 (ours: the semantic conventions have no such metric)."""
PROCESS_MEMORY_IDLE_TREND = "process.memory.idle_trend"
"""Least-squares slope of RSS sampled while no task is open, bytes per hour (ours)."""
PYTHON_HEAP_OBJECTS = "python.heap.objects"
"""GC-tracked objects per class (top N by count and by size, plus ``other``)."""
PYTHON_HEAP_SIZE = "python.heap.size"
"""Shallow bytes (``sys.getsizeof``) per class, same classes as ``python.heap.objects``."""
PYTHON_HEAP_LEAK_SUSPECTS = "python.heap.leak_suspects"
"""Number of classes whose count grew in ``leak_snapshots`` consecutive snapshots."""
PYTHON_HEAP_GROWTH_STREAK = "python.heap.growth_streak"
"""Consecutive growing snapshots of each suspect class."""
PYTHON_COLLECTION_SIZE = "python.collection.size"
"""``len()`` of each watched collection."""
PYTHON_ASYNCIO_TASKS = "python.asyncio.tasks"
"""Pending tasks of each watched asyncio loop."""

METRIC_NAMES = (
    PROCESS_MEMORY_USAGE,
    PROCESS_MEMORY_VIRTUAL,
    SYSTEM_MEMORY_AVAILABLE,
    SYSTEM_MEMORY_FREE_RATIO,
    PROCESS_MEMORY_IDLE_TREND,
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

_log = logging.getLogger("otel_memory")
_T = TypeVar("_T")
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


class MetricsHandle:
    """What :func:`install_metrics` registered; :meth:`close` turns every callback into a no-op.

    OpenTelemetry cannot unregister instruments, so a closed handle's instruments stay on the
    meter and simply report nothing.
    """

    def __init__(
        self,
        config: Config,
        reading_source: ReadingSource | None,
        profiler: Profiler | None,
        is_idle: Callable[[], bool],
        take: Callable[[], HeapCensus],
    ) -> None:
        self._config = config
        self._source = reading_source
        self._profiler = profiler
        self._is_idle = is_idle
        self._closed = threading.Event()
        self._warned: set[str] = set()
        self.idle_trend = IdleTrend()
        self.readings: PerCycle[MemoryReading | None] = PerCycle(self._read)
        self.censuses: PerCycle[HeapCensus] = PerCycle(take)
        self.slot: _Slot | None = None
        if profiler is not None:
            profiler.add_listener(self.censuses.offer)
        self.callbacks: dict[str, _Callback] = {
            PROCESS_MEMORY_USAGE: self.memory_callback(PROCESS_MEMORY_USAGE, lambda r: r.rss),
            PROCESS_MEMORY_VIRTUAL: self.memory_callback(PROCESS_MEMORY_VIRTUAL, lambda r: r.vms),
            SYSTEM_MEMORY_AVAILABLE: self.memory_callback(
                SYSTEM_MEMORY_AVAILABLE, lambda r: r.system_available
            ),
            SYSTEM_MEMORY_FREE_RATIO: self.memory_callback(
                SYSTEM_MEMORY_FREE_RATIO, lambda r: r.free_ratio
            ),
            PROCESS_MEMORY_IDLE_TREND: self.idle_trend_callback,
            PYTHON_COLLECTION_SIZE: self.collections_callback,
            PYTHON_ASYNCIO_TASKS: self.asyncio_tasks_callback,
        }
        """What this handle reports, by instrument name."""
        if config.profiling.enabled:
            self.callbacks[PYTHON_HEAP_OBJECTS] = self.heap_callback(
                PYTHON_HEAP_OBJECTS, lambda count, size: count
            )
            self.callbacks[PYTHON_HEAP_SIZE] = self.heap_callback(
                PYTHON_HEAP_SIZE, lambda count, size: size
            )
            if profiler is not None:
                self.callbacks[PYTHON_HEAP_LEAK_SUSPECTS] = self.leak_suspects_callback
                self.callbacks[PYTHON_HEAP_GROWTH_STREAK] = self.growth_streak_callback

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Stop reporting; idempotent."""
        self._closed.set()
        with _slots_lock:
            if self.slot is not None and self.slot.handle is self:
                self.slot.handle = None
        if self._profiler is not None:
            self._profiler.remove_listener(self.censuses.offer)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning(message, *args)

    def _read(self) -> MemoryReading | None:
        """One reading for the cycle (and an idle-trend sample when no task is open)."""
        try:
            reading = (self._source or get_reading_source()).read()
        except Exception as exc:  # psutil.Error, OSError, or a broken custom source
            self._warn_once("read", "otel_memory: memory gauges skipped, reading failed: %r", exc)
            return None
        try:
            if self._is_idle():
                self.idle_trend.add(reading.timestamp, reading.rss)
        except Exception as exc:  # a custom is_idle; the gauges still get their reading
            self._warn_once("idle", "otel_memory: idle check failed: %r", exc)
        return reading

    # ----------------------------------------------------------------------- callbacks

    def memory_callback(self, name: str, value: Callable[[MemoryReading], float]) -> _Callback:
        """A memory gauge's callback: ``value`` of this cycle's reading."""
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if self.closed:
                return []
            reading = self.readings.get(name)
            return [] if reading is None else [Observation(value(reading))]

        return callback

    def heap_callback(self, name: str, value: Callable[[int, int], int]) -> _Callback:
        """A heap gauge's callback: ``value(count, size)`` per class of this cycle's census."""
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if self.closed:
                return []
            try:
                census = self.censuses.get(name)
            except Exception as exc:  # a census touches every object's type: report, go on
                self._warn_once("census", "otel_memory: heap gauges skipped: %r", exc)
                return []
            rows = census.top(self._config.profiling.top_n_classes)
            return [
                Observation(value(row.count, row.size), {ATTR_PYTHON_TYPE: row.name})
                for row in rows
            ]

        return callback

    def idle_trend_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``process.memory.idle_trend``: bytes per hour, once there are two idle samples."""
        if self.closed:
            return []
        slope = self.idle_trend.bytes_per_hour()
        return [] if slope is None else [Observation(slope)]

    def leak_suspects_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``python.heap.leak_suspects``: how many classes are suspects now."""
        if self.closed or self._profiler is None:
            return []
        return [Observation(len(self._profiler.detector.suspects()))]

    def growth_streak_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        """``python.heap.growth_streak``: the streak of each suspect (at most top N of them)."""
        if self.closed or self._profiler is None:
            return []
        suspects = self._profiler.detector.suspects()[: self._config.profiling.top_n_classes]
        return [Observation(s.streak, {ATTR_PYTHON_TYPE: s.name}) for s in suspects]

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


def _no_open_task() -> bool:
    return not tasks.open_tasks


@dataclass(frozen=True, slots=True)
class _Instrument:
    name: str
    unit: str
    description: str


_INSTRUMENTS = {
    i.name: i
    for i in (
        _Instrument(PROCESS_MEMORY_USAGE, "By", "The amount of physical memory in use (RSS)."),
        _Instrument(PROCESS_MEMORY_VIRTUAL, "By", "The amount of committed virtual memory (VMS)."),
        _Instrument(SYSTEM_MEMORY_AVAILABLE, "By", "Memory available without swapping."),
        _Instrument(SYSTEM_MEMORY_FREE_RATIO, "1", "System available memory / total memory."),
        _Instrument(PROCESS_MEMORY_IDLE_TREND, "By/h", "Slope of RSS while no task is open."),
        _Instrument(PYTHON_COLLECTION_SIZE, "{item}", "len() of each watched collection."),
        _Instrument(PYTHON_ASYNCIO_TASKS, "{task}", "Pending tasks of each watched asyncio loop."),
        _Instrument(
            PYTHON_HEAP_OBJECTS,
            "{object}",
            "GC-tracked objects per class (top N by count and by size, plus other).",
        ),
        _Instrument(
            PYTHON_HEAP_SIZE, "By", "Shallow size (sys.getsizeof) of GC-tracked objects per class."
        ),
        _Instrument(
            PYTHON_HEAP_LEAK_SUSPECTS,
            "{class}",
            "Classes whose object count grew in consecutive snapshots.",
        ),
        _Instrument(
            PYTHON_HEAP_GROWTH_STREAK,
            "{snapshot}",
            "Consecutive growing snapshots of each leak-suspect class.",
        ),
    )
}


class _Slot:
    """The instruments registered on one meter provider and the handle they report for.

    OpenTelemetry keeps the first callbacks of an instrument name and ignores any registered
    later, so each instrument is created once per provider with a callback that dispatches to
    whichever handle is installed now; a start/stop/start cycle then keeps reporting.
    """

    def __init__(self) -> None:
        self.handle: MetricsHandle | None = None
        self.registered: set[str] = set()

    def dispatcher(self, name: str) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            handle = self.handle
            found = None if handle is None else handle.callbacks.get(name)
            return [] if found is None else found(options)

        return callback


_slots: weakref.WeakKeyDictionary[object, _Slot] = weakref.WeakKeyDictionary()
_slots_lock = threading.Lock()


def install_metrics(
    config: Config,
    *,
    meter_provider: MeterProvider | None = None,
    reading_source: ReadingSource | None = None,
    profiler: Profiler | None = None,
    is_idle: Callable[[], bool] = _no_open_task,
    take: Callable[[], HeapCensus] = take_census,
) -> MetricsHandle:
    """Register the gauges on meter ``otel_memory``; ``close()`` the returned handle to stop.

    Memory, idle-trend and watched-collection gauges always report; the heap gauges only when
    ``config.profiling.enabled``, and the leak gauges only when a running ``profiler`` (from
    :func:`otel_memory.profiler.start_profiler`) is given, whose censuses the heap gauges then
    reuse. ``reading_source`` defaults to the process-wide one, looked up every cycle. One handle
    reports per meter provider: installing again replaces the previous handle.
    """
    handle = MetricsHandle(config, reading_source, profiler, is_idle, take)
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = metrics.get_meter(METER_NAME, __version__, provider)
    with _slots_lock:
        slot = _slots.get(provider)
        if slot is None:
            slot = _slots[provider] = _Slot()
        for name in handle.callbacks:
            if name not in slot.registered:
                spec = _INSTRUMENTS[name]
                meter.create_observable_gauge(
                    name, [slot.dispatcher(name)], unit=spec.unit, description=spec.description
                )
                slot.registered.add(name)
        handle.slot, slot.handle = slot, handle
    return handle
