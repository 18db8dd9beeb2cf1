"""Tasks: named units of work that become OpenTelemetry spans carrying memory readings.

    from otel_memory import traced_task, set_active_task, clear_active_task

    @traced_task("Regions Dump")
    async def regions_dump() -> None: ...

    with traced_task("Nations Dump Processing"):
        ...

    set_active_task("Nations Dump Download")          # the legacy memory_monitor API
    set_active_task("Nations Dump Processing")        # ends Download (flat, as it always was)
    clear_active_task("Nations Dump Complete")

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
import functools
import inspect
import threading
from asyncio import events as _asyncio_events
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_memory.activity.events import EventPipeline, LineEvent
from otel_memory.activity.opentask import OpenTask, OpenTasks
from otel_memory.activity.sampler import PeakSampler
from otel_memory.base import attributes as attr
from otel_memory.base.diagnostics import WarnOnce, logger
from otel_memory.base.logline import Marker
from otel_memory.base.memory import MemoryReading
from otel_memory.base.names import clean_name
from otel_memory.base.version import __version__
from otel_memory.kernel.readings import MemoryReader

_F = TypeVar("_F", bound=Callable[..., Any])
_get_running_loop = _asyncio_events._get_running_loop
_current_thread = threading.current_thread
_INTERNAL = SpanKind.INTERNAL


class _Legacy:
    """The opener of tasks started by ``set_active_task`` (flat semantics)."""

    def __repr__(self) -> str:
        return "set_active_task"


LEGACY = _Legacy()


_stack: ContextVar[tuple[OpenTask, ...]] = ContextVar("otel_memory_task_stack", default=())


def _current_owner() -> object:
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


def _begin(
    rt: Tasks, name: str, opener: object, owner: object, parent: Context | None = None
) -> OpenTask:
    """Read memory, open the span (a child of ``parent`` or the current context), queue START.

    The start attributes are set with the end ones, in one call when the task ends: the SDK
    validates attributes per call, and two calls cost a task about a fifth of a bare span.
    """
    reading = rt.reader.read()
    span = rt.tracer.start_span(name, parent, _INTERNAL)
    task = OpenTask(
        name, span, reading, owner, opener, reading.rss if reading is not None else 0,
        rt.sampler.ticks,
    )
    if rt.open_tasks.add(task):
        rt.sampler.wake()
    deep = rt.deep_capture
    if deep is not None:
        deep.task_started(task, name, task.peak_rss)
    events = rt.events
    if reading is not None and events.active:
        events.put(LineEvent(Marker.START, name, reading, span, task))
    return task


def _peak(task: OpenTask, end: MemoryReading) -> int:
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


def _finish(
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
            task.peak_rss = peak = _peak(task, reading)
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
    attributes: dict[str, AttributeValue] = {}
    start = task.start
    if start is not None:
        attributes[attr.RSS_START] = start.rss
        attributes[attr.VMS_START] = start.vms
        attributes[attr.SYSTEM_AVAILABLE_START] = start.system_available
        attributes[attr.SYSTEM_FREE_RATIO_START] = start.free_ratio
        attributes[attr.LIMIT] = start.system_total
    if end is not None:
        task.peak_rss = _peak(task, end)
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


def _activate(task: OpenTask) -> None:
    """Make ``task`` the innermost task and its span the current span of this context."""
    parent = otel_context.get_current()
    task.parent_context = parent
    task.context = trace.set_span_in_context(task.span, parent)
    task.token = otel_context.attach(task.context)
    _stack.set((*_stack.get(), task))


def _deactivate(task: OpenTask) -> None:
    """Take an ended task out of this context and restore what it replaced, exactly."""
    stack = _stack.get()
    if stack and stack[-1] is task:  # the usual case: the innermost task ends
        _stack.set(stack[:-1])
    elif task in stack:
        _stack.set(tuple(t for t in stack if t is not task and not t.ended))
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


def _end(rt: Tasks, task: OpenTask, label: str | None, error: object, reason: str | None) -> None:
    """End ``task`` and take it out of the caller's context."""
    try:
        _finish(rt, task, label, error, reason)
    finally:
        _deactivate(task)


def _live_stack() -> tuple[OpenTask, ...]:
    """This context's stack without tasks the package already ended (from another thread)."""
    stack = _stack.get()
    if stack and any(t.ended for t in stack):
        stack = tuple(t for t in stack if not t.ended)
        _stack.set(stack)
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
            if task.owner is not None and _owner_finished(task.owner):
                _finish(self, task, reason=attr.END_OWNER_FINISHED)
                _forget_context(task)

    def end_all_open(self, reason: str | None = attr.END_MONITOR_STOPPED) -> None:
        """End every open task in the process (``stop()``, or a test's reset with no reason)."""
        for task in reversed(self.open_tasks.snapshot()):
            _finish(self, task, reason=reason)
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
            owner = _current_owner()
            previous = _innermost_legacy(_live_stack(), owner)
            parent = None
            if previous is not None:
                parent = previous.parent_context
                _end(self, previous, None, None, attr.END_REPLACED)
            task_name = clean_name(name, "task name", self.warn_once)
            _activate(_begin(self, task_name, LEGACY, owner, parent))
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
            task = _innermost_legacy(_live_stack(), _current_owner())
            if task is None:
                logger.debug("otel_memory: clear_active_task(%r) with no task open here", label)
                return
            text = (
                None
                if label is None
                else clean_name(label, "clear_active_task label", self.warn_once)
            )
            _end(self, task, text, error, None)
        except Exception as exc:
            self.report("clear_active_task", exc)

    def traced_task(self, name: str) -> traced_task:
        """A task as a decorator or a context manager (see :class:`traced_task`)."""
        return traced_task(name, self)


