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

DEFAULT_INTERVAL_SECONDS = 0.1
IDLE_GRACE_SECONDS = 2.0
"""How long the thread keeps ticking with no task open before it blocks until the next one:
a burst of short tasks (busy, idle, busy...) then never has to wake it."""


class PeakSampler:
    """Calls ``tick`` every ``interval`` seconds while ``has_work()`` says a task is open.

    Args:
        tick: one sample (the runtime's: peaks, thresholds, deep capture, orphaned tasks).
        has_work: whether any task is open.
        interval: seconds between samples.
    """

    def __init__(
        self,
        tick: Callable[[], None],
        has_work: Callable[[], bool],
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self._tick = tick
        self._has_work = has_work
        self.interval = interval
        self.ticks = 0
        self.on_sample: Callable[[int], None] | None = None
        """Called by the tick with each RSS sample (the run state), or None."""
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
