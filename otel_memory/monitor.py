"""The monitor's life: :func:`start` wires the daily log, the log bridge, the periodic lines,
the gauges and the heap profiler; :func:`stop` writes a final line and takes them down.

    import otel_memory

    otel_memory.start("memory.yaml")    # or a Config, or None: environment + defaults
    ...
    otel_memory.stop()                  # also runs at interpreter exit

Both are idempotent and thread-safe. Tasks work without :func:`start`; it adds the outputs.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from opentelemetry import _logs, metrics, trace

from otel_memory import retention, tasks
from otel_memory.config import Config, load_config
from otel_memory.dailylog import DailyLogHandler
from otel_memory.logbridge import OTelLogHandler
from otel_memory.logline import IDLE, Marker
from otel_memory.metrics import install_metrics
from otel_memory.profiler import start_profiler
from otel_memory.readings import ReadingSource, get_reading_source, set_reading_source

_log = logging.getLogger("otel_memory")

STARTED = "Monitor Started"
"""The name on the ``---`` line written when the monitor starts."""
STOPPED = "Monitor Stopped"
"""The name on the final ``---`` line written by :func:`stop`."""
_FLUSH_TIMEOUT_MILLIS = 3000


class _Closeable(Protocol):
    def close(self) -> None: ...


def write_check_line(name: str | None = None) -> None:
    """Write one ``---`` line now: ``name``, else the most recent open task, else ``Idle``."""
    reading = tasks.read_memory()
    if reading is None:
        return
    task = tasks.open_tasks.most_recent() if name is None else None
    label = name if name is not None else (task.name if task is not None else IDLE)
    tasks.emit_line(Marker.CHECK, label, reading, task.span if task is not None else None)


class _PeriodicLines:
    """A daemon thread: a ``---`` line every ``interval`` seconds, retention once a day."""

    def __init__(self, interval: float, on_new_day: Callable[[], None]) -> None:
        self._interval = interval
        self._on_new_day = on_new_day
        self._stop = threading.Event()
        self._day: date | None = None
        self._thread = threading.Thread(target=self._run, name="otel-memory-periodic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def _tick(self) -> None:
        try:
            today = date.today()
            if today != self._day:
                self._day = today
                self._on_new_day()
            write_check_line()
        except Exception:  # the thread must outlive any single failure
            _log.exception("otel_memory: periodic line failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


@dataclass
class _Running:
    """What :func:`start` set up, so :func:`stop` can take it down."""

    config: Config
    handlers: list[logging.Handler] = field(default_factory=list)
    components: list[_Closeable] = field(default_factory=list)
    previous_level: int = logging.NOTSET
    previous_source: ReadingSource | None = None


_lock = threading.RLock()
_running: _Running | None = None
_atexit_registered = False


def _resolve(config: Config | str | os.PathLike[str] | None) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def is_running() -> bool:
    """Whether the monitor has been started and not stopped."""
    return _running is not None


def current_config() -> Config | None:
    """The configuration the running monitor was started with."""
    running = _running
    return running.config if running is not None else None


def start(
    config: Config | str | os.PathLike[str] | None = None,
    *,
    reading_source: ReadingSource | None = None,
) -> None:
    """Start the monitor; a second call while running does nothing.

    ``config`` is a :class:`Config`, a YAML path, or None (environment and defaults); a bad one
    raises :class:`~otel_memory.ConfigError` before anything starts.
    """
    global _running, _atexit_registered
    with _lock:
        if _running is not None:
            _log.debug("otel_memory: start() while running: ignored")
            return
        resolved = _resolve(config)
        monitor = resolved.monitor
        running = _Running(config=resolved)
        if reading_source is not None:
            running.previous_source = get_reading_source()
            set_reading_source(reading_source)
        running.previous_level = _log.level
        if _log.getEffectiveLevel() > logging.INFO:
            _log.setLevel(logging.INFO)
        if monitor.enabled and monitor.log_dir:
            running.handlers.append(DailyLogHandler(monitor.log_dir))
        if monitor.export_logs:
            running.handlers.append(OTelLogHandler())
        for handler in running.handlers:
            _log.addHandler(handler)
        tasks.peak_sampler.interval = monitor.sample_interval_ms / 1000
        _running = running
        try:
            _start_components(running)
        except BaseException:
            _running = None
            _teardown(running)
            raise
        if not _atexit_registered:
            atexit.register(stop)
            _atexit_registered = True


def _start_components(running: _Running) -> None:
    """Threads and instruments; each is closed by :func:`stop` in reverse order."""
    config = running.config
    monitor = config.monitor
    profiler = start_profiler(config)  # its thread runs only with memory_profiling.enabled
    running.components.append(profiler)
    running.components.append(
        install_metrics(config, profiler=profiler if config.profiling.enabled else None)
    )
    if monitor.enabled:
        write_check_line(STARTED)
        periodic = _PeriodicLines(monitor.interval_seconds, lambda: _archive(config))
        periodic.start()
        running.components.append(periodic)


def _archive(config: Config) -> None:
    """Gzip daily logs past retention (once a day, from the periodic thread)."""
    monitor = config.monitor
    if not monitor.log_dir or monitor.retention_days == 0:
        return
    try:
        result = retention.archive_old_logs(
            monitor.log_dir, monitor.retention_days, monitor.delete_archives_after_days
        )
    except (OSError, ValueError) as exc:
        _log.warning("otel_memory: archiving old daily logs failed: %s", exc)
        return
    for error in result.errors:
        _log.warning("otel_memory: archiving old daily logs: %s", error)


def stop() -> None:
    """Write the final line, flush, and stop everything :func:`start` started."""
    global _running
    with _lock:
        running, _running = _running, None
        if running is None:
            return
        if running.config.monitor.enabled:
            write_check_line(STOPPED)
        _teardown(running)


def _teardown(running: _Running) -> None:
    for component in reversed(running.components):
        try:
            component.close()
        except Exception:
            _log.exception("otel_memory: stopping %r failed", component)
    _flush_providers()
    for handler in running.handlers:
        _log.removeHandler(handler)
        handler.flush()
        handler.close()
    _log.setLevel(running.previous_level)
    if running.previous_source is not None:
        set_reading_source(running.previous_source)


def _flush_providers() -> None:
    """Push out what the SDK still buffers (bounded: a dead collector must not hang the host)."""
    started = time.monotonic()
    for provider in (
        trace.get_tracer_provider(),
        _logs.get_logger_provider(),
        metrics.get_meter_provider(),
    ):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is None:
            continue
        try:
            force_flush(timeout_millis=_FLUSH_TIMEOUT_MILLIS)
        except Exception:
            _log.debug("otel_memory: force_flush of %r failed", provider, exc_info=True)
        if time.monotonic() - started > 2 * _FLUSH_TIMEOUT_MILLIS / 1000:
            break