# --------------------------------------------------------------------------- traced_task


class traced_task:
    """A task as a decorator or a context manager.

    Decorates plain functions, coroutine functions, generator and async generator functions
    (the span covers the generator's whole life; only its own steps run inside the span).
    Exceptions are recorded on the span, mark it ERROR, and are re-raised.
    """

    __slots__ = ("_tasks", "name")

    def __init__(self, name: str, tasks: Tasks) -> None:
        self._tasks = tasks
        self.name = clean_name(name, "task name", tasks.warn_once)

    # ---- context manager

    def __enter__(self) -> traced_task:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            stack = _stack.get()
            for index in range(len(stack) - 1, -1, -1):
                if stack[index].opener is self:
                    _close(self._tasks, stack[index], exc)
                    return
        except Exception as error:
            self._tasks.report("traced_task exit", error)

    def _open(self) -> OpenTask | None:
        """Open this task in the caller's context (None if that failed, reported once)."""
        try:
            task = _begin(self._tasks, self.name, self, _current_owner())
            _activate(task)
            return task
        except Exception as exc:
            self._tasks.report("traced_task enter", exc)
            return None

    async def __aenter__(self) -> traced_task:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # ---- decorator

    def __call__(self, func: _F) -> _F:
        rt = self._tasks
        if inspect.isasyncgenfunction(func):
            return cast(_F, _wrap_async_generator(rt, self.name, func))
        if inspect.isgeneratorfunction(func):
            return cast(_F, _wrap_generator(rt, self.name, func))
        open_task = self._open
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
                task = open_task()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    _close(rt, task, exc)
                    raise
                _close(rt, task, None)
                return result

            return cast(_F, coroutine_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            task = open_task()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                _close(rt, task, exc)
                raise
            _close(rt, task, None)
            return result

        return cast(_F, wrapper)

    def __repr__(self) -> str:
        return f"traced_task({self.name!r})"


def _close(rt: Tasks, task: OpenTask | None, exc: BaseException | None) -> None:
    """End a ``traced_task`` task (and, first, tasks opened inside it and never cleared)."""
    if task is None:
        return
    try:
        stack = _stack.get()
        if stack and stack[-1] is not task and task in stack:  # a forgotten clear inside
            for orphan in reversed(stack[stack.index(task) + 1 :]):
                _end(rt, orphan, None, None, attr.END_OWNER_FINISHED)
        _end(rt, task, None, _as_error(exc), None)
    except Exception as error:
        rt.report("traced_task exit", error)


def _as_error(exc: BaseException | None) -> BaseException | None:
    """Exceptions that mean failure; closing a generator early is not one."""
    if exc is None or isinstance(exc, GeneratorExit | StopIteration | StopAsyncIteration):
        return None
    return exc


class _Step:
    """Runs one step of a wrapped generator inside its task's context."""

    __slots__ = ("task", "token")

    def __init__(self, task: OpenTask | None) -> None:
        self.task = task
        self.token: object = None

    def __enter__(self) -> None:
        task = self.task
        if task is not None and not task.ended and task.context is not None:
            self.token = otel_context.attach(task.context)
            _stack.set((*_stack.get(), task))

    def __exit__(self, *exc_info: object) -> None:
        task, token, self.token = self.task, self.token, None
        if task is None or token is None:
            return
        stack = _stack.get()
        if task in stack:
            _stack.set(tuple(t for t in stack if t is not task))
        if otel_context.get_current() is task.context:
            otel_context.detach(token)  # type: ignore[arg-type]


def _begin_generator(rt: Tasks, name: str) -> OpenTask | None:
    try:
        task = _begin(rt, name, None, None)
    except Exception as exc:
        rt.report("traced_task start", exc)
        return None
    task.parent_context = otel_context.get_current()
    task.context = trace.set_span_in_context(task.span, task.parent_context)
    return task


def _finish_generator(rt: Tasks, task: OpenTask | None, error: BaseException | None) -> None:
    if task is not None:
        with _Step(task):
            _finish(rt, task, None, _as_error(error), None)


def _wrap_generator(
    rt: Tasks, name: str, func: Callable[..., Generator[Any, Any, Any]]
) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        task = _begin_generator(rt, name)
        step = _Step(task)
        error: BaseException | None = None
        try:
            with step:
                gen = func(*args, **kwargs)
            send: Callable[[Any], Any] = gen.send
            value: Any = None
            while True:
                try:
                    with step:
                        item = send(value)
                except StopIteration as stop:
                    return stop.value
                try:
                    value = yield item
                    send = gen.send
                except GeneratorExit:
                    with step:
                        gen.close()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    value, send = exc, gen.throw
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish_generator(rt, task, error)

    return wrapper


def _wrap_async_generator(
    rt: Tasks, name: str, func: Callable[..., AsyncGenerator[Any, Any]]
) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        task = _begin_generator(rt, name)
        step = _Step(task)
        error: BaseException | None = None
        try:
            with step:
                agen = func(*args, **kwargs)
            send: Callable[[Any], Any] = agen.asend
            value: Any = None
            while True:
                try:
                    with step:
                        item = await send(value)
                except StopAsyncIteration:
                    return
                try:
                    value = yield item
                    send = agen.asend
                except GeneratorExit:
                    with step:
                        await agen.aclose()
                    raise
                except BaseException as exc:
                    value, send = exc, agen.athrow
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish_generator(rt, task, error)

    return wrapper
