"""Tasks: named units of work that become OpenTelemetry spans carrying memory readings.

    tasks = Tasks(reader, open_tasks, sampler, events, warn_once)   # the runtime builds it
    tasks.set_active_task("Nations Dump Download")    # the legacy memory_monitor API
    tasks.set_active_task("Nations Dump Processing")  # ends Download (flat, as it always was)
    tasks.clear_active_task("Nations Dump Complete")

:mod:`otel_memory.activity.traced` builds ``traced_task`` on the same steps (:func:`begin`,
:func:`activate`, :func:`end`); the public functions are in :mod:`otel_memory.api`.

Each thread and each asyncio task has its own stack of open tasks (a context variable), so
concurrent tasks never end each other's spans. ``traced_task`` nests (a child span); the legacy
API is flat (SPEC: Task life rules). A task whose owner (thread or asyncio task) finished is
ended by the sampler with ``memory.task.end_reason = "owner_finished"``; ``stop()`` ends the rest
(``monitor_stopped``). Ending a task restores the OpenTelemetry context to what it would have
been without the task. Start and end cost the caller one reading, the span and one queued event:
the daily line, the OTel log record and the task histograms are produced off the caller's thread
(:mod:`otel_memory.activity.events`). Nothing here raises into the caller, whatever its arguments.
"""

from __future__ import annotations

import asyncio
import threading
from asyncio import events as _asyncio_events
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_memory.activity.events import EventPipeline, LineEvent
from otel_memory.activity.opentask import REQUEST, OpenTask, OpenTasks, request_stack
from otel_memory.activity.sampler import PeakSampler
from otel_memory.base import attributes as attr
from otel_memory.base.diagnostics import WarnOnce, logger
from otel_memory.base.logline import Marker
from otel_memory.base.memory import MemoryReading
from otel_memory.base.names import clean_name
from otel_memory.base.version import __version__
from otel_memory.kernel.readings import MemoryReader

_get_running_loop = _asyncio_events._get_running_loop
_current_thread = threading.current_thread
_INTERNAL = SpanKind.INTERNAL


class _Legacy:
    """The opener of tasks started by ``set_active_task`` (flat semantics)."""

    def __repr__(self) -> str:
        return "set_active_task"


LEGACY = _Legacy()


task_stack: ContextVar[tuple[OpenTask, ...]] = ContextVar("otel_memory_task_stack", default=())


def current_owner() -> object:
    """Who owns a task opened now: the running asyncio task, else the thread."""
    if _get_running_loop() is not None:
        task = asyncio.current_task()
        if task is not None:
            return task
    return _current_thread()


def _owner_finished(owner: object) -> bool:
    if isinstance(owner, asyncio.Future):
        return owner.done()
    if isinstance(owner, threading.Thread):
        return not owner.is_alive()
    return False


# --------------------------------------------------------------------------- start and end


def begin(
    rt: Tasks, name: str, opener: object, owner: object, parent: Context | None = None
) -> OpenTask:
    """Read memory, open the span (a child of ``parent`` or the current context), queue START.

    The start attributes are set with the end ones, in one call when the task ends: the SDK
    validates attributes per call, and two calls cost a task about a fifth of a bare span.
    """
    reading = rt.reader.read()
    span = rt.tracer.start_span(name, parent, _INTERNAL)
    ancestors = task_stack.get()  # not counted in memory.task.overlap, nor requests around it
    requests = request_stack.get()
    task = OpenTask(
        name, span, reading, owner, opener, reading.rss if reading is not None else 0,
        rt.sampler.ticks, requests + ancestors if requests else ancestors,
    )
    events = rt.events
    if reading is not None and events.active:  # first: put() may wait, and stop() ends what is open
        events.put(LineEvent(Marker.START, name, reading, span, task))
    if rt.open_tasks.add(task):
        rt.sampler.wake()
    deep = rt.deep_capture
    if deep is not None:
        deep.task_started(task, name, task.peak_rss)
    return task


def peak_of(task: OpenTask, end: MemoryReading) -> int:
    """Highest RSS while the task ran: samples (and the high-water marks the sampler gave it),
    start and end; a source whose readings carry the high-water mark gives it exactly."""
    start = task.start
    peak = max(task.peak_rss, end.rss)
    if (
        start is not None
        and start.rss_high_water is not None
        and end.rss_high_water is not None
        and end.rss_high_water > start.rss_high_water
    ):
        # The process reached a new lifetime high while this task ran: that is its exact peak.
        peak = max(peak, end.rss_high_water)
    return peak


