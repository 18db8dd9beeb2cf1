"""The event pipeline: task boundaries and notices leave the caller's thread through one queue.

    pipeline = EventPipeline()
    pipeline.set_sinks([DailyLogSink(writer), OTelLogSink(mode="events")])
    pipeline.put(LineEvent(Marker.START, "Nations Dump Download", reading, span, task))
    pipeline.flush()          # at stop(), at exit, before fork: nothing queued is lost

A task's START/END cost the caller one ``deque.append``: formatting, the file write, the OTel log
record and the task histograms happen on a daemon thread (``otel-memory-events``) that drains
the queue in order, a batch at a time, so the daily file gets one ``write`` per batch; with
nothing queued the thread sleeps until the next event (an idle process pays no wake-ups).
A request span's end queues its histogram record the same way (:class:`RequestEnd`).

The queue is bounded and loses no daily line (SPEC v0.3). When it is full, the thread that
produces a line waits for the writer (blocked, without CPU); when the writer makes no room
within a period (it is not running, or its disk is slow) the producer writes a batch itself,
in order, under the same lock. While the backlog is above half the queue, sinks marked
``droppable`` (OTel log records of task lines) get only the batch's ``---`` lines and notices:
the task lines they miss are counted (``otel_memory.events.dropped``, reported once per
episode). A sink's own event, or a signal handler's during a drain, never waits on itself.

A child process may end with ``os._exit()`` as soon as its work returns (``multiprocessing``'s
children, a pool's terminated workers): neither ``atexit`` nor the thread runs then. So in a
forked or ``multiprocessing`` child a task's END writes the queue in the caller's thread (its
lines are in the file when it ends), and ``multiprocessing``'s exit finalizers write the rest.
Only the sinks marked ``durable`` (the daily file) are written then; the others (histograms,
OTel records, lost at ``os._exit()`` anyway) get those events from the thread, in order.
"""

from __future__ import annotations

import logging
import os
import sys
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

DEFAULT_CAPACITY = 2048
"""Events queued before the threads that produce lines wait for the writer (at most a few MB)."""
DEFAULT_PERIOD = 0.2
"""Seconds between drains while events arrive: how late a line may reach the file."""
_BATCH = 512
"""Events per sink call (one file write); also the backlog that wakes the sleeping writer."""
_FORK_FLUSH_TIMEOUT = 1.0
"""Seconds fork() waits for a drain in progress; past that the parent writes its lines itself."""
_END = Marker.END
_CHECK = Marker.CHECK
_get_ident = threading.get_ident


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


class RequestEnd(NamedTuple):
    """A request or job span ended: its growth, max(0, peak - start), for the request histogram.

    Recorded on the pipeline's thread, in the span's context (exemplars link to it): the
    request's own thread pays one ``deque.append`` instead of an SDK histogram record.
    """

    task: OpenTask
    growth: int


Event = LineEvent | Notice | RequestEnd


class Sink(Protocol):
    """Receives the queued events in order, a batch at a time, on the pipeline's thread.

    A sink with a true ``droppable`` attribute may miss task lines under overload (counted);
    one with a true ``durable`` attribute is written by a child process's END at once.
    """

    def write(self, batch: Sequence[Event]) -> None:
        """Handle one batch; may raise (reported once, the pipeline goes on)."""
        ...

    def close(self) -> None:
        """Release resources (the pipeline has flushed)."""
        ...


def _is_task_line(event: Event) -> bool:
    return type(event) is LineEvent and event.marker is not _CHECK


