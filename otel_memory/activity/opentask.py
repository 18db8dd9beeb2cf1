"""An open task and the registry of every open task in the process.

    registry = OpenTasks()
    registry.add(task)              # True when none was open before (wake the sampler)
    registry.most_recent()          # what a ``---`` line names
    registry.record_rss(rss)        # the sampler raises open tasks' peaks
    registry.remove(task)           # ended: the others' overlap counts go down

``memory.task.overlap`` is kept here: each open task counts the other open tasks that are
neither its ancestors nor its descendants, and keeps the most it saw (``overlap``).

Tasks, the events they queue and the sampler share these types; nothing here imports them.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.trace import Span

from otel_memory.base.memory import MemoryReading


class _Request:
    """The opener of request and job spans (SERVER/CONSUMER spans another library made)."""

    def __repr__(self) -> str:
        return "request span"


REQUEST = _Request()


@dataclass(eq=False, slots=True)
class OpenTask:
    """A task between its start and its end.

    ``owner`` is the asyncio task or thread that opened it (None: a generator's task, which
    lives as long as the generator); ``tick`` the number of sampler ticks begun when it opened;
    ``context`` is the OpenTelemetry context it made current, ``parent_context`` the one that
    was current before. ``ancestors`` are the tasks and requests open in its context when it
    opened (not counted in its overlap), ``overlap`` the most other tasks open at once while it
    ran, ``concurrent`` how many are open now.
    """

    name: str
    span: Span
    start: MemoryReading | None
    owner: object
    opener: object
    peak_rss: int = 0
    tick: int = 0
    ancestors: tuple[OpenTask, ...] = ()
    overlap: int = 0
    concurrent: int = 0
    parent_context: Context | None = None
    context: Context | None = None
    token: object = None
    ended: bool = field(default=False)


request_stack: ContextVar[tuple[OpenTask, ...]] = ContextVar(
    "otel_memory_request_stack", default=()
)
"""The request spans open in this context, outermost first: the ancestors of tasks opened here."""


class OpenTasks:
    """Every open task in the process, in start order; feeds peaks, ``---`` lines and overlaps.

    Reads take no lock (one dict operation in C, atomic under the GIL). ``add`` and ``remove``
    take one uncontended lock: the overlap counts of the other open tasks change with them, and
    with one task open (the usual case) there is nothing to count.
    """

    def __init__(self) -> None:
        self._tasks: dict[int, OpenTask] = {}
        self._lock = threading.Lock()
        # A fork while another thread held the lock would leave the child's copy held forever.
        os.register_at_fork(after_in_child=_after_fork(self))

    def add(self, task: OpenTask) -> bool:
        """Register a task that just started; returns whether none was open before."""
        tasks = self._tasks
        with self._lock:
            was_idle = not tasks
            if not was_idle:
                ancestors = task.ancestors
                others = 0
                for other in tasks.values():
                    if other not in ancestors:  # identity: OpenTask has no __eq__
                        others += 1
                        other.concurrent += 1
                        other.overlap = max(other.overlap, other.concurrent)
                task.concurrent = task.overlap = others
            tasks[id(task)] = task
        return was_idle

    def remove(self, task: OpenTask) -> None:
        """Forget a task that ended (once: a second call does nothing)."""
        tasks = self._tasks
        with self._lock:
            if tasks.pop(id(task), None) is None or not tasks:
                return
            ancestors = task.ancestors
            for other in tasks.values():
                if other not in ancestors and task not in other.ancestors:
                    other.concurrent -= 1

    def most_recent(self) -> OpenTask | None:
        """The most recently started task still open, if any."""
        tasks = self._tasks
        while tasks:
            try:
                return tasks[next(reversed(tasks))]
            except (KeyError, StopIteration, RuntimeError):  # it ended meanwhile: look again
                continue
        return None

    def snapshot(self) -> list[OpenTask]:
        """The open tasks now, oldest first."""
        return list(self._tasks.values())

    def record_rss(self, rss: int) -> None:
        """Raise the peak of every open task to ``rss`` where it is higher."""
        for task in list(self._tasks.values()):
            task.peak_rss = max(task.peak_rss, rss)

    def record_high_water(self, high_water: int, opened_before_tick: int) -> None:
        """A new lifetime high was reached after sampler tick ``opened_before_tick`` began:
        raise the peak of every task that was already open then (``task.tick`` is the number
        of ticks begun when it opened), and of no other, to ``high_water``."""
        for task in list(self._tasks.values()):
            if task.tick < opened_before_tick and task.peak_rss < high_water:
                task.peak_rss = high_water

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)


def _after_fork(registry: OpenTasks) -> Callable[[], None]:
    """A fork hook (holding ``registry`` weakly: registries may go): the child gets a new lock,
    and starts with no open task, since the parent's tasks are the parent's to end (their
    threads did not come along, and their ``---`` lines and peaks are not the child's)."""
    ref = weakref.ref(registry)

    def renew() -> None:
        alive = ref()
        if alive is not None:
            alive._lock = threading.Lock()
            alive._tasks = {}

    return renew
