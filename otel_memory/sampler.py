"""The peak sampler: one daemon thread that samples RSS while any task is open.

Tasks read memory at their start and end; what happens in between is only seen by sampling.
The thread starts the first time a task opens, sleeps on an event while no task is open, and
records every sample into the open tasks' peaks::

    sampler = PeakSampler(on_sample=registry.record_rss, has_work=registry.__bool__)
    sampler.wake()          # a task opened
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from otel_memory.readings import get_reading_source

_log = logging.getLogger("otel_memory")

DEFAULT_INTERVAL_SECONDS = 0.1


class PeakSampler:
    """Samples RSS every ``interval`` seconds while ``has_work()`` is true.

    Args:
        on_sample: receives each RSS sample in bytes.
        has_work: whether sampling is needed now (any task open).
        read_rss: the RSS source; defaults to the process-wide reading source.
        interval: seconds between samples.
    """

    def __init__(
        self,
        on_sample: Callable[[int], None],
        has_work: Callable[[], bool],
        read_rss: Callable[[], int] | None = None,
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self._on_sample = on_sample
        self._has_work = has_work
        self._read_rss = read_rss or (lambda: get_reading_source().read_rss())
        self.interval = interval
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failed_once = False
        if hasattr(os, "register_at_fork"):
            # A forked child has no thread; it must start its own on its first task.
            os.register_at_fork(after_in_child=self._forget_thread)

    def wake(self) -> None:
        """Tell the sampler a task opened; starts the thread on first use."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping:
                    thread = threading.Thread(
                        target=self._run, name="otel-memory-peak-sampler", daemon=True
                    )
                    thread.start()
                    self._thread = thread
        self._wakeup.set()

    def sample_now(self) -> None:
        """Take one sample in the caller's thread (never raises)."""
        try:
            rss = self._read_rss()
        except Exception as exc:  # psutil.Error, OSError, or a broken custom source
            if not self._failed_once:
                self._failed_once = True
                _log.warning("otel_memory: RSS sampling failed, peaks may be low: %r", exc)
            return
        self._on_sample(rss)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and join the thread; a later :meth:`wake` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping = True
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._stopping = False

    def _run(self) -> None:
        me = threading.current_thread()
        while self._thread is me:
            if not self._has_work():
                self._wakeup.clear()
                if not self._has_work():  # a task may have opened between the check and clear
                    self._wakeup.wait()
                continue
            self.sample_now()
            self._wakeup.wait(self.interval)
            self._wakeup.clear()

    def _forget_thread(self) -> None:
        self._thread = None
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
