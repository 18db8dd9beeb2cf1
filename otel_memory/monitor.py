"""The monitor's life: :func:`start` wires the daily log, the OTel log records, the periodic
lines, thresholds, deep capture, the previous run's report, the gauges and the heap profiler;
:func:`stop` ends what is still open, writes a final line and takes them down.

    import otel_memory

    otel_memory.start("memory.yaml")    # or a Config, or None: environment + defaults
    otel_memory.start(tracer_provider=tp, meter_provider=mp, logger_provider=lp)
    ...
    otel_memory.stop()                  # also runs at interpreter exit

Both are idempotent and thread-safe. Tasks work without :func:`start`; it adds the outputs.
What it sets up lives on the runtime (:mod:`otel_memory.runtime`), the one owner of the
package's process-wide state.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Protocol

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_memory import retention, tasks
from otel_memory.config import Config, ExportLogs, load_config
from otel_memory.dailylog import DailyLogSink, DailyLogWriter
from otel_memory.diagnostics import logger as _log
from otel_memory.events import Event, LineEvent, LoggerSink, Notice, Sink
from otel_memory.lastrun import DeadRun, RunState
from otel_memory.logbridge import OTelLogSink
from otel_memory.logline import IDLE, Marker
from otel_memory.metrics import TaskHistograms, install_metrics
from otel_memory.profiler import start_profiler
from otel_memory.readings import MB, MemoryReading, ReadingSource
from otel_memory.runtime import Runtime, get_runtime
from otel_memory.thresholds import Crossing, ThresholdGuard

if TYPE_CHECKING:
    from otel_memory.deepcapture import AllocationReport

STARTED = "Monitor Started"
"""The name on the ``---`` line written when the monitor starts."""
STOPPED = "Monitor Stopped"
"""The name on the final ``---`` line written by :func:`stop`."""
THRESHOLD_EVENT = "otel_memory.threshold"
PREVIOUS_RUN_EVENT = "otel_memory.previous_run"
ALLOCATIONS_EVENT = "otel_memory.allocations"
_FLUSH_TIMEOUT_MILLIS = 3000
_RUN_STATE_PERIOD = 0.1


class _Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class _Running:
    """What :func:`start` set up, so :func:`stop` can take it down."""

    config: Config
    components: list[_Closeable] = field(default_factory=list)
    run_state: RunState | None = None
    previous_source: ReadingSource | None = None
    providers: tuple[object, ...] = ()


_lock = threading.RLock()
_atexit_registered = False
_rt = get_runtime()


def _running() -> _Running | None:
    running = _rt.monitor
    return running if isinstance(running, _Running) else None


def is_running() -> bool:
    """Whether the monitor has been started and not stopped."""
    return _running() is not None


def current_config() -> Config | None:
    """The configuration the running monitor was started with."""
    running = _running()
    return running.config if running is not None else None


def write_check_line(name: str | None = None) -> None:
    """Queue one ``---`` line now: ``name``, else the most recent open task, else ``Idle``."""
    reading = _rt.read()
    if reading is None:
        return
    task = _rt.open_tasks.most_recent() if name is None else None
    label = name if name is not None else (task.name if task is not None else IDLE)
    span = task.span if task is not None else None
    _rt.events.put(LineEvent(Marker.CHECK, label, reading, span, None), droppable=False)


def flush() -> None:
    """Write out every queued line and record now (tests, tools, before reading the file)."""
    _rt.events.flush()


# --------------------------------------------------------------------------- events


def _notice(name: str, level: int, body: str, attributes: dict[str, AttributeValue]) -> None:
    _rt.events.put(Notice(name, level, body, attributes, time.time()), droppable=False)


class _ThresholdListener:
    """Checks every reading against the thresholds; a crossing becomes an event."""

    def __init__(self, guard: ThresholdGuard) -> None:
        self._check = guard.check

    def __call__(self, reading: MemoryReading) -> None:
        try:
            crossings = self._check(reading.rss, reading.system_available, reading.free_ratio)
        except Exception as exc:
            _rt.warn_once("thresholds", "otel_memory: threshold check failed: %r", exc)
            return
        if crossings:
            for crossing in crossings:
                _report_crossing(crossing)


def _report_crossing(crossing: Crossing) -> None:
    open_tasks = _rt.open_tasks.snapshot()
    innermost = open_tasks[-1].name if open_tasks else IDLE
    attributes = crossing.attributes(innermost)
    for task in open_tasks:
        task.span.add_event(THRESHOLD_EVENT, attributes)
    unit = 1 if crossing.name == "free_min" else MB
    shown = "%" if unit == 1 else " MB"
    scale = 100 if unit == 1 else 1 / MB
    _notice(
        THRESHOLD_EVENT,
        crossing.severity,
        f"otel_memory: {crossing.name} crossed: {crossing.value * scale:.1f}{shown} "
        f"(threshold {crossing.threshold * scale:.1f}{shown}) during {innermost}",
        attributes,
    )


def report_allocations(task: tasks.OpenTask, report: AllocationReport) -> None:
    """A deep-captured task ended: its top allocation sites on the span and as an event."""
    attributes = report.attributes()
    task.span.add_event(ALLOCATIONS_EVENT, attributes)
    top = f"{report.sites[0]} ({report.bytes[0] / MB:.1f} MB)" if report.sites else "none"
    body = f"otel_memory: allocations of {task.name}: top site {top}"
    attributes = {"otel_memory.task.name": task.name, **attributes}
    _notice(ALLOCATIONS_EVENT, logging.INFO, body, attributes)


def _report_dead_run(run: DeadRun) -> None:
    last_seen = datetime.fromtimestamp(run.last_seen).astimezone().isoformat(timespec="seconds")
    attributes: dict[str, AttributeValue] = {
        "otel_memory.previous_run.pid": run.pid,
        "otel_memory.previous_run.last_task": run.last_task,
        "otel_memory.previous_run.last_rss": run.last_rss,
        "otel_memory.previous_run.last_seen": last_seen,
        "otel_memory.previous_run.cause": run.cause,
    }
    _notice(
        PREVIOUS_RUN_EVENT,
        logging.WARNING,
        f"otel_memory: the previous run (pid {run.pid}) died ({run.cause}) during "
        f"{run.last_task}, last RSS {run.last_rss / MB:.1f} MB at {last_seen}",
        attributes,
    )
    write_check_line(f"Previous Run Died ({run.cause}) during {run.last_task}")


class _HistogramSink:
    """Records each task run into the task histograms, in the task span's context."""

    def __init__(self, histograms: TaskHistograms) -> None:
        self._histograms = histograms

    def write(self, batch: Sequence[Event]) -> None:
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


