"""The one owner of otel-memory's process-wide state.

    from otel_memory.runtime import get_runtime

    runtime = get_runtime()         # the default instance, as the SDK's global providers are
    runtime.tasks.set_active_task("Nations Dump Download")
    runtime.monitor.start(config)
    runtime.reset()                 # tests: stop the monitor, end open tasks, restore defaults

The runtime builds each part with what it needs and nothing else: the reader (readings), the
registry of open tasks, the event pipeline, the peak sampler (its tick is :meth:`Runtime.sample`),
the tasks and the monitor that wires the outputs. Parts never look the runtime up; only the
public API (:mod:`otel_memory.api`) and the instrumentor call :func:`get_runtime`.
"""

from __future__ import annotations

import time

from opentelemetry.trace import TracerProvider

from otel_memory.activity.events import DEFAULT_CAPACITY, DEFAULT_PERIOD, EventPipeline
from otel_memory.activity.opentask import OpenTasks
from otel_memory.activity.requests import RequestSpans
from otel_memory.activity.sampler import DEFAULT_INTERVAL_SECONDS, PeakSampler
from otel_memory.activity.tasks import Tasks
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.kernel.readings import MemoryReader, ReadingSource
from otel_memory.runtime.monitor import Monitor


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
        self.warn_once = WarnOnce()
        self.reader = MemoryReader(self.warn_once, reading_source)
        self.open_tasks = OpenTasks()
        self.events = EventPipeline()
        self.sampler = PeakSampler(self.sample, self.open_tasks.__bool__)
        self.tasks = Tasks(self.reader, self.open_tasks, self.sampler, self.events, self.warn_once)
        if tracer_provider is not None:
            self.tasks.set_tracer_provider(tracer_provider)
        self.requests = RequestSpans(
            self.reader, self.open_tasks, self.sampler, self.events, self.warn_once
        )
        self.monitor = Monitor(
            self.reader,
            self.tasks,
            self.events,
            self.sampler,
            self.warn_once,
            requests=self.requests,
        )
        self.high_water: int | None = None
        """The process's lifetime peak RSS at the sampler's latest tick, where known."""

    @property
    def source(self) -> ReadingSource:
        """The current reading source."""
        return self.reader.source

    def set_reading_source(self, source: ReadingSource | None) -> None:
        """Replace the reading source; None restores psutil."""
        self.reader.set_source(source)

    def set_tracer_provider(self, provider: TracerProvider | None) -> None:
        """Open task spans on ``provider``; None follows the global provider."""
        self.tasks.set_tracer_provider(provider)

    def sample(self) -> None:
        """One sampler tick: peaks, thresholds and deep capture from one RSS sample; then the
        tasks whose owner finished are ended."""
        try:
            rss = self.reader.source.read_rss()
        except Exception as exc:  # psutil.Error, OSError, or a broken custom source
            self.warn_once("sample", "otel_memory: RSS sampling failed, peaks may be low: %r", exc)
            rss = None
        if rss is not None:
            self.open_tasks.record_rss(rss)
            self._record_high_water()
            last = self.reader.last
            listener = self.reader.on_reading
            if listener is not None and last is not None:
                listener(last.with_rss(rss, time.time()))
            on_sample = self.sampler.on_sample
            if on_sample is not None:
                try:
                    on_sample(rss)
                except Exception as exc:
                    self.warn_once("on_sample", "otel_memory: run state update failed: %r", exc)
            deep = self.tasks.deep_capture
            if deep is not None:
                try:
                    deep.sampled(rss)
                except Exception as exc:
                    self.warn_once("deep", "otel_memory: deep capture failed: %r", exc)
        self.tasks.end_orphans()

    def _record_high_water(self) -> None:
        """Give a new lifetime high (``getrusage``) to the tasks open before it was reached.

        Tick ``n`` sees the high-water mark rise since tick ``n - 1`` read it: the new high came
        after tick ``n - 1`` began, so it belongs to every task opened before that (those with
        ``task.tick < n - 1``), and to no task that may have opened after it. This catches a
        spike shorter than the sampling interval, exactly, when it is a new process high.
        """
        read_high_water = getattr(self.reader.source, "read_high_water", None)
        if read_high_water is None:
            return
        try:
            high_water = read_high_water()
        except Exception as exc:  # a custom source's trouble must not stop the sampler
            self.warn_once("high water", "otel_memory: high-water mark unreadable: %r", exc)
            return
        previous, self.high_water = self.high_water, high_water
        if high_water is not None and previous is not None and high_water > previous:
            self.open_tasks.record_high_water(high_water, self.sampler.ticks - 1)

    def reset(self) -> None:
        """Back to a fresh process's state: monitor stopped, open tasks ended, defaults restored.

        For tests (an autouse fixture calls it) and tools that need a clean slate.
        """
        self.monitor.stop()
        self.tasks.end_all_open(reason=None)
        self.sampler.stop()
        self.sampler.interval = DEFAULT_INTERVAL_SECONDS
        self.sampler.on_sample = None
        self.events.close()
        self.events.dropped = 0
        self.events.capacity = DEFAULT_CAPACITY
        self.events.period = DEFAULT_PERIOD
        self.reader.set_source(None)
        self.reader.on_reading = None
        self.reader.last = None
        self.tasks.set_tracer_provider(None)
        self.tasks.deep_capture = None
        self.tasks.on_allocations = None
        self.high_water = None
        self.warn_once.reset()


_RUNTIME = Runtime()


def get_runtime() -> Runtime:
    """The process-wide runtime (the default instance)."""
    return _RUNTIME
