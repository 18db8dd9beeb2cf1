"""The snapshot log: a heap census every ``interval_seconds``, logged and checked for leaks.

    from otel_memory.profiler import start_profiler

    profiler = start_profiler(config)      # a daemon thread when config.profiling.enabled
    profiler.snapshot()                    # one snapshot now, synchronously (tests, tools)
    profiler.close()                       # stops and joins the thread

Each snapshot writes the SPEC block at INFO on the ``memory_profiler`` logger::

    Memory Snapshot

    Top 50 by object count:
      dict: 5,678 objects
      ...

    Top 50 by memory usage:
      list: 23.1 MB
      ...

then feeds the :class:`~otel_memory.leaks.LeakDetector` (new suspects are reported as a WARNING
and an OpenTelemetry log record) and hands the census to listeners such as the heap gauges.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from opentelemetry._logs import LoggerProvider

from otel_memory.census import HeapCensus, take_census
from otel_memory.config import Config
from otel_memory.leaks import PROFILER_LOGGER, LeakDetector, report_suspect
from otel_memory.readings import MB

_log = logging.getLogger("otel_memory")

_Listener = Callable[[HeapCensus], None]


def format_snapshot(census: HeapCensus, top_n: int) -> str:
    """The snapshot block: top ``top_n`` classes by count, then by shallow size."""
    by_count = census.top_by_count(top_n)
    by_size = census.top_by_size(top_n)
    lines = ["Memory Snapshot", "", f"Top {len(by_count)} by object count:"]
    lines += [f"  {row.name}: {row.count:,} objects" for row in by_count]
    lines += ["", f"Top {len(by_size)} by memory usage:"]
    lines += [f"  {row.name}: {row.size / MB:,.1f} MB" for row in by_size]
    return "\n".join(lines)


class Profiler:
    """Takes snapshots on demand and, once started, on a daemon thread every ``interval``.

    Args:
        config: ``config.profiling`` gives the interval, the top N and the leak streak.
        interval: seconds between snapshots; defaults to ``interval_seconds``.
        take: the census function (tests may pass a scripted one).
        logger: where the snapshot block and leak warnings go (``memory_profiler``).
        logger_provider: for the leak log records; the global provider by default.
    """

    def __init__(
        self,
        config: Config,
        *,
        interval: float | None = None,
        take: Callable[[], HeapCensus] = take_census,
        logger: logging.Logger | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        profiling = config.profiling
        self.interval = profiling.interval_seconds if interval is None else interval
        self.top_n = profiling.top_n_classes
        self.detector = LeakDetector(profiling.leak_snapshots)
        self.logger = logger or logging.getLogger(PROFILER_LOGGER)
        self._take = take
        self._logger_provider = logger_provider
        self._listeners: list[_Listener] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def add_listener(self, listener: _Listener) -> None:
        """Call ``listener(census)`` after each snapshot."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: _Listener) -> None:
        """Stop calling ``listener`` (no error if it was not added)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def snapshot(self) -> HeapCensus:
        """Take a census now: log the block, check for leaks, notify listeners."""
        census = self._take()
        self.logger.info(format_snapshot(census, self.top_n))
        for suspect in self.detector.observe(census):
            report_suspect(suspect, logger=self.logger, logger_provider=self._logger_provider)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(census)
        return census

    def start(self) -> None:
        """Start the snapshot thread (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="otel_memory.profiler", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the snapshot thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (an ongoing census finishes first)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.snapshot()
            except Exception as exc:  # the thread must outlive one bad snapshot
                if not self._failed:
                    self._failed = True
                    _log.warning("otel_memory: memory snapshot failed: %r", exc)


def start_profiler(
    config: Config,
    *,
    interval: float | None = None,
    take: Callable[[], HeapCensus] = take_census,
    logger_provider: LoggerProvider | None = None,
) -> Profiler:
    """A :class:`Profiler`, its thread started when ``config.profiling.enabled``."""
    profiler = Profiler(config, interval=interval, take=take, logger_provider=logger_provider)
    if config.profiling.enabled:
        profiler.start()
    return profiler
