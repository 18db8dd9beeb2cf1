"""Watched collections and asyncio tasks: sizes a dashboard can follow over time.

    from otel_memory.activity.watched import watch, unwatch, watch_asyncio_tasks

    message_fetch_failures: dict[int, int] = {}
    watch("message_fetch_failures", lambda: message_fetch_failures)   # a global dict
    watch("avatar_cache", avatar_cache)            # an object with __len__ that takes weakrefs
    watch_asyncio_tasks()                          # from code running on the event loop

Every collection cycle the ``python.collection.size`` gauge reports ``len()`` of each watched
container with attribute ``collection.name``; ``python.asyncio.tasks`` reports the number of
pending tasks of each watched loop with attribute ``asyncio.loop``. Watching never keeps a
container alive (see :func:`watch`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Sized
from dataclasses import dataclass, field

_log = logging.getLogger("otel_memory")

_Getter = Callable[[], "Sized | None"]

_lock = threading.Lock()
_collections: dict[str, _Getter] = {}
_loops: dict[str, _LoopWatch] = {}
_reported: set[str] = set()


def watch(name: str, container: Sized | Callable[[], Sized | None]) -> None:
    """Export ``len()`` of a container as ``python.collection.size{collection.name=name}``.

    ``container`` is either the container itself or a callable returning it (or None).
    Only a weak reference is kept to a container, so watching never keeps it alive; the series
    stops when it is collected. ``dict``, ``list`` and ``set`` cannot be weakly referenced, so
    pass a callable for them: ``watch("failures", lambda: module.failures)`` holds only the
    lambda (and the module globals it reads) and follows the global when it is reassigned.
    Calling ``watch`` again with the same name replaces the previous one.

    Raises TypeError when ``container`` is neither sized-and-weakly-referenceable nor callable.
    """
    getter: _Getter
    if isinstance(container, Sized):
        try:
            getter = weakref.ref(container)
        except TypeError:
            raise TypeError(
                f"watch({name!r}): a {type(container).__name__} cannot be weakly referenced; "
                f"pass a callable returning it instead, e.g. lambda: my_{type(container).__name__}"
            ) from None
    elif callable(container):
        getter = container
    else:
        raise TypeError(f"watch({name!r}): expected a sized container or a callable")
    with _lock:
        _collections[name] = getter
        _reported.discard(name)


def unwatch(name: str) -> None:
    """Stop exporting the collection or asyncio loop watched under ``name`` (no error if none)."""
    with _lock:
        _collections.pop(name, None)
        _loops.pop(name, None)


def watched() -> list[str]:
    """Names of the watched collections and loops."""
    with _lock:
        return sorted({*_collections, *_loops})


def collection_sizes() -> list[tuple[str, int]]:
    """``(name, len())`` of each watched collection that is still alive; never raises."""
    with _lock:
        items = list(_collections.items())
    sizes: list[tuple[str, int]] = []
    for name, getter in items:
        try:
            container = getter()
            if container is not None:
                sizes.append((name, len(container)))
        except Exception as exc:  # the getter is user code; the collection cycle must go on
            _report_once(name, exc)
    return sizes


def _report_once(name: str, exc: Exception) -> None:
    with _lock:
        if name in _reported:
            return
        _reported.add(name)
    _log.warning("otel_memory: watched collection %r could not be measured: %r", name, exc)


# --------------------------------------------------------------------------- asyncio tasks


@dataclass
class _LoopWatch:
    """Pending-task count of one loop, refreshed on the loop's own thread."""

    loop: weakref.ref[asyncio.AbstractEventLoop]
    pending: int | None = None
    refresh_requested: bool = field(default=False)

    def refresh(self) -> None:
        """Count pending tasks; must run on the loop's thread."""
        self.refresh_requested = False
        loop = self.loop()
        if loop is not None:
            self.pending = len(asyncio.all_tasks(loop))

    def request_refresh(self) -> None:
        """Ask the loop to recount at its next iteration (safe from any thread)."""
        loop = self.loop()
        if loop is None or loop.is_closed() or self.refresh_requested:
            return
        self.refresh_requested = True
        try:
            loop.call_soon_threadsafe(self.refresh)
        except RuntimeError:  # the loop closed in between
            self.refresh_requested = False


def watch_asyncio_tasks(
    loop: asyncio.AbstractEventLoop | None = None, *, name: str = "main"
) -> None:
    """Export the number of pending tasks of ``loop`` as ``python.asyncio.tasks``.

    ``asyncio.all_tasks(loop)`` is not safe to call from another thread, and gauges are read on
    the metric reader's thread. So the count is taken on the loop itself: each collection asks
    the loop (``call_soon_threadsafe``) to recount and reports the count from the previous
    request, i.e. a value one collection interval old. Called on the loop's thread (``loop``
    None: the running loop) the first count is taken at once. Only a weak reference to the loop
    is kept.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    entry = _LoopWatch(weakref.ref(loop))
    with _lock:
        _loops[name] = entry
    if _running_loop() is loop:
        entry.refresh()
    else:
        entry.request_refresh()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def asyncio_task_counts() -> list[tuple[str, int]]:
    """``(name, pending tasks)`` of each watched loop with a count so far; asks for a recount."""
    with _lock:
        items = list(_loops.items())
    counts: list[tuple[str, int]] = []
    for name, entry in items:
        loop = entry.loop()
        if loop is None or loop.is_closed():
            unwatch(name)
            continue
        if entry.pending is not None:
            counts.append((name, entry.pending))
        entry.request_refresh()
    return counts
