"""Locks that survive a fork: a lock another thread held when the process forked stays held
forever in the child, so the first use there would deadlock. Objects whose locks the task path
takes register them here and the child gets new ones.

    self._lock = threading.Lock()
    renew_after_fork(self, "_lock")
"""

from __future__ import annotations

import os
import threading
import weakref


def renew_after_fork(owner: object, name: str = "_lock") -> None:
    """In a forked child, give ``owner`` a new ``threading.Lock`` as attribute ``name``
    (``owner`` is held weakly: it may be gone by then)."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(owner)

    def renew() -> None:
        alive = ref()
        if alive is not None:
            setattr(alive, name, threading.Lock())

    os.register_at_fork(after_in_child=renew)
