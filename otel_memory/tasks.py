"""Tasks: named units of work that become OpenTelemetry spans carrying memory readings.

    from otel_memory import traced_task, set_active_task, clear_active_task

    @traced_task("Regions Dump")
    async def regions_dump() -> None: ...

    with traced_task("Nations Dump Processing"):
        ...

    set_active_task("Nations Dump Download")          # the legacy memory_monitor API
    clear_active_task("Nations Dump Complete")

Each thread and each asyncio task has its own stack of open tasks (a context variable), so
concurrent tasks never end each other's spans; a nested task is a child span. Every start and end
also goes to the ``otel_memory`` logger as a START/END record inside the span's context.
Nothing here raises into the caller: a failed reading only leaves its attributes out.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_memory import attributes as attr
from otel_memory.logline import Marker, format_message
from otel_memory.readings import MemoryReading, get_reading_source
from otel_memory.sampler import PeakSampler
from otel_memory.version import __version__

_log = logging.getLogger("otel_memory")
_tracer = trace.get_tracer("otel_memory", __version__)

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(eq=False, slots=True)
class OpenTask:
    """A task between its start and its end."""

    name: str
    span: Span
    start: MemoryReading | None
    owner: object
    opener: object
    peak_rss: int = 0
    context_token: object = None
    ended: bool = field(default=False)


class OpenTasks:
    """Every open task in the process, in start order; feeds peaks and periodic lines."""

    def __init__(self) -> None:
        self._tasks: OrderedDict[int, OpenTask] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, task: OpenTask) -> None:
        """Register a task that just started."""
        with self._lock:
            self._tasks[id(task)] = task

    def remove(self, task: OpenTask) -> None:
        """Forget a task that ended."""
        with self._lock:
            self._tasks.pop(id(task), None)

    def most_recent(self) -> OpenTask | None:
        """The most recently started task still open, if any."""
        with self._lock:
            return self._tasks[next(reversed(self._tasks))] if self._tasks else None

    def record_rss(self, rss: int) -> None:
        """Raise the peak of every open task to ``rss`` where it is higher."""
        with self._lock:
            for task in self._tasks.values():
                task.peak_rss = max(task.peak_rss, rss)

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)


open_tasks = OpenTasks()
peak_sampler = PeakSampler(on_sample=open_tasks.record_rss, has_work=open_tasks.__bool__)

_stack: ContextVar[tuple[OpenTask, ...]] = ContextVar("otel_memory_task_stack", default=())
_LEGACY_OPENER = object()
_failed_reading_reported = False


def _current_owner() -> object:
    """Who may end a task opened now: the running asyncio task, else the thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        task = None
    return task if task is not None else threading.get_ident()


def read_memory() -> MemoryReading | None:
    """One reading, or None when the platform refuses (reported once per process)."""
    global _failed_reading_reported
    try:
        return get_reading_source().read()
    except Exception as exc:  # psutil.Error, OSError, or a broken custom source
        if not _failed_reading_reported:
            _failed_reading_reported = True
            _log.warning("otel_memory: memory reading failed, attributes left out: %r", exc)
        return None


def emit_line(marker: Marker, name: str, reading: MemoryReading, span: Span | None) -> None:
    """Send one daily-log event to the ``otel_memory`` logger, inside ``span``'s context."""
    if not _log.isEnabledFor(logging.INFO):
        return
    extra: dict[str, object] = {
        attr.LOG_MARKER: marker.short,
        attr.LOG_TASK_NAME: name,
        attr.LOG_TIMESTAMP: reading.timestamp,
        attr.LOG_RSS: reading.rss,
        attr.LOG_VMS: reading.vms,
        attr.LOG_SYSTEM_AVAILABLE: reading.system_available,
        attr.LOG_SYSTEM_FREE_RATIO: reading.free_ratio,
    }
    token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None
    try:
        # makeRecord + handle instead of info(): skips the stack walk that finds the caller.
        record = _log.makeRecord(
            _log.name, logging.INFO, __file__, 0, format_message(marker, name, reading),
            (), None, "emit_line", extra,
        )
        _log.handle(record)
    finally:
        if token is not None:
            otel_context.detach(token)


def _begin(name: str, opener: object) -> OpenTask:
    """Read memory, open the span as a child of the current context, write START."""
    reading = read_memory()
    attributes: dict[str, AttributeValue] = {}
    if reading is not None:
        attributes = {
            attr.RSS_START: reading.rss,
            attr.VMS_START: reading.vms,
            attr.SYSTEM_AVAILABLE_START: reading.system_available,
            attr.SYSTEM_FREE_RATIO_START: reading.free_ratio,
        }
    span = _tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
    task = OpenTask(
        name=name,
        span=span,
        start=reading,
        owner=_current_owner(),
        opener=opener,
        peak_rss=reading.rss if reading is not None else 0,
    )
    open_tasks.add(task)
    peak_sampler.wake()
    if reading is not None:
        emit_line(Marker.START, name, reading, span)
    return task


def _peak(task: OpenTask, end: MemoryReading) -> int:
    """Highest RSS while the task ran: samples, start, end, and the OS high-water mark."""
    start = task.start
    peak = max(task.peak_rss, end.rss, start.rss if start is not None else 0)
    if (
        start is not None
        and start.rss_high_water is not None
        and end.rss_high_water is not None
        and end.rss_high_water > start.rss_high_water
    ):
        # The process reached a new lifetime high while this task ran: that is its exact peak.
        peak = max(peak, end.rss_high_water)
    return peak


