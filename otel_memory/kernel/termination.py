"""A SIGTERM with its default action that removes a file before it ends the process.

A process stopped by SIGTERM with no handler of its own (a ``multiprocessing.Pool`` worker ended
by ``terminate()`` or the pool's ``with`` block, a script stopped by systemd, Docker or
Kubernetes) ends at once, with no ``atexit``: its run-state file would stay, and the next start
would report a requested stop as a death. A Python handler cannot remove it: Python runs a
handler only when the main thread runs Python again, which a main thread blocked in a lock or a
semaphore never does, and the process would not end at all. The compiled ``kernel._proc``
installs a C handler instead (async-signal-safe: ``getpid``, ``unlink``, ``raise``) that ends
the process by the default action, exit status included::

    remove_at_sigterm("/logs/.otel-memory/run-host-42.json")   # True: installed
    remove_at_sigterm(None)                                     # forget the file

It is installed only while SIGTERM's action is the default: a host's handler, or ``SIG_IGN``,
stays; a host that installs its own handler later replaces it (and Python's
``signal.getsignal`` keeps reporting ``SIG_DFL``, the action it last set). Without the compiled
module this does nothing and such a stop is reported by the next start.
"""

from __future__ import annotations

import os
import signal

try:
    from otel_memory.kernel import _proc
except ImportError:  # built without a C compiler
    _proc = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "remove_at_sigterm"]

AVAILABLE = _proc is not None and hasattr(signal, "SIGTERM")
"""Whether a default-action SIGTERM can remove a file here (the compiled module, POSIX)."""


def remove_at_sigterm(path: str | None) -> bool:
    """Have a default-action SIGTERM remove ``path`` (this process's own) before it ends the
    process; ``None`` forgets it. True when the handler is SIGTERM's action. Never raises;
    takes no lock (callable from a signal handler)."""
    if not AVAILABLE:
        return False
    try:
        return _proc.unlink_at_sigterm(None if path is None else os.fsencode(path))
    except (ValueError, TypeError):  # a path too long for the handler's buffer
        return False
