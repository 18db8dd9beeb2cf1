"""The histograms fed from the events thread: ``otel_memory.task.rss.growth`` and
``otel_memory.task.rss.retained``, one record per task run in the task span's context; and
``otel_memory.request.rss.growth``, one record per request or job span in that span's context.

    histograms = TaskHistograms(provider)               # one per meter provider
    histograms.record("Nations Dump", growth=300 * MB, retained=12 * MB, context=span_context)
    pipeline.set_sinks([..., HistogramSink(histograms), RequestHistogram(provider)])

Exemplars then link each record to its trace. Series stay bounded: at most ``max_names`` task
names, later ones as ``other``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider

from otel_memory.activity.census import OTHER
from otel_memory.activity.events import Event, LineEvent, RequestEnd
from otel_memory.activity.opentask import OpenTask
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.logline import Marker
from otel_memory.base.memory import MB
from otel_memory.base.names import clean_name
from otel_memory.base.version import __version__

METER_NAME = "otel_memory"
OTEL_MEMORY_TASK_RSS_GROWTH = "otel_memory.task.rss.growth"
"""Histogram, By: RSS a task run grew above its start at its peak."""
OTEL_MEMORY_TASK_RSS_RETAINED = "otel_memory.task.rss.retained"
"""Histogram, By: RSS a task run still held at its end."""
ATTR_TASK_NAME = "otel_memory.task.name"
OTEL_MEMORY_REQUEST_RSS_GROWTH = "otel_memory.request.rss.growth"
"""Histogram, By: RSS a request or job span grew above its start at its peak."""
ATTR_SPAN_NAME = "otel_memory.span.name"

MAX_TASK_NAMES = 200
"""Distinct ``otel_memory.task.name`` values per histogram; later ones are recorded as ``other``."""

MAX_TASK_NAME_LENGTH = 256
"""Characters of a task name kept in ``otel_memory.task.name`` (the span keeps the whole name)."""

TASK_RSS_BUCKETS: tuple[float, ...] = tuple(float(MB << shift) for shift in range(13))
"""Histogram boundaries: 1 MB, 2 MB, 4 MB ... 4 GB (powers of two, 1 MB = 1,048,576 bytes)."""

_log = logging.getLogger("otel_memory")


class TaskHistograms:
    """``otel_memory.task.rss.growth`` and ``otel_memory.task.rss.retained``, one per provider.

    Args:
        meter_provider: where the histograms live; the global provider by default.
        max_names: distinct task names recorded under their own name; later names become
            ``other`` so the series count stays bounded.
    """

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, max_names: int = MAX_TASK_NAMES
    ) -> None:
        meter = metrics.get_meter(METER_NAME, __version__, meter_provider)
        self.growth = meter.create_histogram(
            OTEL_MEMORY_TASK_RSS_GROWTH,
            unit="By",
            description="RSS a task run grew above its start at its peak: max(0, peak - start).",
            explicit_bucket_boundaries_advisory=TASK_RSS_BUCKETS,
        )
        self.retained = meter.create_histogram(
            OTEL_MEMORY_TASK_RSS_RETAINED,
            unit="By",
            description="RSS a task run still held at its end: max(0, end - start).",
            explicit_bucket_boundaries_advisory=TASK_RSS_BUCKETS,
        )
        self.max_names = max_names
        self._names: set[str] = set()
        # The attributes of each admitted name, built once: the events thread records two
        # histograms per task and the name repeats (bounded like the names themselves).
        self._attributes: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._warn_once = WarnOnce(_log)

    def _attributes_of(self, name: str) -> dict[str, str]:
        attributes = self._attributes.get(name) if type(name) is str else None
        if attributes is not None:
            return attributes
        cleaned = clean_name(name, max_length=MAX_TASK_NAME_LENGTH)
        with self._lock:
            if cleaned not in self._names and len(self._names) >= self.max_names:
                return {ATTR_TASK_NAME: OTHER}
            self._names.add(cleaned)
            attributes = {ATTR_TASK_NAME: cleaned}
            if cleaned == name:  # a name cleaning changed is not kept: one entry per admitted name
                self._attributes[name] = attributes
            return attributes

    def record(self, name: str, growth: int, retained: int, context: Context | None) -> None:
        """Record one task run; ``context`` (the task span's) lets exemplars link to the trace.

        Negative values count as 0. Never raises: a failure is logged once.
        """
        try:
            attributes = self._attributes_of(name)
            self.growth.record(max(0, int(growth)), attributes, context=context)
            self.retained.record(max(0, int(retained)), attributes, context=context)
        except Exception as exc:  # instrumentation never raises into the host
            self._warn_once("record", "otel_memory: task histograms skipped: %r", exc)


class RequestHistogram:
    """``otel_memory.request.rss.growth``: one record per request or job span, by span name; a
    sink of the events pipeline, which carries each span's :class:`RequestEnd`.

    Args:
        meter_provider: where the histogram lives; the global provider by default.
        max_names: distinct span names recorded under their own name; later ones are ``other``.
    """

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, max_names: int = MAX_TASK_NAMES
    ) -> None:
        meter = metrics.get_meter(METER_NAME, __version__, meter_provider)
        self.growth = meter.create_histogram(
            OTEL_MEMORY_REQUEST_RSS_GROWTH,
            unit="By",
            description="RSS a request or job grew above its start at its peak: "
            "max(0, peak - start).",
            explicit_bucket_boundaries_advisory=TASK_RSS_BUCKETS,
        )
        self.max_names = max_names
        self._attributes: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._warn_once = WarnOnce(_log)

    def _attributes_of(self, name: str) -> dict[str, str]:
        attributes = self._attributes.get(name)
        if attributes is not None:
            return attributes
        cleaned = clean_name(name, max_length=MAX_TASK_NAME_LENGTH)
        with self._lock:
            if len(self._attributes) >= self.max_names:
                return {ATTR_SPAN_NAME: OTHER}
            attributes = self._attributes[name] = {ATTR_SPAN_NAME: cleaned}
            return attributes

    def record(self, task: OpenTask, growth: int) -> None:
        """Record one request span's growth in its context (exemplars link to it); never raises."""
        try:
            span = task.span
            name = getattr(span, "name", task.name)
            context = trace.set_span_in_context(span)
            self.growth.record(growth, self._attributes_of(name), context=context)
        except Exception as exc:  # instrumentation never raises into the host
            self._warn_once("request", "otel_memory: request histogram skipped: %r", exc)

    def write(self, batch: Sequence[Event]) -> None:
        """Record the request ends of ``batch``."""
        record = self.record
        for event in batch:
            if isinstance(event, RequestEnd):
                record(event.task, event.growth)

    def close(self) -> None:
        """Nothing to release."""


class HistogramSink:
    """Records each task run into the task histograms, in the task span's context."""

    def __init__(self, histograms: TaskHistograms) -> None:
        self._histograms = histograms

    def write(self, batch: Sequence[Event]) -> None:
        """Record the END events of ``batch``."""
        record = self._histograms.record
        end = Marker.END
        for event in batch:
            if isinstance(event, LineEvent) and event.marker is end:
                task = event.task
                if task is None or task.start is None:
                    continue
                start = task.start.rss
                context = trace.set_span_in_context(task.span)
                record(task.name, task.peak_rss - start, event.reading.rss - start, context)

    def close(self) -> None:
        """Nothing to release."""