def _finish(task: OpenTask, label: str | None, error: BaseException | None) -> None:
    """Read memory, set the end attributes and status, write END, end the span."""
    if task.ended:
        return
    task.ended = True
    open_tasks.remove(task)
    span = task.span
    reading = read_memory()
    if reading is not None:
        attributes: dict[str, AttributeValue] = {
            attr.RSS_END: reading.rss,
            attr.RSS_PEAK: _peak(task, reading),
            attr.VMS_END: reading.vms,
            attr.SYSTEM_AVAILABLE_END: reading.system_available,
            attr.SYSTEM_FREE_RATIO_END: reading.free_ratio,
        }
        if task.start is not None:
            attributes[attr.RSS_DELTA] = reading.rss - task.start.rss
            attributes[attr.VMS_DELTA] = reading.vms - task.start.vms
        span.set_attributes(attributes)
    if label is not None:
        span.set_attribute(attr.TASK_END_LABEL, label)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    elif label is not None and label.endswith("Error"):
        span.set_status(Status(StatusCode.ERROR, label))
    if reading is not None:
        emit_line(Marker.END, label if label is not None else task.name, reading, span)
    span.end()


def _activate(task: OpenTask) -> None:
    """Make ``task`` the innermost task and its span the current span of this context."""
    _stack.set((*_stack.get(), task))
    task.context_token = otel_context.attach(trace.set_span_in_context(task.span))


def _deactivate(task: OpenTask) -> None:
    """Undo :func:`_activate` in this context."""
    _stack.set(tuple(t for t in _stack.get() if t is not task))
    token, task.context_token = task.context_token, None
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def _close_above(task: OpenTask) -> None:
    """End tasks left open above ``task`` in this context (a forgotten clear_active_task)."""
    stack = _stack.get()
    if task not in stack:
        return
    for orphan in reversed(stack[stack.index(task) + 1 :]):
        _log.debug("otel_memory: task %r was still open when %r ended", orphan.name, task.name)
        _finish(orphan, None, None)
        _deactivate(orphan)


def _guard(what: str, fn: Callable[[], None]) -> None:
    """Run instrumentation code; report any failure instead of raising into the host."""
    try:
        fn()
    except Exception:
        _log.exception("otel_memory: %s failed", what)


# --------------------------------------------------------------------------- legacy API


def set_active_task(name: str) -> None:
    """Start a task named ``name`` in the caller's context (span + START line)."""

    def run() -> None:
        _activate(_begin(str(name), _LEGACY_OPENER))

    _guard("set_active_task", run)


def clear_active_task(label: str | None = None, *, error: BaseException | None = None) -> None:
    """End the innermost task of the caller's context; ``label`` goes into the END line.

    A label ending in ``Error``, or ``error=exc``, marks the span ERROR. With no task open in
    this context (or only one another asyncio task or thread opened), nothing happens.
    """

    def run() -> None:
        stack = _stack.get()
        if not stack:
            _log.debug("otel_memory: clear_active_task(%r) with no task open", label)
            return
        task = stack[-1]
        if task.owner != _current_owner():
            _log.debug(
                "otel_memory: clear_active_task(%r) ignored: innermost task %r belongs to "
                "another asyncio task or thread",
                label,
                task.name,
            )
            return
        _finish(task, label, error)
        _deactivate(task)

    _guard("clear_active_task", run)


# --------------------------------------------------------------------------- traced_task


class traced_task:
    """A task as a decorator or a context manager.

    Decorates plain functions, coroutine functions, generator and async generator functions
    (the span covers the generator's whole life; only its own steps run inside the span).
    Exceptions are recorded on the span, mark it ERROR, and are re-raised.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = str(name)

    # ---- context manager

    def __enter__(self) -> traced_task:
        _guard("traced_task enter", lambda: _activate(_begin(self.name, self)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        def run() -> None:
            task = next((t for t in reversed(_stack.get()) if t.opener is self), None)
            if task is None:
                return
            _close_above(task)
            _finish(task, None, _as_error(exc))
            _deactivate(task)

        _guard("traced_task exit", run)

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
        if inspect.isasyncgenfunction(func):
            return cast(_F, _wrap_async_generator(self.name, func))
        if inspect.isgeneratorfunction(func):
            return cast(_F, _wrap_generator(self.name, func))
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return cast(_F, coroutine_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(_F, wrapper)

    def __repr__(self) -> str:
        return f"traced_task({self.name!r})"


def _as_error(exc: BaseException | None) -> BaseException | None:
    """Exceptions that mean failure; closing a generator early is not one."""
    if exc is None or isinstance(exc, GeneratorExit | StopIteration | StopAsyncIteration):
        return None
    return exc


class _Step:
    """Runs one step of a wrapped generator inside its task's context."""

    __slots__ = ("task",)

    def __init__(self, task: OpenTask | None) -> None:
        self.task = task

    def __enter__(self) -> None:
        if self.task is not None:
            _guard("traced_task step", lambda: _activate(self.task))  # type: ignore[arg-type]

    def __exit__(self, *exc_info: object) -> None:
        if self.task is not None:
            _guard("traced_task step", lambda: _deactivate(self.task))  # type: ignore[arg-type]


def _begin_guarded(name: str, opener: object) -> OpenTask | None:
    try:
        return _begin(name, opener)
    except Exception:
        _log.exception("otel_memory: starting task %r failed", name)
        return None


def _finish_guarded(task: OpenTask | None, error: BaseException | None) -> None:
    if task is not None:
        with _Step(task):
            _guard("traced_task end", lambda: _finish(task, None, _as_error(error)))


def _wrap_generator(name: str, func: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        task = _begin_guarded(name, _LEGACY_OPENER)
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
            _finish_guarded(task, error)

    return wrapper


def _wrap_async_generator(
    name: str, func: Callable[..., AsyncGenerator[Any, Any]]
) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        task = _begin_guarded(name, _LEGACY_OPENER)
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
            _finish_guarded(task, error)

    return wrapper
