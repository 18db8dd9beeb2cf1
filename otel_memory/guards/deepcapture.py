"""Deep capture: where a task that keeps growing allocates, traced with ``tracemalloc``.

    capture = DeepCapture(rss_growth_bytes=200 * MB, top_n=10, frames=16)
    capture.task_started(task, "Nations Dump Processing", start_rss)   # on the task's thread
    capture.sampled(rss)                                               # from the sampler thread
    report = capture.task_ended(task)   # an AllocationReport when the task was traced
    if report is not None:
        span.add_event("otel_memory.allocations", report.attributes())

A task whose RSS has grown by ``rss_growth_bytes`` above its start is traced from the moment the
sampler sees it until it ends, and its name is armed: the next run of a task with that name is
traced from its start. Attribution is a snapshot when tracing of the task begins and one at its
end; the sites whose allocations grew in between, largest first, make the report. Tracing is
process-wide, so tasks running at the same time share each other's sites.

``tracemalloc`` runs only while a traced task runs: started when the first one needs it, stopped
when the last one ends. When the host already traces, it is used as it is and never started or
stopped here. Tasks that are never traced pay one dict insert and one set lookup at start and one
dict pop at end, each under a lock. A traced task pays tracemalloc's slowdown while it runs
(several times slower for allocation-heavy code with one frame) and, at its end, one snapshot
grouped by site: about linear in the live traced blocks (``benchmarks/deepcapture.py``).
"""

from __future__ import annotations

import logging
import threading
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry.util.types import AttributeValue

from otel_memory.base.diagnostics import WarnOnce

ALLOCATIONS_EVENT = "otel_memory.allocations"
SITES = "otel_memory.allocation.sites"
BYTES = "otel_memory.allocation.bytes"
COUNTS = "otel_memory.allocation.counts"

_log = logging.getLogger("otel_memory")

# Our own bookkeeping and tracemalloc's snapshot objects are never a task's allocation site.
# (Dropped after grouping: Snapshot.filter_traces costs as much as the grouping itself.)
_OWN_FILES = frozenset({tracemalloc.__file__, __file__})

Stack = tuple[tuple[str, int], ...]
"""An allocation's call stack as ``tracemalloc`` records it: ``(file, line)``, most recent first."""

_Sizes = dict[Stack, tuple[int, int]]
"""Call stack -> (bytes, blocks) alive at one moment."""

EVENT_FRAMES = 3
"""Most frames a site of the span event names; the allocation profile keeps every frame."""


@dataclass(frozen=True, slots=True)
class AllocationReport:
    """The top allocation sites of one traced task, largest growth first.

    Args:
        sites: ``file:line`` of each site; with more than one frame, its callers follow,
            most recent first, joined by `` < ``.
        bytes: bytes allocated there and still alive at the task's end, per site.
        counts: allocated blocks still alive, per site.
    """

    sites: tuple[str, ...]
    bytes: tuple[int, ...]
    counts: tuple[int, ...]
    stacks: tuple[tuple[Stack, int, int], ...] = field(default=(), repr=False, compare=False)
    """Every stack that grew, with its bytes and blocks (unsorted): the allocation profile."""

    def attributes(self) -> dict[str, AttributeValue]:
        """The ``otel_memory.allocations`` event's attributes (SPEC: Events)."""
        return {SITES: self.sites, BYTES: self.bytes, COUNTS: self.counts}


class _Task:
    """One running task; its capture fields change only under the owner's lock."""

    __slots__ = ("baseline", "captured", "key", "name", "pending", "start_rss")

    def __init__(self, key: object, name: str, start_rss: int) -> None:
        self.key = key  # held so that id(key) is not reused while the task runs
        self.name = name
        self.start_rss = start_rss
        self.captured = False
        self.pending = False  # the sampler is taking its baseline
        self.baseline: _Sizes | None = None  # None: tracing began with it


