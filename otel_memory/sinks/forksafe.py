"""A forked child whose SDK can still collect metrics (opentelemetry-python issue #4345).

    from otel_memory.sinks.forksafe import hold_collections_across_fork

    hold_collections_across_fork(meter_provider)   # once per provider; install_metrics does it
    hold_collections_across_fork(logger_provider)  # the monitor does it for its tracer and logger

The SDK's ``MeterProvider`` holds its measurement consumer's lock through every collection,
observable callbacks included, and does not renew it after ``os.fork()``. A pre-fork server whose
master is collected (a Prometheus scrape, the periodic exporter) while it forks a worker gives a
worker whose collections block forever. An export in flight at the fork does the same through the
exporter: the OTLP gRPC exporter's channel keeps a lock of its own, held around each call, that a
child inherits held (a gunicorn worker that serves requests and never exports a metric). Around
each fork this module takes those locks (the consumer's, each reader storage's and each periodic
reader's export lock), waiting at most :data:`FORK_WAIT_SECONDS` in all for a running collection
or export, so the child starts with a consistent, free SDK and exporter; when one outlasts the
wait, the child gets new SDK locks. The span and log batch processors' exports are held the same
way (a replacement worker forked while the master exported its ``---`` lines would never send
its own log records, the report of the worker it replaces included).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Protocol

from otel_memory.base.diagnostics import WarnOnce

FORK_WAIT_SECONDS = 2.0
"""How long a fork waits for a running collection and export: a hung callback or a collector that
does not answer must not hang the host's fork."""

_log = logging.getLogger("otel_memory")
_warn = WarnOnce(_log)
_registered: weakref.WeakSet[object] = weakref.WeakSet()
_registered_lock = threading.Lock()


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class CollectionLock:
    """One SDK lock a collection or export holds: ``getattr(owner, name)`` and how to make a new
    one (a fork waits for each within the bound, and renews in the child one it could not take;
    ``None``: the owner renews it itself after a fork)."""

    owner: object
    name: str
    new: Callable[[], _Lock] | None

    def current(self) -> _Lock:
        """The lock the owner holds now (the SDK reads the attribute at each use)."""
        lock: _Lock = getattr(self.owner, self.name)
        return lock


def collection_locks(provider: object) -> list[CollectionLock]:
    """The locks an SDK provider's collections and exports hold, outermost first; none for others.

    A ``TracerProvider`` or ``LoggerProvider``: each batch processor's ``_export_lock``, held
    through its exporter's network call (the SDK renews it after a fork, not the exporter's own
    locks). A ``MeterProvider``:

    ``SynchronousMeasurementConsumer._lock`` is held through each whole collection. Each reader's
    ``MetricReaderStorage._lock`` is held inside it while the storage is read, and also outside
    it, briefly, by a thread recording an instrument's first measurement: the one case the
    consumer lock does not cover. A ``PeriodicExportingMetricReader``'s ``_export_lock`` is held
    after the collection, through the exporter's network call, and is not renewed after a fork
    either: waiting for it is waiting for the export, whose exporter may hold locks of its own
    (gRPC's channel) that nobody renews. The per-stream aggregation locks are left alone: many,
    held for microseconds by a record and never while user code runs.
    """
    consumer = getattr(provider, "_measurement_consumer", None)
    if not _is_lock(getattr(consumer, "_lock", None)):
        batches = [getattr(p, "_batch_processor", None) for p in _processors(provider) or ()]
        return [
            CollectionLock(batch, "_export_lock", None)
            for batch in batches
            if _is_lock(getattr(batch, "_export_lock", None))
        ]
    locks = [CollectionLock(consumer, "_lock", threading.Lock)]
    storages = getattr(consumer, "_reader_storages", None)
    if isinstance(storages, dict):
        locks += [
            CollectionLock(storage, "_lock", threading.RLock)
            for storage in storages.values()
            if _is_lock(getattr(storage, "_lock", None))
        ]
        locks += [
            CollectionLock(reader, "_export_lock", threading.Lock)
            for reader in storages
            if _is_lock(getattr(reader, "_export_lock", None))
        ]
    return locks


def _processors(provider: object) -> tuple[object, ...] | None:
    """An SDK tracer or logger provider's processors (as they are now); ``None`` for others."""
    for multi, name in (
        ("_active_span_processor", "_span_processors"),
        ("_multi_log_record_processor", "_log_record_processors"),
    ):
        processors = getattr(getattr(provider, multi, None), name, None)
        if isinstance(processors, tuple):
            return processors
    return None


