"""``traced_task``: a task as a decorator or a context manager.

    @traced_task("Regions Dump")                 # functions, coroutines, (async) generators
    async def regions_dump() -> None: ...

    with traced_task("Nations Dump Processing"):  # or async with
        ...

Nested, unlike the legacy API: each one is a child span of the current one. A generator's task
covers its whole life, and only the generator's own steps run inside its span.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace

from otel_memory.activity.opentask import OpenTask
from otel_memory.activity.tasks import (
    Tasks,
    activate,
    begin,
    current_owner,
    end,
    finish,
    task_stack,
)
from otel_memory.base import attributes as attr
from otel_memory.base.names import clean_name

_F = TypeVar("_F", bound=Callable[..., Any])


class traced_task:  # used as a decorator, named like one
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
            stack = task_stack.get()
            for index in range(len(stack) - 1, -1, -1):
                if stack[index].opener is self:
                    _close(self._tasks, stack[index], exc)
                    return
        except Exception as error:
            self._tasks.report("traced_task exit", error)

    def _open(self) -> OpenTask | None:
        """Open this task in the caller's context (None if that failed, reported once)."""
        try:
            task = begin(self._tasks, self.name, self, current_owner())
            activate(task)
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
        stack = task_stack.get()
        if stack and stack[-1] is not task and task in stack:  # a forgotten clear inside
            for orphan in reversed(stack[stack.index(task) + 1 :]):
                end(rt, orphan, None, None, attr.END_OWNER_FINISHED)
        end(rt, task, None, _as_error(exc), None)
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
            task_stack.set((*task_stack.get(), task))

    def __exit__(self, *exc_info: object) -> None:
        task, token, self.token = self.task, self.token, None
        if task is None or token is None:
            return
        stack = task_stack.get()
        if task in stack:
            task_stack.set(tuple(t for t in stack if t is not task))
        if otel_context.get_current() is task.context:
            otel_context.detach(token)  # type: ignore[arg-type]


def _begin_generator(rt: Tasks, name: str) -> OpenTask | None:
    try:
        task = begin(rt, name, None, None)
    except Exception as exc:
        rt.report("traced_task start", exc)
        return None
    task.parent_context = otel_context.get_current()
    task.context = trace.set_span_in_context(task.span, task.parent_context)
    return task


def _finish_generator(rt: Tasks, task: OpenTask | None, error: BaseException | None) -> None:
    if task is not None:
        with _Step(task):
            finish(rt, task, None, _as_error(error), None)


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