class DeepCapture:
    """Traces growing tasks with ``tracemalloc``; thread-safe, never raises into the host.

    Args:
        rss_growth_bytes: RSS growth above a task's start that starts tracing it.
        top_n: sites per report.
        frames: frames per allocation when tracing is started here (1: group by line; more:
            the event's sites name up to ``EVENT_FRAMES`` of them, the profile all).
    """

    def __init__(self, rss_growth_bytes: int, top_n: int = 10, frames: int = 1) -> None:
        if rss_growth_bytes < 1 or top_n < 1 or frames < 1:
            raise ValueError(
                f"rss_growth_bytes, top_n and frames must be >= 1, "
                f"got {rss_growth_bytes}, {top_n}, {frames}"
            )
        self._growth = rss_growth_bytes
        self._top_n = top_n
        self._frames = frames
        self._lock = threading.Lock()
        self._tasks: dict[int, _Task] = {}
        self._armed: set[str] = set()
        # Reasons to keep tracing: captured tasks still running, baselines being taken.
        self._holds = 0
        self._started_tracing = False
        self._failure: Exception | None = None  # from under the lock, logged once outside it
        self._warn_once = WarnOnce(_log)

    # ------------------------------------------------------------------ the three hooks

    def task_started(self, key: object, name: str, start_rss: int) -> None:
        """A task started; traced from now on if its name is armed."""
        task = _Task(key, name, start_rss)
        with self._lock:
            self._tasks[id(key)] = task
            if name not in self._armed:
                return
            self._armed.discard(name)
            task.pending = True  # the sampler must not capture it a second time meanwhile
            fresh = self._acquire()
        if fresh is not None:
            self._capture([task], fresh, hold_each=False)

    def sampled(self, rss: int) -> None:
        """An RSS sample: trace every task grown past the threshold, and arm its name."""
        with self._lock:
            if not self._tasks:
                return
            grown = [
                task
                for task in self._tasks.values()
                if not (task.captured or task.pending) and rss - task.start_rss >= self._growth
            ]
            if not grown:
                return
            for task in grown:
                task.pending = True
                self._armed.add(task.name)
            fresh = self._acquire()  # held for the baseline, handed to the tasks below
        self._capture(grown, fresh, hold_each=True)

    def task_ended(self, key: object) -> AllocationReport | None:
        """A task ended: its report when it was traced (tracing stops with the last one)."""
        with self._lock:
            task = self._tasks.pop(id(key), None)
            if task is None or not task.captured:
                return None
        try:
            traces = _traces()
        except Exception as exc:  # tracing stopped under us, or out of memory
            self._warn(exc)
            return None
        finally:
            # Stopped (when this was the last traced task) before grouping: with tracing on,
            # every tuple the grouping makes would be traced too, several times slower.
            self._release()
        try:
            return self._report(task, _group(traces))
        except Exception as exc:  # out of memory
            self._warn(exc)
            return None

    # ------------------------------------------------------------------ state

    def is_capturing(self, key: object) -> bool:
        """Whether the running task ``key`` is being traced."""
        with self._lock:
            task = self._tasks.get(id(key))
            return task is not None and task.captured

    def armed(self) -> frozenset[str]:
        """Task names whose next run is traced from its start."""
        with self._lock:
            return frozenset(self._armed)

    def close(self) -> None:
        """Forget every task and armed name; stop tracing if it was started here."""
        with self._lock:
            self._tasks.clear()
            self._armed.clear()
            self._holds = 0
            self._stop_if_ours()

    # ------------------------------------------------------------------ internals

    def _acquire(self) -> bool | None:
        """Under the lock: one more hold on tracing; True when tracing starts just now, None
        when it cannot start (no hold taken)."""
        if tracemalloc.is_tracing():
            self._holds += 1
            return False
        try:
            tracemalloc.start(self._frames)
        except Exception as exc:  # MemoryError in practice; reported after the lock is free
            self._failure = exc
            return None
        self._holds += 1
        self._started_tracing = True
        return True

    def _release(self) -> None:
        with self._lock:
            if self._holds > 0:  # close() may have dropped every hold already
                self._holds -= 1
            if self._holds == 0:
                self._stop_if_ours()

    def _stop_if_ours(self) -> None:
        if self._started_tracing:
            self._started_tracing = False
            tracemalloc.stop()

    def _capture(self, tasks: list[_Task], fresh: bool | None, *, hold_each: bool) -> None:
        """Take the baseline (none when tracing just began) and mark the tasks traced.

        Called with one hold acquired (none when ``fresh`` is None: tracing could not start).
        ``hold_each``: each task takes a hold of its own and the acquired one is released;
        otherwise it passes to the single task.
        """
        baseline: _Sizes | None = None
        ok = fresh is not None
        if fresh is False:
            try:
                baseline = _group(_traces())
            except Exception as exc:  # the host stopped tracing meanwhile
                self._failure, ok = exc, False
        keep_hold = False
        with self._lock:
            for task in tasks:
                task.pending = False
                if not ok or task.captured or self._tasks.get(id(task.key)) is not task:
                    continue  # or it ended while the baseline was taken: nothing to report
                task.baseline, task.captured = baseline, True
                if hold_each:
                    self._holds += 1
                else:
                    keep_hold = True
            failure, self._failure = self._failure, None
        if failure is not None:
            self._warn(failure)
        if fresh is not None and not keep_hold:
            self._release()

    def _report(self, task: _Task, sizes: _Sizes) -> AllocationReport:
        """The stacks that grew between the task's baseline and now; the event's top sites."""
        baseline = task.baseline or {}
        grown = []
        for stack, (size, count) in sizes.items():
            base_size, base_count = baseline.get(stack, (0, 0))
            if size > base_size:
                grown.append((stack, size - base_size, max(0, count - base_count)))
        sites: dict[Stack, list[int]] = {}
        for stack, size, count in grown:
            site = sites.setdefault(stack[:EVENT_FRAMES], [0, 0])
            site[0] += size
            site[1] += count
        top = sorted(sites.items(), key=lambda row: row[1][0], reverse=True)[: self._top_n]
        return AllocationReport(
            sites=tuple(_site(stack) for stack, _ in top),
            bytes=tuple(size for _, (size, _) in top),
            counts=tuple(count for _, (_, count) in top),
            stacks=tuple(grown),
        )

    def _warn(self, exc: BaseException) -> None:
        self._warn_once("capture", "otel_memory: deep capture failed: %r", exc)


_Trace = tuple[int, int, Stack, int]
"""A raw trace of a snapshot: domain, size, stack, total frames."""


def _traces() -> list[_Trace]:
    """Every traced block alive now, as the snapshot's raw traces."""
    # The raw tuples: grouping them costs a third of Snapshot.statistics(), which builds a
    # Traceback object per trace.
    traces: list[_Trace] = cast(Any, tracemalloc.take_snapshot().traces)._traces
    return traces


def _group(traces: list[_Trace]) -> _Sizes:
    """Bytes and blocks alive per call stack (our own bookkeeping left out)."""
    sizes: _Sizes = {}
    get = sizes.get
    for _, size, stack, _ in traces:
        total, blocks = get(stack, (0, 0))
        sizes[stack] = (total + size, blocks + 1)
    for stack in [stack for stack in sizes if not stack or stack[0][0] in _OWN_FILES]:
        del sizes[stack]
    return sizes


def _site(stack: Stack) -> str:
    """``file:line``, most recent frame first; callers follow after `` < ``."""
    return " < ".join(f"{filename}:{lineno}" for filename, lineno in stack)