class EventPipeline:
    """A bounded queue drained in order by one daemon thread into the configured sinks.

    Args:
        capacity: events queued before producers of lines wait for the writer.
        period: seconds the thread sleeps between drains.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, period: float = DEFAULT_PERIOD) -> None:
        self.capacity = capacity
        self.period = period
        self.dropped = 0
        self._queue: deque[Event] = deque()
        self._deferred: deque[Event] = deque()  # written to the durable sinks, not yet the others
        self._sinks: tuple[Sink, ...] = ()
        self._open = False  # put() queues: there are sinks and close() has not begun
        self._droppable: frozenset[int] = frozenset()  # id() of the droppable sinks
        self._durable: tuple[Sink, ...] = ()
        self._others: tuple[Sink, ...] = ()
        self._warn_once = WarnOnce()
        self._write_through = False  # a child process: a task's END writes the queue
        self._hooked_multiprocessing = False
        self._init_threading()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=self._before_fork, after_in_child=self._after_fork_in_child)

    def _init_threading(self) -> None:
        self._drain_lock = threading.RLock()  # RLock: a drain interrupted by a signal handler
        self._drainer: int | None = None  # the thread holding _drain_lock
        self._room = threading.Condition(threading.Lock())
        self._waiting = 0  # producers waiting for room
        self._start_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._idle = False  # the thread waits, with no timeout, for the next event

    @property
    def active(self) -> bool:
        """Whether any sink listens (without one, :meth:`put` does nothing)."""
        return self._open

    def set_sinks(self, sinks: Iterable[Sink]) -> None:
        """Replace the sinks; what was queued for the old ones is written to them first."""
        self.flush()
        self._sinks = tuple(sinks)
        self._droppable = frozenset(id(s) for s in self._sinks if getattr(s, "droppable", False))
        self._durable = tuple(s for s in self._sinks if getattr(s, "durable", False))
        self._others = tuple(s for s in self._sinks if not getattr(s, "durable", False))
        self._open = bool(self._sinks)
        if self._sinks:
            self._hook_multiprocessing()

    def put(self, event: Event, wait: bool = True) -> None:
        """Queue one event (the caller's hot path: never raises).

        When the queue is full the caller waits for the writer (back-pressure); ``wait=False``
        is for the rare lines and notices of the package's own threads, which never wait.
        """
        if not self._open:
            return
        queue = self._queue
        queued = len(queue)
        if queued >= self.capacity and wait and not self._make_room():
            return  # close() began while the caller waited
        queue.append(event)
        if self._write_through and event[0] is _END:
            self._write_durable()
        elif self._idle or queued == _BATCH:  # a backlog: no need to wait for the period
            self._wakeup.set()
        elif self._thread is None:
            self._start_thread()

    def flush(self, timeout: float = -1) -> None:
        """Write everything queued now, in the caller's thread (``timeout``: for the lock)."""
        self._drain(max(self._backlog(), 1), timeout)

    def close(self) -> None:
        """Drain, stop the thread, close and forget the sinks."""
        self._open = False  # nothing more is queued, so the drain below ends under any load
        with self._start_lock:
            thread, self._thread = self._thread, None
            self._stopping = True
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._room:  # producers waiting for room: there is nothing to wait for now
            self._room.notify_all()
        self._drain()
        sinks, self._sinks = self._sinks, ()
        self._droppable = frozenset()
        self._durable = self._others = ()
        self._queue.clear()  # a producer that passed the check above as close() began
        self._deferred.clear()
        for sink in sinks:
            try:
                sink.close()
            except Exception as exc:
                logger.warning("otel_memory: closing %r failed: %r", sink, exc)
        with self._start_lock:
            self._stopping = False

    def _backlog(self) -> int:
        return len(self._queue) + len(self._deferred)

    def _write_durable(self) -> None:
        """A child's END: the durable sinks get everything queued now, in the caller's thread;
        the others get it from the thread (their records die with ``os._exit()`` anyway)."""
        if self._drainer == _get_ident():
            return
        with self._drain_lock:
            self._drainer = _get_ident()
            try:
                queue = self._queue
                batch = [queue.popleft() for _ in range(len(queue))]
                self._write_to(self._durable, batch, shed=False)
                self._deferred.extend(batch)
            finally:
                self._drainer = None
        if len(self._deferred) >= self.capacity:  # the thread is behind: its work is ours
            self._drain(_BATCH)
        elif self._idle:
            self._wakeup.set()

    def _has_room(self) -> bool:
        return len(self._queue) < self.capacity or not self._open

    def _make_room(self) -> bool:
        """Back-pressure: wait while the writer frees room; after a period without it, write.

        Returns whether the event is still to be queued (not when close() began meanwhile).
        """
        if self._drainer == _get_ident():
            return True  # a sink's own event, or a signal handler interrupting a drain
        self._wakeup.set()
        room = self._room
        with room:
            self._waiting += 1
            try:
                room.wait_for(self._has_room, self.period)
            finally:
                self._waiting -= 1
        if not self._has_room():  # the writer is not running, or its disk is slow
            self._drain(_BATCH)
        return self._open

    def _start_thread(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopping:
                return
            thread = threading.Thread(target=self._run, name="otel-memory-events", daemon=True)
            self._thread = thread  # before start(): the thread checks it is the current one
            thread.start()

    def _run(self) -> None:
        # While events flow, drain every `period` (a batch per write); with a batch or more
        # queued, drain again at once. Only after a whole period brought nothing does the thread
        # sleep until put() wakes it: an idle process pays no wake-ups, and a steady one never
        # makes put() wake the thread. Each drain is bounded, so close() is seen under any load.
        me = threading.current_thread()
        busy = True
        while self._thread is me:
            if self._backlog() < _BATCH:
                if busy or self._backlog():
                    self._wakeup.wait(self.period)
                else:
                    self._idle = True
                    if not self._backlog():  # an event put before _idle was set must not wait
                        self._wakeup.wait()
                    self._idle = False
                self._wakeup.clear()
            busy = self._drain(self._backlog())

    def _drain(self, limit: int | None = None, timeout: float = -1) -> bool:
        """Write queued events to the sinks in order, one batch per hold of the lock: up to
        ``limit`` events (None: until the queue is empty); returns whether there was any."""
        queue, deferred = self._queue, self._deferred
        left = limit
        drained = False
        # The lock is taken even with nothing queued: a batch another thread popped may still
        # be on its way to the sinks, and a flush returns only once it is written.
        while left is None or left > 0:
            if not self._drain_lock.acquire(timeout=timeout):
                break
            try:
                self._drainer = _get_ident()
                written = self._write_batch(_BATCH if left is None else min(left, _BATCH))
            finally:
                self._drainer = None
                self._drain_lock.release()
            if not written:
                break
            drained = True
            if left is not None:
                left -= written
            if self._waiting:
                with self._room:
                    self._room.notify_all()
        if not queue and not deferred and self._warn_once.forget("dropped"):
            logger.warning(
                "otel_memory: the event writer caught up; %d OTel log records dropped so far",
                self.dropped,
            )
        return drained

    def _write_batch(self, size: int) -> int:
        """Pop up to ``size`` events and hand them to every sink (under the drain lock); those
        a child's END already gave the durable sinks go first, to the others."""
        shed = bool(self._droppable) and self._backlog() >= self.capacity // 2
        sinks = self._sinks
        queue = self._queue
        if self._deferred:
            queue, sinks = self._deferred, self._others
        batch: list[Event] = []
        pop = queue.popleft
        try:
            while len(batch) < size:
                batch.append(pop())
        except IndexError:
            pass
        if not batch:
            return 0
        self._write_to(sinks, batch, shed)
        return len(batch)

    def _write_to(self, sinks: tuple[Sink, ...], batch: list[Event], shed: bool) -> None:
        for sink in sinks:
            events: Sequence[Event] = batch
            if shed and id(sink) in self._droppable:
                events = [event for event in batch if not _is_task_line(event)]
                self._count_dropped(len(batch) - len(events))
            try:
                sink.write(events)
            except Exception as exc:  # a sink's trouble must not stop the others
                self._warn_once(
                    f"sink {type(sink).__name__}",
                    "otel_memory: %s failed, its events are lost: %r",
                    type(sink).__name__,
                    exc,
                )

    def _count_dropped(self, count: int) -> None:
        if count:
            self.dropped += count  # under the drain lock: exact
            self._warn_once(
                "dropped",
                "otel_memory: the event writer is behind: OTel log records of task lines are "
                "dropped and counted (otel_memory.events.dropped); the daily file loses none",
            )

    def _hook_multiprocessing(self) -> None:
        """Have every ``multiprocessing`` child (fork, spawn, forkserver) write what it queued
        at its exit, which runs neither ``atexit`` nor this thread (``os._exit()``)."""
        util = sys.modules.get("multiprocessing.util")
        if util is None or self._hooked_multiprocessing:
            return
        self._hooked_multiprocessing = True
        # Called in each child after its finalizers were cleared, whatever the start method.
        util.register_after_fork(self, EventPipeline._enter_child)
        process = sys.modules.get("multiprocessing.process")
        if process is not None and process.parent_process() is not None:
            self._enter_child()  # started inside a child, after that point

    def _enter_child(self) -> None:
        self._write_through = True
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util.Finalize(self, self.flush, exitpriority=0)

    def write_through(self) -> None:
        """From now on a task's END writes the durable sinks in the caller's thread, as in a
        forked child: for a process that may end without :meth:`close`."""
        self._write_through = True

    def _before_fork(self) -> None:
        self._hook_multiprocessing()
        # The parent keeps its queue and writes it anyway; flushing first keeps the file in
        # order (the parent's lines before the child's) and serves a parent that _exit()s next.
        if self._sinks and self._drainer != _get_ident():
            self.flush(_FORK_FLUSH_TIMEOUT)

    def _after_fork_in_child(self) -> None:
        # The child starts with an empty queue (the parent writes what was queued) and its own
        # locks and thread, started on its first event; it may end with os._exit().
        self._queue = deque()
        self._deferred = deque()
        self._init_threading()
        self._write_through = True


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