def hold_collections_across_fork(provider: object, wait: float = FORK_WAIT_SECONDS) -> bool:
    """Take an SDK provider's collection and export locks around each fork (a meter, tracer or
    logger provider: :func:`collection_locks`, looked up at each fork); returns whether it
    registered now.

    Registers once per provider and holds it weakly; does nothing for a provider that is not the
    SDK's (the API's no-op or proxy provider) or where ``os.register_at_fork`` is missing.
    """
    if not hasattr(os, "register_at_fork"):
        return False
    if not collection_locks(provider) and _processors(provider) is None:
        return False
    with _registered_lock:
        if provider in _registered:
            return False
        _registered.add(provider)
    gate = _ForkGate(weakref.ref(provider), wait)
    os.register_at_fork(
        before=gate.before, after_in_parent=gate.after_in_parent, after_in_child=gate.after_in_child
    )
    return True


class _ForkGate:
    """The at-fork trio for one provider. Never raises: it runs inside the host's ``fork()``.

    A lock that a fork could not take within the bound (a hung callback, an export retrying
    against a collector that does not answer) is not waited for again until a fork finds it
    free, so a pool forking eight workers meanwhile waits once, not eight times.
    """

    def __init__(self, provider: weakref.ref[object], wait: float) -> None:
        self._provider = provider
        self._wait = wait
        # Per forking thread: two threads may fork at once.
        self._taken: dict[int, list[tuple[CollectionLock, _Lock | None]]] = {}
        self._stuck: set[int] = set()  # id() of the locks the last fork could not take

    def _take(self, lock: _Lock, timeout: float) -> _Lock | None:
        """``lock`` once taken within ``timeout`` (without waiting if the last fork could not take
        it); ``None`` if not taken."""
        key = id(lock)
        if lock.acquire(True, 0.0 if key in self._stuck else timeout):
            self._stuck.discard(key)
            return lock
        self._stuck.add(key)
        return None

    def before(self) -> None:
        """Take each lock, waiting for a running collection or export up to the bound in all."""
        try:
            locks = collection_locks(self._provider())
            if not locks:
                return
            consumer, *inner = locks
            taken: list[tuple[CollectionLock, _Lock | None]] = []
            self._taken[threading.get_ident()] = taken
            deadline = time.monotonic() + self._wait
            lock = consumer.current()
            if lock.acquire(False):
                taken.append((consumer, lock))
            elif not _collecting_here(consumer.owner):
                taken.append((consumer, self._take(lock, self._wait)))
            # else this thread forks from inside a collection (a callback): the lock is its own,
            # it releases it in the child too, and waiting for it would only time out.
            for held in inner:
                lock = held.current()
                remaining = max(0.0, deadline - time.monotonic())
                taken.append((held, self._take(lock, remaining)))
        except Exception:  # an at-fork handler must not break the host's fork
            return

    def after_in_parent(self) -> None:
        """Release what ``before`` took; say once when a collection outlasted the wait."""
        for held, lock in self._taken.pop(threading.get_ident(), []):
            if lock is None:
                _warn(
                    "fork-collection",
                    "A metrics collection or export was still running %.1f s after a fork "
                    "began; the child got new SDK locks (%s.%s)",
                    self._wait,
                    type(held.owner).__name__,
                    held.name,
                )
            elif lock is not None:
                _release(lock)

    def after_in_child(self) -> None:
        """Release what ``before`` took; replace a lock it could not take (its holder is gone)."""
        for held, lock in self._taken.pop(threading.get_ident(), []):
            if (lock is None or not _release(lock)) and held.new is not None:
                try:
                    setattr(held.owner, held.name, held.new())
                except (AttributeError, TypeError):
                    continue


def _release(lock: _Lock) -> bool:
    try:
        lock.release()
    except RuntimeError:  # not held, or (an RLock) held by another thread
        return False
    return True


def _is_lock(candidate: object) -> bool:
    return callable(getattr(candidate, "acquire", None)) and callable(
        getattr(candidate, "release", None)
    )


def _collecting_here(consumer: object) -> bool:
    """Whether this thread is inside ``consumer.collect`` (so it holds the consumer's lock)."""
    code = getattr(getattr(type(consumer), "collect", None), "__code__", None)
    if not isinstance(code, CodeType):
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code and frame.f_locals.get("self") is consumer:
            return True
        frame = frame.f_back
    return False
