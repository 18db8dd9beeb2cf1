"""An open task and the registry of every open task in the process.

    registry = OpenTasks()
    registry.add(task)              # True when none was open before (wake the sampler)
    registry.most_recent()          # what a ``---`` line names
    registry.record_rss(rss)        # the sampler raises open tasks' peaks

Tasks, the events they queue and the sampler share these types; nothing here imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.trace import Span

from otel_memory.base.memory import MemoryReading


@dataclass(eq=False, slots=True)
class OpenTask:
    """A task between its start and its end.

    ``owner`` is the asyncio task or thread that opened it (None: a generator's task, which
    lives as long as the generator); ``tick`` the number of sampler ticks begun when it opened;
    ``context`` is the OpenTelemetry context it made current, ``parent_context`` the one that
    was current before.
    """

    name: str
    span: Span
    start: MemoryReading | None
    owner: object
    opener: object
    peak_rss: int = 0
    tick: int = 0
    parent_context: Context | None = None
    context: Context | None = None
    token: object = None
    ended: bool = field(default=False)


class OpenTasks:
    """Every open task in the process, in start order; feeds peaks and ``---`` lines.

    Each operation is one dict operation in C, atomic under the GIL: the task path takes no
    lock (the hot path of every task).
    """

    def __init__(self) -> None:
        self._tasks: dict[int, OpenTask] = {}

    def add(self, task: OpenTask) -> bool:
        """Register a task that just started; returns whether none was open before."""
        tasks = self._tasks
        was_idle = not tasks
        tasks[id(task)] = task
        return was_idle

    def remove(self, task: OpenTask) -> None:
        """Forget a task that ended."""
        self._tasks.pop(id(task), None)

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
