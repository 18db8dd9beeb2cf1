"""The snapshot log and the leak trend: heap censuses, logged every ``interval_seconds``.

    from otel_memory.guards.profiler import start_profiler

    profiler = start_profiler(config)      # a daemon thread when config.profiling.enabled
    profiler.snapshot()                    # one snapshot now, synchronously (tests, tools)
    profiler.close()                       # stops and joins the thread

Every ``interval_seconds`` the ``memory_profiler`` logger gets the SPEC block at INFO::

    Memory Snapshot

    Top 50 by object count:
      dict: 5,678 objects
      ...

    Top 50 by memory usage:
      list: 23.1 MB
      ...

and listeners such as the heap gauges get the census.

**Two leak trends.** Every fresh census (the first is taken when the thread starts) feeds
``reachable``, a :class:`~.leaks.LeakDetector` whose candidates are checked by the
:class:`~.reachability.ReachabilityCheck` before they are named: growth tied to a root
is a suspect at once, with its path; growth that is garbage never is, and is checked again after
1, 2, 4, then every 8 censuses. Besides, a ``gc.callbacks`` hook wakes the thread when the host's
own generation-2 collection finishes (the package never calls ``gc.collect()``); the thread then
takes a census, at most one per ``0.9 * interval``, and feeds it to ``detector``: cyclic garbage
was just freed, so its suspects need no check (the search still looks for their path). A class
is reported once, whichever trend names it first.

**A census is skipped when nothing changed.** At each tick the block shows the newest census if
one was taken since the previous tick; otherwise a new one is taken only if a generation-1 or -2
collection ran since the last census. Without one, roughly ``threshold0 * threshold1`` (7,000
by default) tracked objects can have been added, so the previous census is logged (and offered to
listeners) again: an idle 1M-object process then costs next to nothing instead of a 0.25 s census
per interval. With automatic collection disabled (``gc.disable()``) every tick takes a census.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import LoggerProvider

from otel_memory.activity.census import HeapCensus, take_census
from otel_memory.base.config import Config
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.guards.leaks import PROFILER_LOGGER, LeakDetector, LeakSuspect, report_suspect
from otel_memory.guards.reachability import Limits, ReachabilityCheck
from otel_memory.kernel.readings import MB

_log = logging.getLogger("otel_memory")

_Listener = Callable[[HeapCensus], None]

THREAD_NAME = "otel-memory-profiler"
CHECKS_PER_CENSUS = 4
"""Reachability checks after one census at most (each bounded by its ``Limits``)."""
TREND_GAP = 0.9
"""Minimum spacing of trend censuses, as a fraction of the interval."""


def format_snapshot(census: HeapCensus, top_n: int) -> str:
    """The snapshot block: top ``top_n`` classes by count, then by shallow size."""
    by_count = census.top_by_count(top_n)
    by_size = census.top_by_size(top_n)
    lines = ["Memory Snapshot", "", f"Top {len(by_count)} by object count:"]
    lines += [f"  {row.name}: {row.count:,} objects" for row in by_count]
    lines += ["", f"Top {len(by_size)} by memory usage:"]
    lines += [f"  {row.name}: {row.size / MB:,.1f} MB" for row in by_size]
    return "\n".join(lines)


FRESH_ALLOCATIONS = 2_000
"""With automatic collection off, the net allocations of tracked objects since the last full
collection below which a census still counts as taken right after it: garbage piles up without
bound until the host collects again, so a census the thread takes late waits for the next one.
With collection on, young garbage is bounded by the generation thresholds and swings, which the
detector's sustained-growth rule already absorbs."""


def _allocated_since_full_collection() -> int:
    """Net allocations of GC-tracked objects since the last generation-2 collection (about)."""
    count0, count1, count2 = gc.get_count()
    threshold0, threshold1, _ = gc.get_threshold()
    return count0 + max(threshold0, 1) * (count1 + max(threshold1, 1) * count2)


def _collections() -> tuple[int, int]:
    """(full collections, generation-1 and -2 collections) since the interpreter started."""
    stats = gc.get_stats()
    return stats[2]["collections"], stats[1]["collections"] + stats[2]["collections"]


@dataclass(slots=True)
class ProfilerStats:
    """What the profiler did so far (tests, benchmarks).

    Args:
        censuses: censuses taken.
        trend_censuses: of which fed to the leak trend (taken after a full collection).
        ticks: snapshot blocks logged.
        reused: ticks that logged the previous census because nothing had changed.
        checks: reachability checks run.
        check_seconds: CPU seconds they took (the profiler thread's).
    """

    censuses: int = 0
    trend_censuses: int = 0
    ticks: int = 0
    reused: int = 0
    checks: int = 0
    check_seconds: float = 0.0


