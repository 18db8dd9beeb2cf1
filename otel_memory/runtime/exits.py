"""How a monitored process ends where neither ``stop()`` nor ``atexit`` is reached, inside a
server's own signal handler.

* **gunicorn's worker timeout**: the master sends SIGABRT, whose handler exits through
  ``sys.exit(1)``; the request's span ends and ``atexit`` stops the monitor as for a clean exit.
  The worker was killed, though: :class:`ExitWatch` wraps gunicorn's ``Worker.handle_abort`` so
  the run state is kept, frozen on the request it was in, for the replacement to report.
* **uvicorn's graceful shutdown**: uvicorn handles SIGTERM while it serves, then restores the
  action it replaced (the default) and raises SIGTERM again, which ends the process with no
  ``atexit``. :class:`ExitWatch` wraps uvicorn's ``Server.handle_exit`` and
  ``Server.capture_signals``, now if uvicorn is imported, or right after its import (the monitor
  usually starts first, under ``opentelemetry-instrument``): the SIGTERM first removes the run
  state and writes the queued lines, and once the graceful shutdown is over (before the raise)
  the monitor stops as at exit: ``--- [Monitor Stopped]``, providers flushed. A server already
  running when the monitor starts (the app starts it at import) has its handler wrapped instead;
  every task that ends from then on writes its own line at once.

Both run inside a Python handler the server installed. The package installs no Python signal
handler of its own: a Python handler for a signal whose action is the default would delay the
process's end until its main thread runs Python again (a main thread blocked in a lock or a
semaphore while the signal lands on another thread never does). A SIGTERM with its default
action removes the run state in C instead (:mod:`otel_memory.kernel.termination`).

    watch = ExitWatch(discard_run_state=state.discard, keep_run_state=state.keep,
                      write_lines=monitor.write_lines_now, stop=monitor.stop)
    watch.install()      # at start, and again in a forked worker (gunicorn is loaded by then)
    watch.uninstall()    # at stop: uvicorn's own handler back
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import logging
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, ModuleType
from typing import Any

__all__ = ["ExitWatch"]

LINES_TIMEOUT = 1.0
"""Seconds a SIGTERM the host handles waits for the queued lines before the host's handler."""
_WRAPPED = "__otel_memory_abort__"
_WATCHERS = "__otel_memory_watchers__"  # on the wrapped handle_exit: the ExitWatches to tell
_TERMINATED = "_otel_memory_sigterm"  # on a uvicorn Server that handled a SIGTERM
_UVICORN_SERVER = "uvicorn.server"
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
        stop: stops the monitor (after a host's graceful shutdown, before the process ends by
            a SIGTERM with its default action).
    """

    def __init__(
        self,
        *,
        discard_run_state: Callable[[], None],
        keep_run_state: Callable[[], None],
        write_lines: Callable[[], None],
        stop: Callable[[], None],
    ) -> None:
        self._discard_run_state = discard_run_state
        self._keep_run_state = keep_run_state
        self._write_lines = write_lines
        self._stop = stop
        self._active = False

    def install(self) -> None:
        """Watch uvicorn's SIGTERM (now, or once uvicorn is imported) and gunicorn's worker
        abort."""
        self._active = True
        module = sys.modules.get(_UVICORN_SERVER)
        if module is not None:
            _wrap_uvicorn_server(module, self)
        else:  # once per watch, however many starts (and forks) install it again
            wrap = functools.partial(_wrap_uvicorn_server, watch=self)
            _after_import(_UVICORN_SERVER, self, wrap)
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

    def host_stopped(self) -> None:
        """The host's graceful shutdown after a SIGTERM is over and the process is about to end
        by that SIGTERM's default action: stop the monitor as ``atexit`` would."""
        if self._active:
            self._quietly(self._stop)


def _is_uvicorn_capture(handler: object) -> bool:
    """Whether ``handler`` is a running uvicorn server's, which on a graceful shutdown restores
    the handler it replaced (the default action) and raises the signal again, and not one that
    tells the monitor already (the class was wrapped before the server started)."""
    owner = getattr(handler, "__self__", None)
    wrapped = getattr(getattr(handler, "__func__", None), _WATCHERS, None) is not None
    return owner is not None and type(owner).__module__ == _UVICORN_SERVER and not wrapped


class _BeforeUvicorn:
    """uvicorn's SIGTERM handler, preceded by the removal of this run's state."""

    def __init__(self, watch: ExitWatch, handler: Callable[[int, FrameType | None], Any]) -> None:
        self.watch = watch
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        self.watch.requested_stop()
        return self.handler(signum, frame)


def _wrap_uvicorn_server(module: ModuleType, watch: ExitWatch) -> None:
    """Have ``module.Server`` tell ``watch`` of a SIGTERM it handles (``handle_exit``) and of the
    end of the graceful shutdown that follows (``capture_signals``), once per process."""
    server = getattr(module, "Server", None)
    handle_exit = getattr(server, "handle_exit", None)
    if server is None or not callable(handle_exit):
        return
    existing: weakref.WeakSet[ExitWatch] | None = getattr(handle_exit, _WATCHERS, None)
    if existing is not None:  # wrapped already: one more monitor to tell
        existing.add(watch)
        return
    told: weakref.WeakSet[ExitWatch] = weakref.WeakSet([watch])

    @functools.wraps(handle_exit)
    def on_exit_signal(self: Any, sig: int, frame: FrameType | None) -> Any:
        if sig == signal.SIGTERM:
            setattr(self, _TERMINATED, True)
            for each in list(told):
                each.requested_stop()
        return handle_exit(self, sig, frame)

    setattr(on_exit_signal, _WATCHERS, told)
    server.handle_exit = on_exit_signal
    capture_signals = getattr(server, "capture_signals", None)
    if callable(capture_signals):  # uvicorn >= 0.29: the handlers' scope, re-raise at its end

        @contextlib.contextmanager
        def stop_before_reraise(self: Any) -> Iterator[None]:
            with capture_signals(self):
                try:
                    yield
                finally:
                    if getattr(self, _TERMINATED, False):
                        for each in list(told):
                            each.host_stopped()

        server.capture_signals = functools.wraps(capture_signals)(stop_before_reraise)


def _after_import(name: str, caller: object, then: Callable[[ModuleType], None]) -> None:
    """Call ``then(module)`` right after module ``name`` is first imported (one finder per
    name, one call per ``caller``: a caller that asks again is already waiting)."""
    for finder in sys.meta_path:
        if isinstance(finder, _AfterImport) and finder.name == name:
            finder.thens.setdefault(caller, then)
            return
    sys.meta_path.insert(0, _AfterImport(name, caller, then))


class _AfterImport(importlib.abc.MetaPathFinder):
    """A finder that answers for one module name only: it finds the module as the finders after
    it would, and has its loader call ``then(module)`` once the module has run (then leaves
    ``sys.meta_path``). Every other import passes through at the cost of a name comparison."""

    def __init__(self, name: str, caller: object, then: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.thens: dict[object, Callable[[ModuleType], None]] = {caller: then}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                loader = spec.loader
                if loader is not None and hasattr(loader, "exec_module"):
                    spec.loader = _ThenLoader(loader, self._run_then)
                return spec
        return None

    def _run_then(self, module: ModuleType) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for then in self.thens.values():
            try:
                then(module)
            except Exception as exc:  # never into the host's import
                _log.debug("otel_memory: after importing %s: %r", self.name, exc)


class _ThenLoader(importlib.abc.Loader):
    """A module's own loader, followed by a call with the module it ran."""

    def __init__(self, loader: Any, then: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._then = then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, is_package, ...
        return getattr(self._loader, name)
