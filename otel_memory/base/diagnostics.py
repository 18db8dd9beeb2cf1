"""How the package reports its own trouble: once per kind, through the ``otel_memory`` logger.

    warn_once = WarnOnce()
    warn_once("reading", "otel_memory: memory reading failed: %r", exc)   # logged
    warn_once("reading", "otel_memory: memory reading failed: %r", exc)   # silent

Instrumentation runs inside someone else's process: a failure that repeats every task must not
flood the host's logs, and must never raise into it.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from otel_memory.base.forks import renew_after_fork

logger = logging.getLogger("otel_memory")
"""The package's logger: its own diagnostics and the memory events (SPEC: Events)."""


class WarnOnce:
    """Logs a WARNING the first time each key is seen, until :meth:`forget` or :meth:`reset`."""

    def __init__(self, log: logging.Logger = logger) -> None:
        self._log = log
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        renew_after_fork(self)

    def __call__(self, key: str, message: str, *args: object) -> bool:
        """Log ``message`` unless ``key`` was already reported; returns whether it logged."""
        if key in self._seen:
            return False
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        # A broken host handler must not turn a warning into a crash.
        with contextlib.suppress(Exception):
            self._log.warning(message, *args)
        return True

    def reported(self, key: str) -> bool:
        """Whether ``key`` has been reported (and not forgotten)."""
        return key in self._seen

    def forget(self, key: str) -> bool:
        """Re-arm ``key`` (its trouble is over); returns whether it had been reported."""
        with self._lock:
            if key in self._seen:
                self._seen.discard(key)
                return True
            return False

    def reset(self) -> None:
        """Re-arm every key."""
        with self._lock:
            self._seen.clear()
