"""Request and job spans: memory on every SERVER and CONSUMER span, whoever made it.

    requests = RequestSpans(reader, open_tasks, sampler, events, warn_once)  # the runtime builds it
    requests.install(tracer_provider)       # the monitor: on start (an SDK provider)
    requests.enabled = False                # stop(): the processor stays, does nothing

A span processor: ``on_start`` takes a reading and registers the span as an open task (the
sampler raises its peak, ``---`` lines and the run state may name it, overlaps count it);
the end attributes must be set before the SDK freezes the span, which happens before any
processor hears of the end (``on_end`` gets a read-only span; ``_on_ending``, in newer SDKs
only, sees it already frozen). So ``on_start`` wraps the span's own ``end``: an instance
attribute that sets ``memory.rss.*`` and ``memory.task.overlap``, then ends the span as the
SDK does. Every way a span ends (``span.end()``, ``with span``, ``use_span``,
``start_as_current_span``) calls ``span.end``, so all are covered; a test fails if an SDK
changes that. Request spans write no daily-log lines; each queues a :class:`RequestEnd` for
the growth histogram, recorded on the events thread (the request's thread pays an append).
"""

from __future__ import annotations

import weakref
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from otel_memory.activity.events import EventPipeline, RequestEnd
from otel_memory.activity.opentask import REQUEST, OpenTask, OpenTasks, request_stack
from otel_memory.activity.sampler import PeakSampler
from otel_memory.activity.tasks import current_owner, peak_of, task_stack
from otel_memory.base import attributes as attr
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.kernel.readings import MemoryReader

_SERVER, _CONSUMER = SpanKind.SERVER, SpanKind.CONSUMER
"""The span kinds that get memory attributes: a request served, a job consumed."""


class RequestSpans(SpanProcessor):
    """The span processor that puts memory on request and job spans.

    Args:
        reader: takes the readings at the span's start and end.
        open_tasks: where the span is registered while it is open.
        sampler: woken when the span opens while nothing was open.
        events: receives a :class:`RequestEnd` per measured request (the growth histogram's).
        warn_once: reports failures once, never raising.
    """

    def __init__(
        self,
        reader: MemoryReader,
        open_tasks: OpenTasks,
        sampler: PeakSampler,
        events: EventPipeline,
        warn_once: WarnOnce,
    ) -> None:
        self._reader = reader
        self._open_tasks = open_tasks
        self._sampler = sampler
        self._events = events
        self._warn_once = warn_once
        self._installed: weakref.WeakSet[object] = weakref.WeakSet()
        self.enabled = False
        """Whether new request spans get memory (the monitor's ``request_spans`` while running)."""

    def install(self, provider: object) -> bool:
        """Add this processor to ``provider`` once (an SDK provider) and enable it."""
        add = getattr(provider, "add_span_processor", None)
        if add is None:
            self._warn_once(
                "request spans provider",
                "otel_memory: request spans get no memory: %r is not an SDK tracer provider",
                provider,
            )
            return False
        if provider not in self._installed:
            add(self)
            self._installed.add(provider)
        self.enabled = True
        return True

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Register a SERVER/CONSUMER span as an open request and wrap its end."""
        if not self.enabled:
            return
        # Every span of the process passes here: compared by identity, since an Enum's hash
        # (``kind in {...}``) is a Python call.
        kind = span.kind
        if kind is not _SERVER and kind is not _CONSUMER:
            return
        try:
            reading = self._reader.read()
            stack = task_stack.get()
            requests = request_stack.get()
            if requests and any(t.ended for t in requests):
                # Ended in another context (a thread pool's thread serves the next request):
                # forget them here, or a reused thread's stack would grow forever.
                requests = tuple(t for t in requests if not t.ended)
            task = OpenTask(
                span.name, span, reading, current_owner(), REQUEST,
                reading.rss if reading is not None else 0, self._sampler.ticks,
                requests + stack if requests else stack,
            )
            # The instance attribute shadows SdkSpan.end; _end removes it (no cycle is left).
            span.end = _Ending(self, task)
            if self._open_tasks.add(task):
                self._sampler.wake()
            request_stack.set((*requests, task))
        except Exception as exc:
            self._warn_once("request start", "otel_memory: request span unmeasured: %r", exc)

    def finish(self, task: OpenTask) -> None:
        """Set the end attributes of a request span that is ending, and queue its growth."""
        self._open_tasks.remove(task)
        stack = request_stack.get()
        if stack and stack[-1] is task:
            request_stack.set(stack[:-1])
        elif task in stack:
            request_stack.set(tuple(t for t in stack if t is not task))
        if task.ended:  # ended as a task already (its attributes are set)
            return
        task.ended = True
        reading = self._reader.read()
        start = task.start
        span = task.span
        attributes: dict[str, AttributeValue] = {attr.TASK_OVERLAP: task.overlap}
        if start is not None:
            attributes[attr.RSS_START] = start.rss
        if reading is not None:
            task.peak_rss = peak_of(task, reading)
            attributes[attr.RSS_END] = reading.rss
            attributes[attr.RSS_PEAK] = task.peak_rss
            if start is not None:
                attributes[attr.RSS_DELTA] = reading.rss - start.rss
        span.set_attributes(attributes)
        if start is not None and reading is not None:
            self._events.put(RequestEnd(task, max(0, task.peak_rss - start.rss)))

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing: the attributes were set by the span's own end."""


class _Ending:
    """A request span's ``end``: memory attributes first, then the SDK's own end."""

    __slots__ = ("_requests", "_task")

    def __init__(self, requests: RequestSpans, task: OpenTask) -> None:
        self._requests = requests
        self._task = task

    def __call__(self, end_time: int | None = None) -> None:
        task = self._task
        span = task.span
        # Back to the SDK's method (a second end warns as the SDK does). ``del``, not
        # ``vars(span).pop``: ``vars()`` turns the span's inline attribute values into a dict,
        # and every later attribute access of the SDK and its exporters pays for it (about
        # 1 µs per request); not contextlib.suppress either: three Python calls per request.
        try:  # noqa: SIM105
            del span.end
        except AttributeError:  # removed already (ended twice, or ended while ending)
            pass
        try:
            self._requests.finish(task)
        except Exception as exc:
            self._requests._warn_once(
                "request end", "otel_memory: request span %r unmeasured: %r", task.name, exc
            )
        type(span).end(span, end_time)