def finish(
    rt: Tasks,
    task: OpenTask,
    label: str | None = None,
    error: object = None,
    reason: str | None = None,
) -> None:
    """End ``task`` exactly once: end attributes, status, END line, span end."""
    if task.ended:
        return
    task.ended = True
    rt.open_tasks.remove(task)
    span = task.span
    try:
        reading = rt.reader.read()
        start = task.start
        attributes: dict[str, AttributeValue]
        if reading is not None and start is not None:  # the usual case: one dict literal
            task.peak_rss = peak = peak_of(task, reading)
            attributes = {
                attr.RSS_START: start.rss,
                attr.VMS_START: start.vms,
                attr.SYSTEM_AVAILABLE_START: start.system_available,
                attr.SYSTEM_FREE_RATIO_START: start.free_ratio,
                attr.LIMIT: start.system_total,
                attr.RSS_END: reading.rss,
                attr.RSS_PEAK: peak,
                attr.VMS_END: reading.vms,
                attr.SYSTEM_AVAILABLE_END: reading.system_available,
                attr.SYSTEM_FREE_RATIO_END: reading.free_ratio,
                attr.RSS_DELTA: reading.rss - start.rss,
                attr.VMS_DELTA: reading.vms - start.vms,
                attr.TASK_OVERLAP: task.overlap,
            }
        else:
            attributes = _one_side_attributes(task, reading)
        if label is not None:
            attributes[attr.TASK_END_LABEL] = label
        if reason is not None:
            attributes[attr.TASK_END_REASON] = reason
        span.set_attributes(attributes)
        if error is not None or (label is not None and label.endswith("Error")):
            _set_status(rt, span, label, error)
        deep = rt.deep_capture
        if deep is not None:
            report = deep.task_ended(task)
            on_allocations = rt.on_allocations
            if report is not None and on_allocations is not None:
                on_allocations(task, report)
        events = rt.events
        if reading is not None and reason != attr.END_REPLACED and events.active:
            name = label if label is not None else task.name
            events.put(LineEvent(Marker.END, name, reading, span, task))
    except Exception as exc:
        rt.warn_once("finish", "otel_memory: ending task %r failed: %r", task.name, exc)
    finally:
        span.end()


def _one_side_attributes(task: OpenTask, end: MemoryReading | None) -> dict[str, AttributeValue]:
    """The attributes of a task whose start or end reading failed: what is known."""
    attributes: dict[str, AttributeValue] = {attr.TASK_OVERLAP: task.overlap}
    start = task.start
    if start is not None:
        attributes[attr.RSS_START] = start.rss
        attributes[attr.VMS_START] = start.vms
        attributes[attr.SYSTEM_AVAILABLE_START] = start.system_available
        attributes[attr.SYSTEM_FREE_RATIO_START] = start.free_ratio
        attributes[attr.LIMIT] = start.system_total
    if end is not None:
        task.peak_rss = peak_of(task, end)
        attributes[attr.RSS_END] = end.rss
        attributes[attr.RSS_PEAK] = task.peak_rss
        attributes[attr.VMS_END] = end.vms
        attributes[attr.SYSTEM_AVAILABLE_END] = end.system_available
        attributes[attr.SYSTEM_FREE_RATIO_END] = end.free_ratio
    return attributes


def _set_status(rt: Tasks, span: Span, label: str | None, error: object) -> None:
    if error is None:
        if label is not None and label.endswith("Error"):
            span.set_status(Status(StatusCode.ERROR, label))
        return
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        return
    rt.warn_once(
        "error type",
        "otel_memory: error= should be an exception instance, got %s",
        type(error).__name__,
    )
    description = (
        error.__name__ if isinstance(error, type) else clean_name(error, "error", rt.warn_once)
    )
    span.set_status(Status(StatusCode.ERROR, description))


def activate(task: OpenTask) -> None:
    """Make ``task`` the innermost task and its span the current span of this context."""
    parent = otel_context.get_current()
    task.parent_context = parent
    task.context = trace.set_span_in_context(task.span, parent)
    task.token = otel_context.attach(task.context)
    task_stack.set((*task_stack.get(), task))


def _deactivate(task: OpenTask) -> None:
    """Take an ended task out of this context and restore what it replaced, exactly."""
    stack = task_stack.get()
    if stack and stack[-1] is task:  # the usual case: the innermost task ends
        task_stack.set(stack[:-1])
    elif task in stack:
        task_stack.set(tuple(t for t in stack if t is not task and not t.ended))
    context, token, task.token = task.context, task.token, None
    if context is None:
        return
    if token is not None and otel_context.get_current() is context:
        otel_context.detach(token)  # type: ignore[arg-type]
    else:
        _forget_context(task)


def _forget_context(task: OpenTask) -> None:
    """Make the task's context equal to the one it was opened in, wherever it is still held.

    When a task ends while another span was made current on top of it (or from another thread),
    a later detach elsewhere would bring the task's context back and parent new spans to the
    ended task. Contexts are immutable by contract, but this one is ours alone: rewriting it to
    its parent's content makes every later restore land on exactly what it would have been.
    """
    context, parent = task.context, task.parent_context
    if context is None or parent is None or context is parent:
        return
    dict.clear(context)
    dict.update(context, parent)


def end(rt: Tasks, task: OpenTask, label: str | None, error: object, reason: str | None) -> None:
    """End ``task`` and take it out of the caller's context."""
    try:
        finish(rt, task, label, error, reason)
    finally:
        _deactivate(task)


