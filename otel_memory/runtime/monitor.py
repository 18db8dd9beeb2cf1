"""The monitor's life: :meth:`Monitor.start` wires the daily log, the OTel log records, the
periodic lines, thresholds, deep capture, the previous run's report, the gauges and the heap
profiler onto the runtime's parts; :meth:`Monitor.stop` ends what is still open, writes a final
line and takes them down.

    monitor = Monitor(reader, tasks, events, sampler, warn_once)   # the runtime builds it
    monitor.start(config, meter_provider=mp, logger_provider=lp)
    monitor.stop()

Both are idempotent and thread-safe. Tasks work without it; it adds the outputs. The public
``otel_memory.start()``/``stop()`` call the default runtime's monitor.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from otel_memory.activity.events import EventPipeline, LineEvent, LoggerSink, Sink
from otel_memory.activity.opentask import OpenTask
from otel_memory.activity.requests import RequestSpans
from otel_memory.activity.sampler import PeakSampler
from otel_memory.activity.tasks import Tasks
from otel_memory.base.config import Config, ExportLogs
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.logline import IDLE, Marker
from otel_memory.base.memory import MB
from otel_memory.guards.deepcapture import AllocationReport, DeepCapture
from otel_memory.guards.lastrun import DeadRun, RunState
from otel_memory.guards.notices import Notices
from otel_memory.guards.profiler import start_profiler
from otel_memory.guards.runstate import RunStateFeed
from otel_memory.guards.thresholds import ThresholdGuard
from otel_memory.kernel.readings import MemoryReader, ReadingSource
from otel_memory.runtime.exits import ExitWatch
from otel_memory.runtime.periodic import PeriodicLines, archive
from otel_memory.sinks.dailylog import DailyLogSink, DailyLogWriter
from otel_memory.sinks.forksafe import hold_collections_across_fork
from otel_memory.sinks.gauges import install_metrics
from otel_memory.sinks.histograms import HistogramSink, RequestHistogram, TaskHistograms
from otel_memory.sinks.logbridge import OTelLogSink
from otel_memory.sinks.profiles import ProfileSink, profile_sink

STARTED = "Monitor Started"
"""The name on the ``---`` line written when the monitor starts."""
STOPPED = "Monitor Stopped"
"""The name on the final ``---`` line written by :meth:`Monitor.stop`."""
_FLUSH_TIMEOUT_MILLIS = 3000
LINES_FLUSH_TIMEOUT = 1.0
"""Seconds :meth:`Monitor.write_lines_now` waits for a drain in progress."""
_log = logging.getLogger("otel_memory")


class _Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class _Running:
    """What :meth:`Monitor.start` set up, so :meth:`Monitor.stop` can take it down."""

    config: Config
    components: list[_Closeable] = field(default_factory=list)
    run_state: RunState | None = None
    previous_source: ReadingSource | None = None
    providers: tuple[object, ...] = ()
    profiles: ProfileSink | None = None
    notices: Notices | None = None
    periodic: PeriodicLines | None = None
    daily: DailyLogSink | None = None


class Monitor:
    """Starts and stops the outputs of one runtime.

    Args:
        reader: the runtime's readings (thresholds listen to it).
        tasks: the runtime's tasks (deep capture and the tracer are set on it).
        events: the event pipeline the sinks are set on.
        sampler: the peak sampler (its interval and run-state hook).
        warn_once: the runtime's once-only reporter.
        requests: the processor that measures request spans (``request_spans``), if any.
    """

    def __init__(
        self,
        reader: MemoryReader,
        tasks: Tasks,
        events: EventPipeline,
        sampler: PeakSampler,
        warn_once: WarnOnce,
        *,
        requests: RequestSpans | None = None,
    ) -> None:
        self._requests = requests
        self._reader = reader
        self._tasks = tasks
        self._open_tasks = tasks.open_tasks
        self._events = events
        self._sampler = sampler
        self._warn_once = warn_once
        self._lock = threading.RLock()
        self._running: _Running | None = None
        self._stopping: _Running | None = None
        self._exits = ExitWatch(
            discard_run_state=self._discard_run_state,
            keep_run_state=self._keep_run_state,
            write_lines=self.write_lines_now,
            stop=self.stop,
        )
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)

    @property
    def running(self) -> bool:
        """Whether the monitor has been started and not stopped."""
        return self._running is not None

    @property
    def config(self) -> Config | None:
        """The configuration the running monitor was started with."""
        running = self._running
        return running.config if running is not None else None

    def write_check_line(self, name: str | None = None) -> None:
        """Queue one ``---`` line now: ``name``, else the most recent open task, else ``Idle``."""
        reading = self._reader.read()
        if reading is None:
            return
        task = self._open_tasks.most_recent() if name is None else None
        label = name if name is not None else (task.name if task is not None else IDLE)
        span = task.span if task is not None else None
        self._events.put(LineEvent(Marker.CHECK, label, reading, span, None), wait=False)

    def start(
        self,
        config: Config,
        *,
        reading_source: ReadingSource | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> bool:
        """Start with ``config``; returns False (and does nothing) while already running."""
        with self._lock:
            if self._running is not None:
                _log.debug("otel_memory: start() while running: ignored")
                return False
            running = _Running(
                config=config, providers=(tracer_provider, meter_provider, logger_provider)
            )
            if reading_source is not None:
                running.previous_source = self._reader.source
                self._reader.set_source(reading_source)
            if tracer_provider is not None:
                self._tasks.set_tracer_provider(tracer_provider)
            self._running = running
            self._exits.install()
            try:
                self._start_components(running, meter_provider, logger_provider)
            except BaseException:
                self._running = None
                self._teardown(running)
                raise
            return True

    def _start_components(
        self,
        running: _Running,
        meter_provider: MeterProvider | None,
        logger_provider: LoggerProvider | None,
    ) -> None:
        """Sinks, guards, threads and instruments; :meth:`stop` takes them down."""
        config = running.config
        monitor = config.monitor
        self._sampler.interval = monitor.sample_interval_ms / 1000
        notices = Notices(self._events, self._open_tasks, self.write_check_line, self._warn_once)
        running.notices = notices
        sinks: list[Sink] = [LoggerSink()]
        dead_runs: list[DeadRun] = []
        if monitor.enabled and monitor.log_dir:
            running.daily = DailyLogSink(DailyLogWriter(monitor.log_dir))
            sinks.append(running.daily)
            dead_runs = self._begin_run_state(running, monitor.log_dir, sinks)
        if monitor.export_logs is not ExportLogs.NONE:
            sinks.append(OTelLogSink(monitor.export_logs, logger_provider))
        if monitor.task_histograms:
            sinks.append(HistogramSink(TaskHistograms(meter_provider)))
        tracer_provider = running.providers[0] or trace.get_tracer_provider()
        for provider in (tracer_provider, logger_provider or _logs.get_logger_provider()):
            hold_collections_across_fork(provider)  # a worker forked mid-export still exports
        requests = self._requests
        if monitor.request_spans and requests is not None:
            sinks.append(RequestHistogram(meter_provider))
            requests.install(tracer_provider)
        self._events.set_sinks(sinks)
        self._watch_thresholds(running)
        deep = monitor.deep_capture
        if deep.enabled:
            self._tasks.deep_capture = DeepCapture(
                round(deep.rss_growth_mb * MB), deep.top_n, deep.tracemalloc_frames()
            )
            self._tasks.on_allocations = notices.allocations
            if deep.profiles:
                sink = profile_sink(deep.profiles, monitor.log_dir, running.providers[0])
                running.components.append(sink)
                running.profiles = sink

                def allocations(task: OpenTask, report: AllocationReport) -> None:
                    notices.allocations(task, report)
                    sink.submit_task(task.name, task.span, report.stacks)

                self._tasks.on_allocations = allocations

        profiler = start_profiler(config, logger_provider=logger_provider)
        running.components.append(profiler)
        open_tasks = self._open_tasks
        reader = self._reader
        running.components.append(
            install_metrics(
                config,
                meter_provider=meter_provider,
                reading_source=lambda: reader.source,
                profiler=profiler if config.profiling.enabled else None,
                is_idle=lambda: not open_tasks,
                events_dropped=lambda: self._events.dropped,
            )
        )
        if monitor.enabled:
            self.write_check_line(STARTED)
            for run in dead_runs:
                notices.dead_run(run)
            self._start_periodic(running)

    def _begin_run_state(self, running: _Running, log_dir: str, sinks: list[Sink]) -> list[DeadRun]:
        """This process's run state, kept current by a feed; returns the runs that died."""
        state = running.run_state = self._open_run_state(log_dir)
        if state is None:
            return []
        dead_runs = state.begin()
        if running.daily is not None and state.shared():  # another live process writes here
            running.daily.tag_with_pid(os.getpid())
        process = sys.modules.get("multiprocessing.process")
        if process is not None and process.parent_process() is not None:
            self._enter_multiprocessing_child()  # started in a child (spawn, a pool's worker)
        feed = RunStateFeed(state, self._open_tasks)
        sinks.append(feed)
        self._sampler.on_sample = feed.on_sample
        return dead_runs

    def _watch_thresholds(self, running: _Running) -> None:
        """Check every reading against the thresholds (a fresh guard in a forked worker: its
        own RSS crosses them on its own, whatever the parent had crossed)."""
        if running.notices is not None:
            guard = ThresholdGuard(running.config.monitor.thresholds)
            self._reader.on_reading = running.notices.threshold_listener(guard)

    def _start_periodic(self, running: _Running) -> None:
        """The ``---`` thread (a new one in a forked worker: threads do not survive a fork)."""
        config = running.config
        periodic = PeriodicLines(
            config.monitor.interval_seconds,
            self.write_check_line,
            lambda: archive(config),
            self._warn_once,
        )
        if running.periodic is not None and running.periodic in running.components:
            running.components.remove(running.periodic)
        running.periodic = periodic
        running.components.append(periodic)
        periodic.start()

    def _after_fork_in_child(self) -> None:
        """A worker forked from a process whose monitor runs (gunicorn --preload, a master
        started by opentelemetry-instrument, Celery prefork, multiprocessing fork): it gets its
        own ``---`` thread and run state (the sampler and the event pipeline restart
        themselves), and reports the workers that died before it, as a new process would."""
        self._lock = threading.RLock()
        running = self._running
        if running is None:
            return
        try:
            if running.daily is not None:  # the parent writes the same file
                running.daily.tag_with_pid(os.getpid())
            state = running.run_state
            if state is not None:
                dead_runs = state.begin()
                if running.notices is not None:
                    for run in dead_runs:
                        running.notices.dead_run(run)
            if running.periodic is not None:
                self._start_periodic(running)
            self._watch_thresholds(running)
            self._exits.install()  # a gunicorn worker: its master's timeout abort is a death
            util = sys.modules.get("multiprocessing.util")
            if util is not None:  # run after multiprocessing clears its finalizers in the child
                util.register_after_fork(self, Monitor._enter_multiprocessing_child)
            celery_signals = sys.modules.get("celery.signals")
            if celery_signals is not None and state is not None:
                # A Celery prefork child ends with os._exit() (billiard), past multiprocessing's
                # finalizers; Celery sends worker_process_shutdown just before: a clean end.
                celery_signals.worker_process_shutdown.connect(
                    self._end_celery_child, weak=False, dispatch_uid="otel_memory.run_state"
                )
        except Exception as exc:  # never into the host's fork
            self._warn_once("fork", "otel_memory: monitor not restarted in a worker: %r", exc)

    def _end_celery_child(self, **_: object) -> None:
        """Celery's ``worker_process_shutdown`` in a prefork child: its run state ends (the
        events written first), so a child the pool stopped is not reported as dead."""
        running = self._running
        if running is None or running.run_state is None:
            return
        try:
            self._events.flush(timeout=2.0)  # bounded: a stuck disk must not hold the exit
        except Exception as exc:  # never into Celery's exit
            self._warn_once("celery exit", "otel_memory: lines not flushed at exit: %r", exc)
        running.run_state.end()

    def _enter_multiprocessing_child(self) -> None:
        """A ``multiprocessing`` child ends with ``os._exit()`` (no ``atexit``): its run state is
        ended by multiprocessing's exit finalizers, after the events were written, so a worker
        that returned is not reported as dead (forked from a running monitor, or started in the
        child: spawn, forkserver, a pool's initializer)."""
        util = sys.modules.get("multiprocessing.util")
        running = self._running
        if util is not None and running is not None and running.run_state is not None:
            util.Finalize(self, running.run_state.end, exitpriority=-1)

    def write_lines_now(self) -> None:
        """Write the queued lines, and from now on each task's END in the caller's thread (the
        process may end without :meth:`stop`, as uvicorn's workers do after a SIGTERM)."""
        self._events.write_through()
        self._events.flush(timeout=LINES_FLUSH_TIMEOUT)

    def _run_state(self) -> RunState | None:
        """The run state of the running monitor, or of the one being stopped."""
        running = self._running or self._stopping
        return running.run_state if running is not None else None

    def _discard_run_state(self) -> None:
        """A requested stop (uvicorn's SIGTERM): nothing to report, though no stop follows."""
        state = self._run_state()
        if state is not None:
            state.discard()

    def _keep_run_state(self) -> None:
        """This process is being killed though it exits through Python: its run state stays."""
        state = self._run_state()
        if state is not None:
            state.keep()

    def _open_run_state(self, log_dir: str) -> RunState | None:
        try:
            return RunState(log_dir, warn_once=self._warn_once)
        except Exception as exc:  # an unusable log_dir: the daily log reports it too
            self._warn_once("run state", "otel_memory: previous-run detection off: %r", exc)
            return None

    def stop(self) -> None:
        """End open tasks, write the final line, flush, and stop what :meth:`start` started."""
        with self._lock:
            running = self._running
            if running is None:
                return
            self._tasks.end_all_open()
            if running.config.monitor.enabled:
                self.write_check_line(STOPPED)
            self._running = None
            self._stopping = running  # a SIGTERM meanwhile still finds its run state
            try:
                self._teardown(running)
            finally:
                self._stopping = None

    def _teardown(self, running: _Running) -> None:
        if self._requests is not None:
            self._requests.enabled = False  # it stays on the provider (the SDK cannot remove it)
        self._reader.on_reading = None
        self._sampler.on_sample = None
        deep, self._tasks.deep_capture = self._tasks.deep_capture, None
        self._tasks.on_allocations = None
        if deep is not None:
            deep.close()  # a traced task still running at stop() must not leave tracemalloc on
        for component in reversed(running.components):
            try:
                component.close()
            except Exception:
                _log.exception("otel_memory: stopping %r failed", component)
        self._events.close()
        if running.run_state is not None:
            running.run_state.end()
        self._exits.uninstall()
        _flush_providers(running.providers)
        if running.previous_source is not None:
            self._reader.set_source(running.previous_source)
        self._tasks.set_tracer_provider(None)


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