class _RunStateSink:
    """Keeps the on-disk run state current (last task, last RSS) for the next start()."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    def write(self, batch: Sequence[Event]) -> None:
        for event in reversed(batch):
            if isinstance(event, LineEvent):
                update_run_state(self._state, event.reading.rss, event.reading.timestamp)
                return

    def close(self) -> None:
        """The monitor ends the state itself."""


def update_run_state(state: RunState, rss: int, timestamp: float) -> None:
    """Record the innermost open task and ``rss`` as this run's last known state."""
    task = _rt.open_tasks.most_recent()
    state.update(task.name if task is not None else IDLE, rss, timestamp)


class _RunStateSampler:
    """The sampler's hook: refresh the run state at most every 0.1 s while tasks run."""

    def __init__(self, state: RunState) -> None:
        self._state = state
        self._next = 0.0

    def __call__(self, rss: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + _RUN_STATE_PERIOD
            update_run_state(self._state, rss, time.time())


# --------------------------------------------------------------------------- start and stop


def _resolve(config: Config | str | os.PathLike[str] | None) -> Config:
    return config if isinstance(config, Config) else load_config(config)


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
    with _lock:
        if _running() is not None:
            _log.debug("otel_memory: start() while running: ignored")
            return
        resolved = _resolve(config)
        running = _Running(
            config=resolved, providers=(tracer_provider, meter_provider, logger_provider)
        )
        if reading_source is not None:
            running.previous_source = _rt.source
            _rt.set_reading_source(reading_source)
        if tracer_provider is not None:
            _rt.set_tracer_provider(tracer_provider)
        _rt.monitor = running
        try:
            _start_components(_rt, running, meter_provider, logger_provider)
        except BaseException:
            _rt.monitor = None
            _teardown(_rt, running)
            raise
        if not _atexit_registered:
            atexit.register(stop)
            _atexit_registered = True


def _start_components(
    rt: Runtime,
    running: _Running,
    meter_provider: MeterProvider | None,
    logger_provider: LoggerProvider | None,
) -> None:
    """Sinks, guards, threads and instruments; :func:`stop` takes them down."""
    config = running.config
    monitor = config.monitor
    rt.sampler.interval = monitor.sample_interval_ms / 1000
    sinks: list[Sink] = [LoggerSink()]
    dead_runs: list[DeadRun] = []
    if monitor.enabled and monitor.log_dir:
        sinks.append(DailyLogSink(DailyLogWriter(monitor.log_dir)))
        running.run_state = _open_run_state(rt, monitor.log_dir)
        if running.run_state is not None:
            dead_runs = running.run_state.begin()
            sinks.append(_RunStateSink(running.run_state))
            rt.on_sample = _RunStateSampler(running.run_state)
    if monitor.export_logs is not ExportLogs.NONE:
        sinks.append(OTelLogSink(monitor.export_logs, logger_provider))
    if monitor.task_histograms:
        sinks.append(_HistogramSink(TaskHistograms(meter_provider)))
    rt.events.set_sinks(sinks)
    rt.on_reading = _ThresholdListener(ThresholdGuard(monitor.thresholds))
    deep = monitor.deep_capture
    if deep.enabled:
        from otel_memory.deepcapture import DeepCapture  # noqa: PLC0415  # only when enabled

        rt.deep_capture = DeepCapture(round(deep.rss_growth_mb * MB), deep.top_n, deep.frames)

    profiler = start_profiler(config, logger_provider=logger_provider)
    running.components.append(profiler)
    running.components.append(
        install_metrics(
            config,
            meter_provider=meter_provider,
            profiler=profiler if config.profiling.enabled else None,
            is_idle=lambda: not rt.open_tasks,
            events_dropped=lambda: rt.events.dropped,
        )
    )
    if monitor.enabled:
        write_check_line(STARTED)
        for run in dead_runs:
            _report_dead_run(run)
        periodic = _PeriodicLines(monitor.interval_seconds, lambda: _archive(config))
        periodic.start()
        running.components.append(periodic)


def _open_run_state(rt: Runtime, log_dir: str) -> RunState | None:
    try:
        return RunState(log_dir)
    except Exception as exc:  # an unusable log_dir: the daily log reports it too
        rt.warn_once("run state", "otel_memory: previous-run detection off: %r", exc)
        return None


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
        except Exception as exc:  # the thread must outlive any single failure
            _rt.warn_once("periodic", "otel_memory: periodic line failed: %r", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


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
    """End open tasks, write the final line, flush, and stop everything :func:`start` started."""
    with _lock:
        running = _running()
        if running is None:
            return
        tasks.end_all_open()
        if running.config.monitor.enabled:
            write_check_line(STOPPED)
        _rt.monitor = None
        _teardown(_rt, running)


def _teardown(rt: Runtime, running: _Running) -> None:
    rt.on_reading = None
    rt.on_sample = None
    deep, rt.deep_capture = rt.deep_capture, None
    if deep is not None:
        deep.close()  # a traced task still running at stop() must not leave tracemalloc on
    for component in reversed(running.components):
        try:
            component.close()
        except Exception:
            _log.exception("otel_memory: stopping %r failed", component)
    rt.events.close()
    if running.run_state is not None:
        running.run_state.end()
    _flush_providers(running.providers)
    if running.previous_source is not None:
        rt.set_reading_source(running.previous_source)
    rt.set_tracer_provider(None)


def _flush_providers(given: tuple[object, ...]) -> None:
    """Push out what the SDK still buffers (bounded: a dead collector must not hang the host)."""
    tracer_provider, meter_provider, logger_provider = given or (None, None, None)
    started = time.monotonic()
    for provider in (
        tracer_provider or trace.get_tracer_provider(),
        logger_provider or _logs.get_logger_provider(),
        meter_provider or metrics.get_meter_provider(),
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
