"""How a monitored process ends where neither ``stop()`` nor ``atexit`` is reached, inside a
server's own signal handler.

* **gunicorn's worker timeout**: the master sends SIGABRT, whose handler exits through
  ``sys.exit(1)``; the request's span ends and ``atexit`` stops the monitor as for a clean exit.
  The worker was killed, though: :class:`ExitWatch` wraps gunicorn's ``Worker.handle_abort`` so
  the run state is kept, frozen on the request it was in, for the replacement to report.
* **uvicorn's graceful shutdown**, when the app starts the monitor inside a running server: uvicorn
  restores the SIGTERM action it replaced (the default) and raises SIGTERM again, which ends the
  process with no ``atexit``. Its handler is wrapped so that the SIGTERM first removes the run
  state and writes the queued lines, and every task that ends from then on writes its own at
  once.

Both run inside a Python handler the server already installed. The package installs no signal
handler of its own: a Python handler for a signal whose action is the default would delay the
process's end until its main thread runs Python again (a main thread blocked in a lock or a
semaphore while the signal lands on another thread never does).

    watch = ExitWatch(discard_run_state=state.discard, keep_run_state=state.keep,
                      write_lines=monitor.write_lines_now)
    watch.install()      # at start, and again in a forked worker (gunicorn is loaded by then)
    watch.uninstall()    # at stop: uvicorn's own handler back
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["ExitWatch"]

LINES_TIMEOUT = 1.0
"""Seconds a SIGTERM the host handles waits for the queued lines before the host's handler."""
_WRAPPED = "__otel_memory_abort__"
_log = logging.getLogger("otel_memory")


class ExitWatch:
    """Keeps the run state of a gunicorn worker its master aborts, and removes that of a uvicorn
    worker told to stop.

    Args:
        discard_run_state: removes this process's run state (called from a signal handler:
            must take no lock).
        keep_run_state: marks this process's run state as a death to report (same).
        write_lines: writes the queued lines, and has every later task's END write its own at
            once (the process may end without ``stop()``).
    """

    def __init__(
        self,
        *,
        discard_run_state: Callable[[], None],
        keep_run_state: Callable[[], None],
        write_lines: Callable[[], None],
    ) -> None:
        self._discard_run_state = discard_run_state
        self._keep_run_state = keep_run_state
        self._write_lines = write_lines
        self._active = False

    def install(self) -> None:
        """Wrap a running uvicorn server's SIGTERM handler; watch gunicorn's worker abort."""
        self._active = True
        if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            if callable(current) and _is_uvicorn_capture(current):
                try:
                    signal.signal(signal.SIGTERM, _BeforeUvicorn(self, current))
                except (ValueError, OSError) as exc:  # not the main interpreter
                    _log.debug("otel_memory: SIGTERM not watched: %r", exc)
        self._wrap_gunicorn_abort()

    def uninstall(self) -> None:
        """Give uvicorn its own handler back if the wrapper is still installed."""
        self._active = False
        if threading.current_thread() is not threading.main_thread():
            return  # a handler can only be changed from the main thread; the wrapper now passes
        try:
            current = signal.getsignal(signal.SIGTERM)
            if isinstance(current, _BeforeUvicorn) and current.watch is self:
                signal.signal(signal.SIGTERM, current.handler)
        except (ValueError, OSError):
            pass

    def _bounded(self, call: Callable[[], None], timeout: float) -> None:
        """Run ``call`` on a helper thread, waited for at most ``timeout`` seconds: the code the
        signal interrupted may hold a lock that ``call`` needs."""
        helper = threading.Thread(target=self._quietly, args=(call,), name="otel-memory-sigterm")
        helper.daemon = True
        try:
            helper.start()
            helper.join(timeout)
        except Exception as exc:  # never into the host
            _log.debug("otel_memory: %r at SIGTERM failed: %r", call, exc)

    @staticmethod
    def _quietly(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # never into the host's signal handling
            _log.debug("otel_memory: %r at exit failed: %r", call, exc)

    def _wrap_gunicorn_abort(self) -> None:
        """Wrap ``gunicorn.workers.base.Worker.handle_abort`` (once per process)."""
        base = sys.modules.get("gunicorn.workers.base")
        worker = getattr(base, "Worker", None)
        original = getattr(worker, "handle_abort", None)
        if worker is None or original is None or getattr(original, _WRAPPED, False):
            return
        keep = self._keep

        @functools.wraps(original)
        def handle_abort(self: Any, sig: int, frame: FrameType | None) -> Any:
            keep()
            return original(self, sig, frame)

        setattr(handle_abort, _WRAPPED, True)
        worker.handle_abort = handle_abort

    def _keep(self) -> None:
        if self._active:
            self._quietly(self._keep_run_state)

    def requested_stop(self) -> None:
        """A SIGTERM the host handles, though the process may then end without ``stop()``: this
        run is not one to report, and its lines are written now and as its tasks end."""
        if self._active:
            self._quietly(self._discard_run_state)
            self._bounded(self._write_lines, LINES_TIMEOUT)


def _is_uvicorn_capture(handler: object) -> bool:
    """Whether ``handler`` is a running uvicorn server's, which on a graceful shutdown restores
    the handler it replaced (the default action) and raises the signal again."""
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__ == "uvicorn.server"


class _BeforeUvicorn:
    """uvicorn's SIGTERM handler, preceded by the removal of this run's state."""

    def __init__(self, watch: ExitWatch, handler: Callable[[int, FrameType | None], Any]) -> None:
        self.watch = watch
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        self.watch.requested_stop()
        return self.handler(signum, frame)
