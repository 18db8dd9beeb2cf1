"""The public API's implementation: each call goes to the process's default runtime.

    from otel_memory import set_active_task, clear_active_task, traced_task, start, stop

This is the only layer (with the instrumentor) that looks the runtime up; everything below it
is handed what it needs. ``otel_memory/__init__.py`` re-exports these names lazily.
"""

from __future__ import annotations

import atexit
import os
import threading

from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from otel_memory.activity.traced import traced_task as TracedTask
from otel_memory.base.config import Config, load_config
from otel_memory.kernel.readings import ReadingSource
from otel_memory.runtime.runtime import get_runtime

__all__ = [
    "TracedTask",
    "clear_active_task",
    "current_config",
    "flush",
    "is_running",
    "set_active_task",
    "set_reading_source",
    "start",
    "stop",
    "traced_task",
    "write_check_line",
]

_atexit_lock = threading.Lock()
_atexit_registered = False


def set_active_task(name: str) -> None:
    """Start a task named ``name`` in the caller's context (span + START line).

    Flat, as the original ``memory_monitor`` module was: a task this thread or asyncio task
    opened with ``set_active_task`` and has not cleared is ended first
    (``end_reason = "replaced"``, no END line), and the new one is opened as its sibling.
    """
    get_runtime().tasks.set_active_task(name)


def clear_active_task(label: str | None = None, *, error: BaseException | None = None) -> None:
    """End the caller's innermost ``set_active_task`` task; ``label`` goes into the END line.

    A label ending in ``Error``, or ``error=exc``, marks the span ERROR. With no such task open
    in this thread or asyncio task, nothing happens.
    """
    get_runtime().tasks.clear_active_task(label, error=error)


def traced_task(name: str) -> TracedTask:
    """A task as a decorator (functions, coroutines, (async) generators) or a context manager
    (``with`` / ``async with``); exceptions are recorded on the span and re-raised."""
    return TracedTask(name, get_runtime().tasks)


def start(
    config: Config | str | os.PathLike[str] | None = None,
    *,
    reading_source: ReadingSource | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
) -> None:
    """Start the monitor; a second call while running does nothing.

    ``config`` is a :class:`Config`, a YAML path, or None (environment and defaults); a bad one
    raises :class:`~otel_memory.ConfigError` before anything starts. The providers default to
    the global ones.
    """
    global _atexit_registered
    resolved = config if isinstance(config, Config) else load_config(config)
    started = get_runtime().monitor.start(
        resolved,
        reading_source=reading_source,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
    )
    if started:
        with _atexit_lock:
            if not _atexit_registered:
                atexit.register(stop)
                _atexit_registered = True


def stop() -> None:
    """End open tasks, write the final line, flush, and stop everything :func:`start` started."""
    get_runtime().monitor.stop()


def is_running() -> bool:
    """Whether the monitor has been started and not stopped."""
    return get_runtime().monitor.running


def current_config() -> Config | None:
    """The configuration the running monitor was started with."""
    return get_runtime().monitor.config


def write_check_line(name: str | None = None) -> None:
    """Queue one ``---`` line now: ``name``, else the most recent open task, else ``Idle``."""
    get_runtime().monitor.write_check_line(name)


def flush() -> None:
    """Write out every queued line and record now (tests, tools, before reading the file)."""
    get_runtime().events.flush()


def set_reading_source(source: ReadingSource | None) -> None:
    """Replace the process-wide reading source; ``None`` restores psutil."""
    get_runtime().set_reading_source(source)
