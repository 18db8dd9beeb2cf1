"""The memory events a guard raises (SPEC: Events): threshold crossings, a deep-captured task's
allocation sites and a previous run's death, each queued as a :class:`Notice` (an
``otel_memory`` log record and an OTel log record) and, where the SPEC says so, a span event or a
``---`` line.

    notices = Notices(events, open_tasks, write_check_line, warn_once)
    reader.on_reading = notices.threshold_listener(ThresholdGuard(config.monitor.thresholds))
    tasks.on_allocations = notices.allocations
    notices.dead_run(run)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from opentelemetry.util.types import AttributeValue

from otel_memory.activity.events import EventPipeline, Notice
from otel_memory.activity.opentask import OpenTask, OpenTasks
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.logline import IDLE
from otel_memory.base.memory import MB, MemoryReading
from otel_memory.guards.deepcapture import AllocationReport
from otel_memory.guards.lastrun import DeadRun
from otel_memory.guards.thresholds import Crossing, ThresholdGuard

THRESHOLD_EVENT = "otel_memory.threshold"
PREVIOUS_RUN_EVENT = "otel_memory.previous_run"
ALLOCATIONS_EVENT = "otel_memory.allocations"


class Notices:
    """Turns what the guards find into events.

    Args:
        events: the pipeline the notices leave through (never dropped).
        open_tasks: whose spans get threshold span events, and whose innermost names a crossing.
        write_check_line: writes one ``---`` line with a given name (a previous run's death).
        warn_once: reports a failing check once.
    """

    def __init__(
        self,
        events: EventPipeline,
        open_tasks: OpenTasks,
        write_check_line: Callable[[str], None],
        warn_once: WarnOnce,
    ) -> None:
        self._events = events
        self._open_tasks = open_tasks
        self._write_check_line = write_check_line
        self._warn_once = warn_once

    def _notice(
        self, name: str, level: int, body: str, attributes: dict[str, AttributeValue]
    ) -> None:
        self._events.put(Notice(name, level, body, attributes, time.time()), wait=False)

    def threshold_listener(self, guard: ThresholdGuard) -> Callable[[MemoryReading], None]:
        """A reading listener that checks every reading; a crossing becomes an event."""
        check = guard.check

        def listener(reading: MemoryReading) -> None:
            try:
                crossings = check(reading.rss, reading.system_available, reading.free_ratio)
            except Exception as exc:
                self._warn_once("thresholds", "otel_memory: threshold check failed: %r", exc)
                return
            for crossing in crossings:
                self.crossing(crossing)

        return listener

    def crossing(self, crossing: Crossing) -> None:
        """A threshold crossed: a span event on every open task, and the event."""
        open_tasks = self._open_tasks.snapshot()
        innermost = open_tasks[-1].name if open_tasks else IDLE
        attributes = crossing.attributes(innermost)
        for task in open_tasks:
            task.span.add_event(THRESHOLD_EVENT, attributes)
        unit = 1 if crossing.name == "free_min" else MB
        shown = "%" if unit == 1 else " MB"
        scale = 100 if unit == 1 else 1 / MB
        self._notice(
            THRESHOLD_EVENT,
            crossing.severity,
            f"otel_memory: {crossing.name} crossed: {crossing.value * scale:.1f}{shown} "
            f"(threshold {crossing.threshold * scale:.1f}{shown}) during {innermost}",
            attributes,
        )

    def allocations(self, task: OpenTask, report: AllocationReport) -> None:
        """A deep-captured task ended: its top allocation sites on the span and as an event."""
        attributes = report.attributes()
        task.span.add_event(ALLOCATIONS_EVENT, attributes)
        top = f"{report.sites[0]} ({report.bytes[0] / MB:.1f} MB)" if report.sites else "none"
        body = f"otel_memory: allocations of {task.name}: top site {top}"
        attributes = {"otel_memory.task.name": task.name, **attributes}
        self._notice(ALLOCATIONS_EVENT, logging.INFO, body, attributes)

    def dead_run(self, run: DeadRun) -> None:
        """An earlier process with this log_dir died: the event and one ``---`` line."""
        last_seen = datetime.fromtimestamp(run.last_seen).astimezone()
        seen = last_seen.isoformat(timespec="seconds")
        attributes: dict[str, AttributeValue] = {
            "otel_memory.previous_run.pid": run.pid,
            "otel_memory.previous_run.last_task": run.last_task,
            "otel_memory.previous_run.last_rss": run.last_rss,
            "otel_memory.previous_run.last_seen": seen,
            "otel_memory.previous_run.cause": run.cause,
        }
        self._notice(
            PREVIOUS_RUN_EVENT,
            logging.WARNING,
            f"otel_memory: the previous run (pid {run.pid}) died ({run.cause}) during "
            f"{run.last_task}, last RSS {run.last_rss / MB:.1f} MB at {seen}",
            attributes,
        )
        self._write_check_line(f"Previous Run Died ({run.cause}) during {run.last_task}")