def _live_stack() -> tuple[OpenTask, ...]:
    """This context's stack without tasks the package already ended (from another thread)."""
    stack = task_stack.get()
    if stack and any(t.ended for t in stack):
        stack = tuple(t for t in stack if not t.ended)
        task_stack.set(stack)
    return stack


def _innermost_legacy(stack: tuple[OpenTask, ...], owner: object) -> OpenTask | None:
    for task in reversed(stack):
        if task.opener is LEGACY and task.owner is owner:
            return task
    return None


class DeepCaptureHooks(Protocol):
    """What tasks and the sampler tell deep capture (:mod:`otel_memory.guards.deepcapture`)."""

    def task_started(self, key: object, name: str, start_rss: int) -> None: ...

    def sampled(self, rss: int) -> None: ...

    def task_ended(self, key: object) -> Any: ...

    def close(self) -> None: ...


class Tasks:
    """Opens and ends tasks: what every task of the process shares, handed in by the runtime.

    Args:
        reader: takes the readings at each task boundary.
        open_tasks: the registry of open tasks (peaks, ``---`` lines).
        sampler: woken when a task opens while none was.
        events: where START/END lines go (drained off the caller's thread).
        warn_once: reports bad arguments and failures once, never raising.
    """

    def __init__(
        self,
        reader: MemoryReader,
        open_tasks: OpenTasks,
        sampler: PeakSampler,
        events: EventPipeline,
        warn_once: WarnOnce,
    ) -> None:
        self.reader = reader
        self.open_tasks = open_tasks
        self.sampler = sampler
        self.events = events
        self.warn_once = warn_once
        self.tracer: Tracer = trace.get_tracer("otel_memory", __version__)
        self.deep_capture: DeepCaptureHooks | None = None
        """The deep-capture hooks while ``deep_capture.enabled``, else None."""
        self.on_allocations: Callable[[OpenTask, Any], None] | None = None
        """Receives a deep-captured task's allocation report at its end, or None."""

    def set_tracer_provider(self, provider: TracerProvider | None) -> None:
        """Open task spans on ``provider``; None follows the global provider."""
        self.tracer = trace.get_tracer("otel_memory", __version__, provider)

    def end_orphans(self) -> None:
        """End every open task whose owner (thread or asyncio task) has finished."""
        for task in self.open_tasks.snapshot():
            if task.opener is REQUEST:  # another library's span: not ours to end, only forget
                if task.owner is not None and _owner_finished(task.owner):
                    self.open_tasks.remove(task)
                continue
            if task.owner is not None and _owner_finished(task.owner):
                finish(self, task, reason=attr.END_OWNER_FINISHED)
                _forget_context(task)

    def end_all_open(self, reason: str | None = attr.END_MONITOR_STOPPED) -> None:
        """End every open task in the process (``stop()``, or a test's reset with no reason)."""
        for task in reversed(self.open_tasks.snapshot()):
            if task.opener is REQUEST:  # its library ends it; it gets its attributes then
                self.open_tasks.remove(task)
                continue
            finish(self, task, reason=reason)
            if task.token is not None and otel_context.get_current() is task.context:
                _deactivate(task)
            else:
                _forget_context(task)
        _live_stack()

    def report(self, what: str, exc: Exception) -> None:
        """Report a failure of ``what`` once."""
        self.warn_once(what, "otel_memory: %s failed: %r", what, exc)

    # ----------------------------------------------------------------------- legacy API

    def set_active_task(self, name: str) -> None:
        """Start a task named ``name`` in the caller's context (span + START line).

        Flat, as the original module was: a task this thread or asyncio task opened with
        ``set_active_task`` and has not cleared is ended first (``end_reason = "replaced"``, no
        END line), and the new one is opened as its sibling.
        """
        try:
            owner = current_owner()
            previous = _innermost_legacy(_live_stack(), owner)
            parent = None
            if previous is not None:
                parent = previous.parent_context
                end(self, previous, None, None, attr.END_REPLACED)
            task_name = clean_name(name, "task name", self.warn_once)
            activate(begin(self, task_name, LEGACY, owner, parent))
        except Exception as exc:
            self.report("set_active_task", exc)

    def clear_active_task(
        self, label: str | None = None, *, error: BaseException | None = None
    ) -> None:
        """End the caller's innermost ``set_active_task`` task; ``label`` goes into the END line.

        A label ending in ``Error``, or ``error=exc``, marks the span ERROR. With no such task
        open in this thread or asyncio task, nothing happens.
        """
        try:
            task = _innermost_legacy(_live_stack(), current_owner())
            if task is None:
                logger.debug("otel_memory: clear_active_task(%r) with no task open here", label)
                return
            text = (
                None
                if label is None
                else clean_name(label, "clear_active_task label", self.warn_once)
            )
            end(self, task, text, error, None)
        except Exception as exc:
            self.report("clear_active_task", exc)
