"""Task runs out of daily-log lines: which START ended where, and how high RSS went meanwhile.

    from otel_memory.cli.taskruns import pair_runs

    for run in pair_runs(parse_line(text) for text in open("logs/memory_20251116.log")):
        print(run.name, run.start, run.end, run.peak_rss_mb, run.end_reason)

This is the one place where lines are paired; ``analyze`` and ``report`` both use it. The rules
follow the monitor's (SPEC "Task life rules"), read back from what the log can show:

* **END**: its bracket holds a *label* ("Nations Dump Complete") or, without one, the task's
  own name. It ends the most recent open run of that name, else the most recent open run.
* **A START while a run is open** may be a legacy ``set_active_task`` replacing the open task
  (the legacy API is flat and writes no END for it) or a nested ``traced_task``. The log cannot
  tell which until later: the earlier run stays open, and if it never gets its own END it is
  *replaced*, ended at the later START (seed 003: ``START [Download]``, ``START [Processing]``,
  ``END [Nations Dump Complete]`` are two runs, Download ended by the second START).
* **``---`` lines** name the most recently started task still open, else ``Idle``: a ``---``
  line naming a run deeper in the stack, or ``Idle``, or ``Monitor Stopped``, shows that the runs
  above it are over (ended by a later START if one came, else *gone* by that line).
  ``Monitor Started`` is a new process: what was open never ended.
* Interleaved tasks of concurrent threads that end with labels can be mis-paired; the log has
  nothing to tell them apart. Processes that share a daily file tag their lines with their pid
  (`` | PID: 1234``): each process's lines are paired apart from the others'.

Times are seconds on the analyzer's axis (:func:`otel_memory.cli.scan.naive_seconds`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from otel_memory.base.logline import IDLE, LogLine, Marker
from otel_memory.cli.scan import naive_seconds

MONITOR_STARTED = "Monitor Started"
"""``---`` name written when a process starts its monitor (the monitor's ``STARTED``)."""
MONITOR_STOPPED = "Monitor Stopped"
"""``---`` name written by ``stop()`` (``otel_memory.runtime.monitor.STOPPED``)."""
MAX_OPEN_RUNS = 256
"""Open runs kept per stream; beyond, the oldest is given up as unfinished."""

_START, _END, _CHECK = Marker.START.value, Marker.END.value, Marker.CHECK.value

ENDED = "end"
"""An END line ended the run."""
REPLACED = "replaced"
"""A later START ended it (legacy API, no END line)."""
GONE = "gone"
"""A later ``---`` line showed it was no longer open; it ended at or before that line."""
UNFINISHED = "unfinished"
"""The log (or the process) ended first; :attr:`TaskRun.end` is None."""


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One run of a task, from its START line to its end.

    Args:
        name: the task name (the START's bracket).
        start: time of the START line.
        end: when it ended, None when it never did (see ``end_reason``).
        start_rss_mb: RSS on the START line.
        end_rss_mb: RSS when it ended (the END line, or the line that ended it), or None.
        peak_rss_mb: the highest RSS of the lines from start to end, both included.
        end_label: the END line's bracket, None when no END line ended it.
        end_reason: :data:`ENDED`, :data:`REPLACED`, :data:`GONE` or :data:`UNFINISHED`.
    """

    name: str
    start: float
    end: float | None
    start_rss_mb: float
    end_rss_mb: float | None
    peak_rss_mb: float
    end_label: str | None
    end_reason: str

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, None when unfinished."""
        return None if self.end is None else max(0.0, self.end - self.start)

    @property
    def delta_mb(self) -> float | None:
        """RSS at the end minus RSS at the start, None when unfinished."""
        return None if self.end_rss_mb is None else self.end_rss_mb - self.start_rss_mb


@dataclass(slots=True)
class _Open:
    """A run whose end is not known yet."""

    name: str
    start: float
    start_rss: float
    peak: float
    serial: int
    # Time, RSS and peak at the first START pushed on top of it: its end if it never gets an
    # END of its own (legacy replacement); an END later means it was nested instead.
    replaced_at: float | None = None
    replaced_rss: float = 0.0
    replaced_peak: float = 0.0


RunSink = Callable[[TaskRun], None]


class RunPairer:
    """Pairs the lines of one stream into :class:`TaskRun` s, handed to ``on_run`` as they end.

    Call :meth:`line` for START and END lines and for ``---`` lines whose name is not
    :attr:`expected`; ``high`` is the highest RSS of the lines skipped since the previous call
    (those lines count towards the peaks of open runs). Call :meth:`close` at the end.
    """

    def __init__(self, on_run: RunSink, *, serials_from: int = 0) -> None:
        self._on_run = on_run
        self._open: list[_Open] = []
        self._serials = serials_from
        self.expected = IDLE
        """The name a ``---`` line carries while nothing changes: skip those lines."""
        self.serial = 0
        """The number of the innermost open run (numbers count from ``serials_from + 1``);
        0 when none is open."""
        self.line_serial = 0
        """The number of the run the last line belongs to (its START, its END, the innermost
        open run for a ``---`` line), 0 for none."""
        self.quiet: str | None = None
        """A second name whose ``---`` lines change nothing while runs are open (one that names
        no open run, e.g. a task whose START the log lacks): skip those lines too."""
        self._stray: str | None = None
        self.unmatched_ends = 0

    def line(self, marker: str, name: str, t: float, rss: float, high: float) -> str:
        """Account for one line; the task it belongs to (an END's run, else ``name``)."""
        stack = self._open
        high = max(high, rss)
        for run in stack:
            run.peak = max(run.peak, high)
        owner = name
        depth = len(stack)
        if marker == _START:
            self._start(name, t, rss)
        elif marker == _END:
            owner = self._end(name, t, rss)
        else:
            self._check(name, t, rss)
            if stack and len(stack) == depth and stack[-1].serial == self.serial:
                self._stray = name  # it named no open run: the same line again changes nothing
        if stack:
            top = stack[-1]
            self.expected, self.serial, self.quiet = top.name, top.serial, self._stray
        else:
            self.expected, self.serial, self.quiet = IDLE, 0, None
        if marker != _END:
            self.line_serial = self.serial
        return owner

    def close(self) -> None:
        """The stream ended: runs replaced meanwhile end at their replacement, the rest never."""
        stack = self._open
        while stack:
            run = stack.pop()
            if run.replaced_at is not None:
                self._replaced(run, run.replaced_at)
            else:
                self._give_up(run)
        self.expected, self.serial, self.quiet = IDLE, 0, None

    @property
    def open_runs(self) -> int:
        """Runs started and not known to have ended."""
        return len(self._open)

    @property
    def serials_used(self) -> int:
        """The highest run number given so far (start the next stream's pairer there)."""
        return self._serials

    def is_open(self, serial: int) -> bool:
        """Whether the run numbered ``serial`` is still open."""
        # A loop, not any() over a generator: this runs at every change of task.
        for run in self._open:  # noqa: SIM110
            if run.serial == serial:
                return True
        return False

    def _start(self, name: str, t: float, rss: float) -> None:
        stack = self._open
        if stack and stack[-1].replaced_at is None:
            below = stack[-1]
            below.replaced_at, below.replaced_rss, below.replaced_peak = t, rss, below.peak
        if len(stack) >= MAX_OPEN_RUNS:
            self._give_up(stack.pop(0))
        self._serials += 1
        stack.append(_Open(name, t, rss, rss, self._serials))
        if name == self._stray:
            self._stray = None

    def _check(self, name: str, t: float, rss: float) -> None:
        """A ``---`` line names the most recently started task still open, else Idle."""
        stack = self._open
        if name == MONITOR_STARTED:  # a new process: nothing of the old one ever ended
            while stack:
                self._give_up(stack.pop())
        elif name in (IDLE, MONITOR_STOPPED):
            self._over(0, t, rss)
        else:
            for index in range(len(stack) - 1, -1, -1):
                if stack[index].name == name:
                    self._over(index + 1, t, rss)
                    break

    def _end(self, label: str, t: float, rss: float) -> str:
        stack = self._open
        for index in range(len(stack) - 1, -1, -1):
            if stack[index].name == label:
                break
        else:
            index = len(stack) - 1
        self.line_serial = 0
        if index < 0:
            self.unmatched_ends += 1
            return label
        run = stack.pop(index)
        self.line_serial = run.serial
        self._emit(run, t, rss, label, ENDED)
        return run.name

    def _over(self, keep: int, t: float, rss: float) -> None:
        """End every open run above the first ``keep``: a ``---`` line shows they are over."""
        stack = self._open
        while len(stack) > keep:
            run = stack.pop()
            if run.replaced_at is not None:
                self._replaced(run, run.replaced_at)
            else:
                self._emit(run, t, rss, None, GONE)

    def _give_up(self, run: _Open) -> None:
        self._on_run(
            TaskRun(run.name, run.start, None, run.start_rss, None, run.peak, None, UNFINISHED)
        )

    def _replaced(self, run: _Open, at: float) -> None:
        run.peak = run.replaced_peak
        self._emit(run, at, run.replaced_rss, None, REPLACED)

    def _emit(self, run: _Open, end: float, rss: float, label: str | None, reason: str) -> None:
        peak = max(run.peak, rss)
        self._on_run(TaskRun(run.name, run.start, end, run.start_rss, rss, peak, label, reason))


def pair_runs(lines: Iterable[LogLine | None]) -> list[TaskRun]:
    """Every run of one stream of parsed lines (None entries, unparsed lines, are skipped),
    in the order they ended; unfinished ones last. Lines of several processes (each tagged
    with its pid) are paired within their own process."""
    runs: list[TaskRun] = []
    pairers: dict[int | None, RunPairer] = {}
    for line in lines:
        if line is None:
            continue
        pairer = pairers.get(line.pid)
        if pairer is None:
            pairer = pairers[line.pid] = RunPairer(runs.append)
        pairer.line(
            line.marker.value, line.name, naive_seconds(line.timestamp), line.rss_mb, line.rss_mb
        )
    for pairer in pairers.values():
        pairer.close()
    return runs
