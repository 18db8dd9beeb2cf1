"""The peak sampler: one daemon thread that samples RSS while any task is open.

Tasks read memory at their start and end; what happens in between is only seen by sampling.
The thread starts when the first task opens, sleeps on an event while no task is open, and on
each tick calls ``tick()`` (which records the RSS into the open tasks' peaks, feeds thresholds
and deep capture, and ends tasks whose owner has finished)::

    sampler = PeakSampler(tick=runtime.sample, has_work=runtime.open_tasks.__bool__)
    sampler.wake()          # going from idle to busy
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_memory.runtime import Runtime

DEFAULT_INTERVAL_SECONDS = 0.1
IDLE_GRACE_SECONDS = 2.0
"""How long the thread keeps ticking with no task open before it blocks until the next one:
a burst of short tasks (busy, idle, busy...) then never has to wake it."""


class PeakSampler:
    """Calls the runtime's ``sample()`` every ``interval`` seconds while any task is open.

    Args:
        runtime: whose open tasks are sampled (``runtime.sample()`` does one tick).
        interval: seconds between samples.
    """

    def __init__(self, runtime: Runtime, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self._tick: Callable[[], None] = lambda: sample(runtime)
        self._has_work: Callable[[], bool] = runtime.open_tasks.__bool__
        self.interval = interval
        self.ticks = 0
        self._init_threading()
        if hasattr(os, "register_at_fork"):
            # A forked child has no thread; it starts its own on its first task.
            os.register_at_fork(after_in_child=self._init_threading)

    def _init_threading(self) -> None:
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._blocked = False  # the thread waits for work with no timeout

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wake(self) -> None:
        """A task opened while none was: start the thread on first use, or wake it if blocked.

        While the thread still ticks (within its idle grace) this costs one attribute check.
        """
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping:
                    thread = threading.Thread(
                        target=self._run, name="otel-memory-sampler", daemon=True
                    )
                    # Assigned before start(): the loop runs while it is the registered thread.
                    self._thread = thread
                    thread.start()
                    return
        if self._blocked:
            self._wakeup.set()

    def sample_now(self) -> None:
        """One tick in the caller's thread."""
        self.ticks += 1
        self._tick()

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
        idle_since: float | None = None
        while self._thread is me:
            if self._has_work():
                idle_since = None
                self.sample_now()
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_GRACE_SECONDS:
                self._wakeup.clear()
                self._blocked = True
                if not self._has_work():  # a task may have opened before _blocked was set
                    self._wakeup.wait()
                self._blocked = False
                idle_since = None
                continue
            self._wakeup.wait(self.interval)
            self._wakeup.clear()  # a wake that arrived meanwhile must not make the next wait spin


def _record_high_water(runtime: Runtime) -> None:
    """Give a new lifetime high (``getrusage``) to the tasks that were open before it was reached.

    Tick ``n`` sees the high-water mark rise since tick ``n - 1`` read it: the new high came
    after tick ``n - 1`` began, so it belongs to every task opened before that (those with
    ``task.tick < n - 1``), and to no task that may have opened after it. This catches a spike
    shorter than the sampling interval, exactly, when it is a new process high.
    """
    read_high_water = getattr(runtime.source, "read_high_water", None)
    if read_high_water is None:
        return
    try:
        high_water = read_high_water()
    except Exception as exc:  # a custom source's trouble must not stop the sampler
        runtime.warn_once("high water", "otel_memory: high-water mark unreadable: %r", exc)
        return
    previous, runtime.high_water = runtime.high_water, high_water
    if high_water is not None and previous is not None and high_water > previous:
        runtime.open_tasks.record_high_water(high_water, runtime.sampler.ticks - 1)


def sample(runtime: Runtime) -> None:
    """One tick: peaks, thresholds and deep capture from one RSS sample; reap orphaned tasks."""
    from otel_memory import tasks  # noqa: PLC0415  # tasks import the sampler: a cycle

    try:
        rss = runtime.source.read_rss()
    except Exception as exc:  # psutil.Error, OSError, or a broken custom source
        runtime.warn_once("sample", "otel_memory: RSS sampling failed, peaks may be low: %r", exc)
        rss = None
    if rss is not None:
        runtime.open_tasks.record_rss(rss)
        _record_high_water(runtime)
        last = runtime.last_reading
        listener = runtime.on_reading
        if listener is not None and last is not None:
            listener(last.with_rss(rss, time.time()))
        on_sample = runtime.on_sample
        if on_sample is not None:
            try:
                on_sample(rss)
            except Exception as exc:
                runtime.warn_once("on_sample", "otel_memory: run state update failed: %r", exc)
        deep = runtime.deep_capture
        if deep is not None:
            try:
                deep.sampled(rss)
            except Exception as exc:
                runtime.warn_once("deep", "otel_memory: deep capture failed: %r", exc)
    tasks.end_orphans(runtime)
