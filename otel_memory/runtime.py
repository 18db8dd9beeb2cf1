"""The one owner of otel-memory's process-wide state.

    from otel_memory.runtime import get_runtime

    runtime = get_runtime()         # the default instance, as the SDK's global providers are
    runtime.open_tasks.most_recent()
    runtime.reset()                 # tests: stop the monitor, end open tasks, restore defaults

The reading source, the registry of open tasks, the peak sampler, the event pipeline, the
tracer and the monitor's guards (thresholds, deep capture, task histograms) live here, on one
object, instead of in module globals that ``start()`` would rewire. ``start()`` configures it
and ``stop()`` puts it back; :meth:`Runtime.reset` does both for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace
from opentelemetry.trace import Tracer, TracerProvider

from otel_memory.diagnostics import WarnOnce
from otel_memory.events import DEFAULT_CAPACITY, DEFAULT_PERIOD, EventPipeline
from otel_memory.readings import MemoryReading, PsutilReadingSource, ReadingSource
from otel_memory.sampler import DEFAULT_INTERVAL_SECONDS, PeakSampler
from otel_memory.version import __version__

if TYPE_CHECKING:
    from otel_memory.deepcapture import AllocationReport
    from otel_memory.tasks import OpenTask


class ReadingListener(Protocol):
    """Sees every reading the monitor takes (thresholds): must be cheap and never raise."""

    def __call__(self, reading: MemoryReading) -> None: ...


class OpenTasks:
    """Every open task in the process, in start order; feeds peaks and ``---`` lines.

    Each operation is one dict operation in C, atomic under the GIL: the task path takes no
    lock (the hot path of every task).
    """

    def __init__(self) -> None:
        self._tasks: dict[int, OpenTask] = {}

    def add(self, task: OpenTask) -> bool:
        """Register a task that just started; returns whether none was open before."""
        tasks = self._tasks
        was_idle = not tasks
        tasks[id(task)] = task
        return was_idle

    def remove(self, task: OpenTask) -> None:
        """Forget a task that ended."""
        self._tasks.pop(id(task), None)

    def most_recent(self) -> OpenTask | None:
        """The most recently started task still open, if any."""
        tasks = self._tasks
        while tasks:
            try:
                return tasks[next(reversed(tasks))]
            except (KeyError, StopIteration, RuntimeError):  # it ended meanwhile: look again
                continue
        return None

    def snapshot(self) -> list[OpenTask]:
        """The open tasks now, oldest first."""
        return list(self._tasks.values())

    def record_rss(self, rss: int) -> None:
        """Raise the peak of every open task to ``rss`` where it is higher."""
        for task in list(self._tasks.values()):
            task.peak_rss = max(task.peak_rss, rss)

    def record_high_water(self, high_water: int, opened_before_tick: int) -> None:
        """A new lifetime high was reached after sampler tick ``opened_before_tick`` began:
        raise the peak of every task that was already open then (``task.tick`` is the number
        of ticks begun when it opened), and of no other, to ``high_water``."""
        for task in list(self._tasks.values()):
            if task.tick < opened_before_tick and task.peak_rss < high_water:
                task.peak_rss = high_water

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)


class Runtime:
    """Process-wide state: what tasks, the sampler and the monitor share.

    Args:
        reading_source: where readings come from; default: this process through psutil.
        tracer_provider: the provider of task spans; default: the global one (followed once set).
    """

    def __init__(
        self,
        reading_source: ReadingSource | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._default_source: ReadingSource | None = None
        self.source: ReadingSource = reading_source or self._psutil_source()
        self.tracer: Tracer = trace.get_tracer("otel_memory", __version__, tracer_provider)
        self.open_tasks = OpenTasks()
        self.warn_once = WarnOnce()
        self.events = EventPipeline()
        self.sampler = PeakSampler(self)
        self.last_reading: MemoryReading | None = None
        """The latest full reading (the sampler pairs it with fresh RSS samples)."""
        self.high_water: int | None = None
        """The process's lifetime peak RSS at the sampler's latest tick, where known."""
        self.on_reading: ReadingListener | None = None
        """Called with every reading the monitor takes (the threshold guard), or None."""
        self.on_sample: Callable[[int], None] | None = None
        """Called by the sampler with each RSS sample (the run state), or None."""
        self.deep_capture: DeepCaptureHooks | None = None
        """The deep-capture hooks while ``deep_capture.enabled``, else None."""
        self.monitor: object | None = None
        """What the running monitor set up (see :mod:`otel_memory.monitor`), or None."""

    def _psutil_source(self) -> ReadingSource:
        if self._default_source is None:
            self._default_source = PsutilReadingSource()
        return self._default_source

    def set_reading_source(self, source: ReadingSource | None) -> None:
        """Replace the reading source; None restores psutil."""
        self.source = source if source is not None else self._psutil_source()

    def set_tracer_provider(self, provider: TracerProvider | None) -> None:
        """Open task spans on ``provider``; None follows the global provider."""
        self.tracer = trace.get_tracer("otel_memory", __version__, provider)

    def read(self) -> MemoryReading | None:
        """One reading, or None when the platform refuses (reported once)."""
        try:
            reading = self.source.read()
        except Exception as exc:  # psutil.Error, OSError, or a broken custom source
            self.warn_once("reading", "otel_memory: memory reading failed, left out: %r", exc)
            return None
        self.last_reading = reading
        listener = self.on_reading
        if listener is not None:
            listener(reading)
        return reading

    def reset(self) -> None:
        """Back to a fresh process's state: monitor stopped, open tasks ended, defaults restored.

        For tests (an autouse fixture calls it) and tools that need a clean slate.
        """
        from otel_memory import monitor, tasks  # noqa: PLC0415  # the runtime sits below both

        monitor.stop()
        tasks.end_all_open(reason=None)
        self.sampler.stop()
        self.sampler.interval = DEFAULT_INTERVAL_SECONDS
        self.events.close()
        self.events.dropped = 0
        self.events.capacity = DEFAULT_CAPACITY
        self.events.period = DEFAULT_PERIOD
        self.set_reading_source(None)
        self.set_tracer_provider(None)
        self.on_reading = None
        self.on_sample = None
        self.last_reading = None
        self.high_water = None
        self.deep_capture = None
        self.monitor = None
        self.warn_once.reset()


class DeepCaptureHooks(Protocol):
    """What tasks and the sampler tell deep capture (see :mod:`otel_memory.deepcapture`)."""

    def task_started(self, key: object, name: str, start_rss: int) -> None: ...

    def sampled(self, rss: int) -> None: ...

    def task_ended(self, key: object) -> AllocationReport | None: ...

    def close(self) -> None: ...


_RUNTIME = Runtime()


def get_runtime() -> Runtime:
    """The process-wide runtime (the default instance)."""
    return _RUNTIME