class Profiler:
    """Takes snapshots on demand and, once started, on a daemon thread (see the module docstring).

    Args:
        config: ``config.profiling`` gives the interval, the top N and the leak streak.
        interval: seconds between snapshot blocks; defaults to ``interval_seconds``.
        take: the census function (tests may pass a scripted one).
        logger: where the snapshot block and leak warnings go (``memory_profiler``).
        logger_provider: for the leak log records; the global provider by default.
        limits: what one reachability check may spend.
    """

    def __init__(
        self,
        config: Config,
        *,
        interval: float | None = None,
        take: Callable[[], HeapCensus] = take_census,
        logger: logging.Logger | None = None,
        logger_provider: LoggerProvider | None = None,
        limits: Limits | None = None,
    ) -> None:
        profiling = config.profiling
        self.interval = profiling.interval_seconds if interval is None else interval
        self.top_n = profiling.top_n_classes
        self.detector = LeakDetector(profiling.leak_snapshots)
        # Every census, garbage included: a candidate is a suspect once its growth is reachable.
        self.reachable = LeakDetector(profiling.leak_snapshots, confirm=True)
        self.reachability = ReachabilityCheck(limits)
        self._retry: dict[str, tuple[int, int]] = {}  # candidate -> (next census, failures)
        self.logger = logger or logging.getLogger(PROFILER_LOGGER)
        self.stats = ProfilerStats()
        self._take = take
        self._logger_provider = logger_provider
        self._listeners: list[_Listener] = []
        self._lock = threading.Lock()  # listeners and thread start
        self._census_lock = threading.Lock()  # one census and one detector update at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn_once = WarnOnce(_log)
        # SimpleQueue.put is reentrant (C, no Python lock): safe from inside a gc callback.
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._wake_pending = False
        self._trend_full = _collections()[0]  # full collections seen at the last trend point
        self._trend_at = -math.inf
        self._latest: HeapCensus | None = None
        self._quiet_activity = -1  # generation-1/2 collections after the thread's last work
        self._latest_at = -math.inf
        self._tick_at = -math.inf

    def add_listener(self, listener: _Listener) -> None:
        """Call ``listener(census)`` after each snapshot."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: _Listener) -> None:
        """Stop calling ``listener`` (no error if it was not added)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def suspects(self) -> list[LeakSuspect]:
        """Every current suspect of both routes (after a full collection, or reachable growth)."""
        found = {s.name: s for s in self.detector.suspects()}
        found.update((s.name, s) for s in self.reachable.suspects())
        return sorted(found.values(), key=lambda s: (-s.growth, s.name))

    def snapshot(self) -> HeapCensus:
        """Take a census now, log it and notify listeners.

        It joins the leak trend only if a full collection has completed since the previous
        trend point (e.g. the caller just ran ``gc.collect()``); the thread does better, taking
        its trend censuses right after the host's own full collections.
        """
        full = _collections()[0]
        census = self._census(trend=full > self._trend_full, full=full)
        self._log(census)
        self._notify(census)
        return census

    def start(self) -> None:
        """Start the snapshot thread (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the snapshot thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (an ongoing census finishes first)."""
        self._stop.set()
        self._wake.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks`` hook: wake the thread when a full collection has finished.

        Runs inside the collector, in whichever thread allocated: no locks, nothing that can
        raise, one queue item at most.
        """
        if phase == "stop" and info.get("generation") == 2 and not self._wake_pending:
            self._wake_pending = True
            self._wake.put(None)

    def _run(self) -> None:
        gc.callbacks.append(self._on_gc)
        try:
            try:  # the reachable-growth trend's first point: a leak is named one interval sooner
                self._census(trend=False, full=_collections()[0], baseline=True)
            except Exception as exc:
                self._warn_once("snapshot", "otel_memory: memory snapshot failed: %r", exc)
            next_tick = time.monotonic() + self.interval
            while not self._stop.is_set():
                with contextlib.suppress(queue.Empty):
                    self._wake.get(timeout=max(0.0, next_tick - time.monotonic()))
                self._wake_pending = False
                if self._stop.is_set():
                    break
                try:
                    self._step(time.monotonic() >= next_tick)
                except Exception as exc:  # the thread must outlive one bad snapshot
                    self._warn_once("snapshot", "otel_memory: memory snapshot failed: %r", exc)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = max(next_tick + self.interval, now)  # late: no burst of ticks
        finally:
            with contextlib.suppress(ValueError):  # the host may have cleared gc.callbacks
                gc.callbacks.remove(self._on_gc)

    def _step(self, tick: bool) -> None:
        full, activity = _collections()
        if (
            full > self._trend_full
            and time.monotonic() - self._trend_at >= TREND_GAP * self.interval
            and (gc.isenabled() or _allocated_since_full_collection() <= FRESH_ALLOCATIONS)
        ):
            self._notify(self._census(trend=True, full=full))
        if tick:
            latest = self._latest
            if latest is None or self._latest_at < self._tick_at:
                # With automatic collection off, collection counts say nothing about change.
                if latest is None or activity != self._quiet_activity or not gc.isenabled():
                    latest = self._census(trend=False, full=full)
                else:
                    self.stats.reused += 1  # nothing changed enough to pay for a census
            self._tick_at = time.monotonic()
            self.stats.ticks += 1
            self._log(latest)
            self._notify(latest)
        # Our own census, block and listeners allocate too: measure change from here on.
        self._quiet_activity = _collections()[1]

    # ------------------------------------------------------------------ shared steps

    def _census(self, *, trend: bool, full: int, baseline: bool = False) -> HeapCensus:
        with self._census_lock:
            census = self._take()
            self.stats.censuses += 1
            if not baseline:  # the baseline is too old for the first block: a tick takes its own
                self._latest = census
                self._latest_at = time.monotonic()
            found: list[LeakSuspect] = []
            if trend:
                self.stats.trend_censuses += 1
                self._trend_full, self._trend_at = full, time.monotonic()
                for suspect in self.detector.observe(census):
                    if not self.reachable.is_suspect(suspect.name):
                        found.append(self._with_path(suspect))
            found += self._confirmed(self.reachable.observe(census))
        for suspect in found:
            report_suspect(suspect, logger=self.logger, logger_provider=self._logger_provider)
        return census

    def _check(self, suspect: LeakSuspect) -> tuple[bool, tuple[str, ...]]:
        verdict = self.reachability.check(suspect.name, suspect.per_snapshot)
        self.stats.checks += 1
        self.stats.check_seconds += verdict.seconds
        return verdict.reachable_enough, verdict.path

    def _with_path(self, suspect: LeakSuspect) -> LeakSuspect:
        """A suspect of the full-collection trend (garbage already gone), with a path if found."""
        return self.detector.confirm(suspect.name, self._check(suspect)[1]) or suspect

    def _confirmed(self, candidates: list[LeakSuspect]) -> list[LeakSuspect]:
        """The candidates whose new instances are reachable; garbage is retried less often."""
        number = self.stats.censuses
        self._retry = {c.name: self._retry[c.name] for c in candidates if c.name in self._retry}
        confirmed: list[LeakSuspect] = []
        checks = 0
        for candidate in candidates:  # the largest growth first
            due, failures = self._retry.get(candidate.name, (number, 0))
            if number < due:
                continue
            if checks == CHECKS_PER_CENSUS:
                break  # the others wait for the next census
            checks += 1
            reachable, path = self._check(candidate)
            if not reachable:
                # garbage (or unknown): check again after 1, 2, 4, then every 8 censuses
                self._retry[candidate.name] = (number + min(2**failures, 8), failures + 1)
                continue
            self._retry.pop(candidate.name, None)
            suspect = self.reachable.confirm(candidate.name, path)
            if suspect is not None and not self.detector.is_suspect(candidate.name):
                confirmed.append(suspect)
        return confirmed

    def _log(self, census: HeapCensus) -> None:
        """The block, at INFO, to the logger's handlers whatever the loggers' levels.

        Profiling was switched on in the configuration: a host whose root logger stays at the
        default WARNING must still get the snapshots its handlers would show (filters and handler
        levels still apply; the host's levels are never changed).
        """
        logger = self.logger
        if logger.disabled:
            return
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 0, format_snapshot(census, self.top_n),
            (), None, "snapshot",
        )
        logger.handle(record)

    def _notify(self, census: HeapCensus) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(census)


def start_profiler(
    config: Config,
    *,
    interval: float | None = None,
    take: Callable[[], HeapCensus] = take_census,
    logger_provider: LoggerProvider | None = None,
) -> Profiler:
    """A :class:`Profiler`, its thread started when ``config.profiling.enabled``."""
    profiler = Profiler(config, interval=interval, take=take, logger_provider=logger_provider)
    if config.profiling.enabled:
        profiler.start()
    return profiler
