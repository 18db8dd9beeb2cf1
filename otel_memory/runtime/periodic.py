"""The periodic thread: a ``---`` line every ``interval_seconds``, and once a day the daily logs
past retention archived.

    periodic = PeriodicLines(120, write_check_line, on_new_day=archive, warn_once=warn_once)
    periodic.start()
    periodic.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date

from otel_memory.base import retention
from otel_memory.base.config import Config
from otel_memory.base.diagnostics import WarnOnce

_log = logging.getLogger("otel_memory")


class PeriodicLines:
    """A daemon thread (``otel-memory-periodic``): ``tick()`` every ``interval`` seconds, and
    ``on_new_day()`` first on each new local date."""

    def __init__(
        self,
        interval: float,
        tick: Callable[[], None],
        on_new_day: Callable[[], None],
        warn_once: WarnOnce,
    ) -> None:
        self._interval = interval
        self._tick_once = tick
        self._on_new_day = on_new_day
        self._warn_once = warn_once
        self._stop = threading.Event()
        self._day: date | None = None
        self._thread = threading.Thread(target=self._run, name="otel-memory-periodic", daemon=True)

    def start(self) -> None:
        """Start the thread."""
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
            self._tick_once()
        except Exception as exc:  # the thread must outlive any single failure
            self._warn_once("periodic", "otel_memory: periodic line failed: %r", exc)

    def close(self) -> None:
        """Stop and join the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def archive(config: Config) -> None:
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
