"""The event pipeline: task boundaries and notices leave the caller's thread through one queue.

    pipeline = EventPipeline()
    pipeline.set_sinks([DailyLogSink(writer), OTelLogSink(mode="events")])
    pipeline.put(LineEvent(Marker.START, "Nations Dump Download", reading, span, task))
    pipeline.flush()          # at stop(), at exit, before fork: nothing queued is lost

A task's START/END cost the caller one ``deque.append``: formatting, the file write, the OTel log
record and the task histograms happen on a daemon thread (``otel-memory-events``) that drains
the queue in order, a batch at a time, so the daily file gets one ``write`` per batch; with
nothing queued the thread sleeps until the next event (an idle process pays no wake-ups). The queue
is bounded: when the sinks fall far behind, new events are dropped and counted (reported once
per episode and exported as ``otel_memory.events.dropped``) rather than blocking the host.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from otel_memory.activity.opentask import OpenTask
from otel_memory.base.diagnostics import WarnOnce, logger
from otel_memory.base.logline import Marker
from otel_memory.base.memory import MemoryReading

DEFAULT_CAPACITY = 100_000
"""Events held before new ones are dropped (about 20 MB at worst)."""
DEFAULT_PERIOD = 0.2
"""Seconds between drains while events arrive: how late a line may reach the file."""
_BATCH = 4096


class LineEvent(NamedTuple):
    """One line of the daily log: a task start or end, or a ``---`` check.

    ``name`` is the true task name (END: the label when one was given); ``span`` is the task's
    span (for trace context), ``task`` the open task for START/END.
    """

    marker: Marker
    name: str
    reading: MemoryReading
    span: Span | None
    task: OpenTask | None


class Notice(NamedTuple):
    """A memory event (SPEC: Events): a log record of the ``otel_memory`` logger with a name."""

    event_name: str
    level: int
    body: str
    attributes: dict[str, AttributeValue]
    timestamp: float


Event = LineEvent | Notice


class Sink(Protocol):
    """Receives the queued events in order, a batch at a time, on the pipeline's thread."""

    def write(self, batch: Sequence[Event]) -> None:
        """Handle one batch; may raise (reported once, the pipeline goes on)."""
        ...

    def close(self) -> None:
        """Release resources (the pipeline has flushed)."""
        ...


class EventPipeline:
    """A bounded queue drained in order by one daemon thread into the configured sinks.

    Args:
        capacity: events held before new ones are dropped and counted.
        period: seconds the thread sleeps between drains.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, period: float = DEFAULT_PERIOD) -> None:
        self.capacity = capacity
        self.period = period
        self.dropped = 0
        self._queue: deque[Event] = deque()
        self._sinks: tuple[Sink, ...] = ()
        self._warn_once = WarnOnce()
        self._init_threading()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=self.flush, after_in_child=self._after_fork_in_child)

    def _init_threading(self) -> None:
        self._drain_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._idle = False  # the thread waits, with no timeout, for the next event

    @property
    def active(self) -> bool:
        """Whether any sink listens (without one, :meth:`put` does nothing)."""
        return bool(self._sinks)

    def set_sinks(self, sinks: Iterable[Sink]) -> None:
        """Replace the sinks; what was queued for the old ones is written to them first."""
        self.flush()
        self._sinks = tuple(sinks)

    def put(self, event: Event, droppable: bool = True) -> None:
        """Queue one event (the caller's hot path: never blocks, never raises).

        Task lines are ``droppable``; ``---`` lines and notices, rare and the ones that say
        what happened, are queued even when the queue is full.
        """
        if not self._sinks:
            return
        queue = self._queue
        if droppable and len(queue) >= self.capacity:
            with self._drop_lock:  # counted exactly: "dropped" must never lose a drop
                self.dropped += 1
            self._warn_once(
                "dropped",
                "otel_memory: event queue full (%d): events dropped and counted "
                "(otel_memory.events.dropped)",
                self.capacity,
            )
            return
        queue.append(event)
        if self._idle:
            self._wakeup.set()
        elif self._thread is None:
            self._start_thread()

    def flush(self) -> None:
        """Drain everything queued now, in the caller's thread."""
        self._drain()

    def close(self) -> None:
        """Drain, stop the thread, close and forget the sinks."""
        with self._start_lock:
            thread, self._thread = self._thread, None
            self._stopping = True
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._drain()
        sinks, self._sinks = self._sinks, ()
        for sink in sinks:
            try:
                sink.close()
            except Exception as exc:
                logger.warning("otel_memory: closing %r failed: %r", sink, exc)
        with self._start_lock:
            self._stopping = False

    def _start_thread(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopping:
                return
            thread = threading.Thread(target=self._run, name="otel-memory-events", daemon=True)
            self._thread = thread  # before start(): the thread checks it is the current one
            thread.start()

    def _run(self) -> None:
        # While events flow, drain every `period` (a batch per write). Only after a whole period
        # brought nothing does the thread sleep until put() wakes it: an idle process pays no
        # wake-ups, and a busy one never makes put() wake the thread.
        me = threading.current_thread()
        busy = True
        while self._thread is me:
            if busy or self._queue:
                self._wakeup.wait(self.period)
            else:
                self._idle = True
                if not self._queue:  # an event put before _idle was set must not wait
                    self._wakeup.wait()
                self._idle = False
            self._wakeup.clear()
            busy = self._drain()

    def _drain(self) -> bool:
        """Write everything queued to the sinks; returns whether there was anything."""
        queue = self._queue
        drained = bool(queue)
        with self._drain_lock:
            while queue:
                batch: list[Event] = []
                pop = queue.popleft
                try:
                    while len(batch) < _BATCH:
                        batch.append(pop())
                except IndexError:
                    pass
                for sink in self._sinks:
                    try:
                        sink.write(batch)
                    except Exception as exc:  # a sink's trouble must not stop the others
                        self._warn_once(
                            f"sink {type(sink).__name__}",
                            "otel_memory: %s failed, its events are lost: %r",
                            type(sink).__name__,
                            exc,
                        )
            if self.dropped and self._warn_once.forget("dropped"):
                logger.warning(
                    "otel_memory: event queue drained again; %d events dropped so far",
                    self.dropped,
                )
        return drained

    def _after_fork_in_child(self) -> None:
        # The parent flushed before the fork; the child starts with an empty queue and its own
        # thread, started on its first event.
        self._queue = deque()
        self._init_threading()


class LoggerSink:
    """Passes notices to the ``otel_memory`` Python logger, so users can route them."""

    def __init__(self, log: logging.Logger = logger) -> None:
        self._log = log

    def write(self, batch: Sequence[Event]) -> None:
        """Log each notice at its level, with its attributes on the record."""
        for event in batch:
            if isinstance(event, Notice) and self._log.isEnabledFor(event.level):
                extra: dict[str, object] = dict(event.attributes)
                extra["event_name"] = event.event_name
                self._log.log(event.level, "%s", event.body, extra=extra)

    def close(self) -> None:
        """Nothing to release."""
