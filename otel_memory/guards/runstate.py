"""Keeps this process's run state (:class:`~otel_memory.guards.lastrun.RunState`) current: the
innermost open task and the last RSS, from the events thread and the sampler, so that the next
``start()`` can say what a process that died was doing.

    feed = RunStateFeed(state, open_tasks)
    pipeline.set_sinks([..., feed.sink()])
    sampler_hook = feed.on_sample        # called with each RSS sample
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from otel_memory.activity.events import Event, LineEvent
from otel_memory.activity.opentask import OpenTasks
from otel_memory.base.logline import IDLE
from otel_memory.guards.lastrun import RunState

RUN_STATE_PERIOD = 0.1
"""Seconds between two run-state refreshes from the sampler while tasks run."""


class RunStateFeed:
    """Records the innermost open task and an RSS as this run's last known state.

    Args:
        state: this process's run state file.
        open_tasks: the registry whose most recent task is named.
    """

    def __init__(self, state: RunState, open_tasks: OpenTasks) -> None:
        self._state = state
        self._open_tasks = open_tasks
        self._next = 0.0

    def update(self, rss: int, timestamp: float) -> None:
        """Record the innermost open task and ``rss`` now."""
        task = self._open_tasks.most_recent()
        self._state.update(task.name if task is not None else IDLE, rss, timestamp)

    def on_sample(self, rss: int) -> None:
        """The sampler's hook: refresh at most every :data:`RUN_STATE_PERIOD` seconds."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + RUN_STATE_PERIOD
            self.update(rss, time.time())

    def write(self, batch: Sequence[Event]) -> None:
        """As an events sink: the last line of a batch gives the state."""
        for event in reversed(batch):
            if isinstance(event, LineEvent):
                self.update(event.reading.rss, event.reading.timestamp)
                return

    def close(self) -> None:
        """The monitor ends the state itself."""
