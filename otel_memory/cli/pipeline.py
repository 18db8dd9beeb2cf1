"""One streaming pass over daily-log lines into bounded statistics (what ``analyze`` prints).

    from otel_memory.cli.pipeline import Analyzer, Settings

    analyzer = Analyzer(Settings(top_n=10))
    analyzer.begin_file("logs/memory_20251116.log", stream="logs")
    analyzer.feed(1, lines)               # lines ending with "\\n", numbered from 1
    analysis = analyzer.finish(["logs/memory_20251116.log"])

State stays bounded whatever the input size: a top-N heap, one aggregate per task name, one
per day of idle lines, at most :data:`MAX_IDLE_POINTS` idle points, a short stack of open runs.

How the numbers are defined:

* **time above a threshold**: a line stands for the interval until the next line of the same
  stream (a directory's daily logs in date order), capped at twice ``interval_seconds`` so that a
  stopped process does not count as hours at its last level; the last line of a stream stands
  for nothing. "Above" is strictly greater (RSS), "below" strictly less (system memory).
* **task runs**: paired by :mod:`otel_memory.cli.taskruns` (legacy replacement included); a
  run counts when it ended inside ``--since``/``--until``.
* **peaks**: one line per task run (its highest line while it was the innermost open run) or per
  plateau (consecutive lines with no task open and the same name, e.g. an idle stretch).
* **idle trend**: the least-squares fit of :mod:`otel_memory.base.trend` over the ``--- [Idle]``
  lines of all inputs; beyond :data:`MAX_IDLE_POINTS` lines, over every 2nd (4th, ...) of them.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from otel_memory.base.logline import IDLE, LINE_PATTERN, PID_MARK, Marker, line_pid
from otel_memory.base.trend import fit
from otel_memory.cli import tables
from otel_memory.cli.scan import (
    FLOAT_CACHE_SIZE,
    MINUTE_SECONDS,
    Clock,
    Floats,
    format_seconds,
    match_chunk,
    naive_seconds,
    slow_seconds,
    stamp_of,
)
from otel_memory.cli.schema import (
    GROWING,
    INSUFFICIENT,
    SHRINKING,
    STABLE,
    Analysis,
    Breach,
    DayIdle,
    IdleTrend,
    LineCounts,
    Lowest,
    Peak,
    TaskSummary,
)
from otel_memory.cli.taskruns import UNFINISHED, RunPairer, RunSink, TaskRun

_CHECK = Marker.CHECK.value
_MARKER_NAMES = {m.value: m.name for m in Marker}
_MAX_MALFORMED_SHOWN = 5
MAX_IDLE_POINTS = 1 << 15
"""Idle points kept for the trend fit (45 days of lines every 2 minutes); beyond, a regular
sample of them."""
# Extra peak candidates: a run interrupted by a nested one can enter the heap twice.
_PEAK_MARGIN = 8
_MAX_WAITING_RUNS = 64


@dataclass(frozen=True, slots=True)
class Settings:
    """What to compute and over which lines; built once from the options.

    Args:
        top_n: how many peak lines to keep.
        warning_mb: RSS above this counts as warning time.
        critical_mb: RSS above this counts as critical time.
        available_min_mb: system available below this counts as low-memory time.
        free_min_percent: system free below this percentage counts as low-memory time.
        interval_seconds: the monitor's interval; a line stands for at most twice this long.
        task: only lines of this task (bracketed name, or an END closing this task).
        since: only lines stamped at or after this time.
        until: only lines stamped at or before this time.
        above_mb: report every selected line whose RSS is above this to ``on_above``.
    """

    top_n: int = 10
    warning_mb: float = 1000.0
    critical_mb: float = 1500.0
    available_min_mb: float = 500.0
    free_min_percent: float = 25.0
    interval_seconds: float = 120.0
    task: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    above_mb: float | None = None


BandSink = Callable[[str, float, float], None]
PointSink = Callable[[float, float, float, float], None]
AboveSink = Callable[[str, int, str], None]


# ---------------------------------------------------------------------------- accumulators


@dataclass(slots=True)
class _Breach:
    """Lines beyond one threshold and the time they stand for."""

    seconds: float = 0.0
    lines: int = 0
    first: float | None = None
    last: float | None = None

    def line(self, t: float) -> None:
        self.lines += 1
        if self.first is None or t < self.first:
            self.first = t
        if self.last is None or t > self.last:
            self.last = t

    def frozen(self, threshold: float) -> Breach:
        return Breach(
            threshold=threshold,
            seconds=self.seconds,
            lines=self.lines,
            first=None if self.first is None else format_seconds(self.first),
            last=None if self.last is None else format_seconds(self.last),
        )


@dataclass(slots=True)
class _Values:
    """Count, sum, minimum and maximum of some RSS values (a task's lines, a day's idle)."""

    count: int
    total: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> _Values:
        return cls(len(values), math.fsum(values), min(values), max(values))

    def add(self, values: list[float]) -> None:
        self.count += len(values)
        self.total += math.fsum(values)
        self.low = min(self.low, *values)
        self.high = max(self.high, *values)

    @property
    def mean(self) -> float:
        return self.total / self.count


@dataclass(slots=True)
class _Runs:
    """The runs of one task: how many, RSS end-start and duration, summed and highest."""

    count: int = 0
    delta_total: float = 0.0
    delta_max: float = -math.inf
    duration_total: float = 0.0
    duration_max: float = 0.0

    def add(self, delta: float, duration: float) -> None:
        self.count += 1
        self.delta_total += delta
        self.duration_total += duration
        if delta > self.delta_max:  # noqa: PLR1730 -- once per run: cheaper than max()
            self.delta_max = delta
        if duration > self.duration_max:  # noqa: PLR1730
            self.duration_max = duration


@dataclass(slots=True)
class _Lowest:
    value: float
    t: float
    task: str

    def frozen(self) -> Lowest:
        return Lowest(value=self.value, timestamp=format_seconds(self.t), task=self.task)


@dataclass(slots=True)
class _IdlePoints:
    """Idle ``(t, rss)`` points for the trend fit, at most ``limit``: past it, every second
    point is dropped and later only every ``stride``-th idle line is kept (a regular sample
    of the whole series: slope and r² stay unbiased; a thousandth of the points cost)."""

    limit: int = MAX_IDLE_POINTS
    stride: int = 1
    count: int = 0
    first: float = math.inf
    last: float = -math.inf
    total: float = 0.0
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, times: list[float], values: list[float]) -> None:
        # Keep the lines whose index in the whole series is a multiple of the stride.
        offset = -self.count % self.stride
        self.count += len(times)
        self.total += math.fsum(values)
        self.first = min(self.first, *times)
        self.last = max(self.last, *times)
        self.times += times[offset :: self.stride]
        self.values += values[offset :: self.stride]
        while len(self.times) > self.limit:
            del self.times[1::2], self.values[1::2]
            self.stride *= 2

    def points(self) -> tuple[list[float], list[float]]:
        return self.times, self.values


PeakEntry = tuple[float, int, str, int, str, object]
"""(rss, -(order), file, line number, text, segment key)."""


@dataclass(slots=True)
class _Stream:
    """What carries from one line to the next within a stream."""

    pairer: RunPairer
    # The previous selected line (t, rss, available, free) when it was beyond a threshold: it
    # stands for the time until the next line. None when it was not, or was not selected.
    alarm: tuple[float, float, float, float] | None = None
    last_t: float | None = None
    key: object = None  # the segment of the peak list: a run serial or a plateau's name
    fast_key: object = IDLE  # the segment of a line that does not change it


# ---------------------------------------------------------------------------- the analyzer


class Analyzer:
    """Feed it chunks of lines file by file; :meth:`finish` gives the :class:`Analysis`.

    ``on_point(t, rss, vms, available)`` receives every selected line, ``on_run`` every task
    run and ``on_band(task, start, end)`` its interval (for charts), ``on_above(file, line,
    text)`` every selected line above ``settings.above_mb``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        on_point: PointSink | None = None,
        on_band: BandSink | None = None,
        on_above: AboveSink | None = None,
        on_run: RunSink | None = None,
    ) -> None:
        self.settings = s = settings or Settings()
        self._on_point = on_point
        self._on_band = on_band
        self._on_above = on_above
        self._on_run = on_run
        self._since = None if s.since is None else stamp_of(s.since)
        self._until = None if s.until is None else stamp_of(s.until)
        self._since_t = -math.inf if s.since is None else naive_seconds(s.since)
        self._until_t = math.inf if s.until is None else naive_seconds(s.until)
        self._cap = 2.0 * s.interval_seconds
        self._clock = Clock()
        self._floats = Floats()
        self._stream_key: str | None = None
        self._stream = self._new_stream()
        self._file = ""
        self._file_index = -1
        self._total = self._parsed = self._selected = self._blank = self._malformed = 0
        self._malformed_at: list[str] = []
        self._first, self._last = math.inf, -math.inf
        self._heap: list[PeakEntry] = []
        self._best: PeakEntry | None = None  # the best line of the current segment
        self._run_best: dict[int, PeakEntry] = {}
        self._lines_by_task: dict[str, _Values] = {}
        self._runs_by_task: dict[str, _Runs] = {}
        self._warning, self._critical = _Breach(), _Breach()
        self._available_low, self._free_low = _Breach(), _Breach()
        self._lowest_available: _Lowest | None = None
        self._lowest_free: _Lowest | None = None
        self._idle = _IdlePoints()
        self._idle_days: dict[str, _Values] = {}
        self._unmatched_starts = 0
        self._unmatched_ends = 0
        # Several processes may share a daily file; each tags its lines (" | PID: n") and has a
        # stream of its own, so its STARTs pair with its own ENDs. The current stream is
        # self._stream; the others wait here with the best line of their current segment.
        self._pid: int | None = None
        self._parked: dict[int | None, tuple[_Stream, PeakEntry | None]] = {}
        self._pid_serials: dict[int, int] = {}  # pid -> the last run number its streams gave

    # ------------------------------------------------------------------ streams and files

    def _new_stream(self, serials_from: int = 0) -> _Stream:
        # Run numbers go on across streams: they key the peak list's segments.
        return _Stream(RunPairer(self._run_ended, serials_from=serials_from))

    def begin_file(self, file: str, stream: str) -> None:
        """Start a file; files of the same ``stream`` continue each other (in date order)."""
        if stream != self._stream_key:
            self._end_stream()
            self._stream_key = stream
        self._file = file
        self._file_index += 1

    def _end_stream(self) -> None:
        self._use_process(None)
        untagged = self._stream
        for stream, best in [*self._parked.values(), (untagged, self._best)]:
            self._stream, self._best = stream, best
            stream.pairer.close()
            self._unmatched_ends += stream.pairer.unmatched_ends
            self._end_segment()
        self._remember_serials()
        self._parked.clear()
        self._flush_runs()
        self._stream = self._new_stream(untagged.pairer.serials_used)

    def _use_process(self, pid: int | None) -> None:
        """Make ``pid``'s stream the current one (None: the lines that carry no pid)."""
        if pid == self._pid:
            return
        self._parked[self._pid] = (self._stream, self._best)
        self._pid = pid
        parked = self._parked.pop(pid, None)
        if parked is not None:
            self._stream, self._best = parked
            return
        if pid is not None:  # run numbers of process k start at k << 32: never shared
            first = self._pid_serials.get(pid, (len(self._pid_serials) + 1) << 32)
            self._pid_serials[pid] = first
            self._stream, self._best = self._new_stream(first), None
        else:
            self._stream, self._best = self._new_stream(), None

    def _remember_serials(self) -> None:
        for pid, (stream, _) in self._parked.items():
            if pid is not None:
                self._pid_serials[pid] = stream.pairer.serials_used

    def _streams(self) -> list[_Stream]:
        return [self._stream, *(stream for stream, _ in self._parked.values())]

    def _run_ended(self, run: TaskRun) -> None:
        """A run of the current stream ended (or never will): count it if selected."""
        s = self.settings
        if s.task is not None and run.name != s.task:
            return
        if run.end_reason == UNFINISHED:
            self._unmatched_starts += 1
            last_t = self._stream.last_t
            if self._on_band is not None and last_t is not None and last_t >= run.start:
                self._on_band(run.name, run.start, last_t)
        elif run.end is not None and self._since_t <= run.end <= self._until_t:
            runs = self._runs_by_task.get(run.name)
            if runs is None:
                runs = self._runs_by_task[run.name] = _Runs()
            runs.add(run.end_rss_mb - run.start_rss_mb if run.end_rss_mb is not None else 0.0,
                     run.end - run.start)  # fmt: skip
            if self._on_band is not None:
                self._on_band(run.name, run.start, run.end)
        else:
            return
        if self._on_run is not None:
            self._on_run(run)

    # ------------------------------------------------------------------ the hot loop

    def feed(self, first_line: int, lines: list[str]) -> None:
        """Account for ``lines`` (each ending with ``"\\n"``) numbered from ``first_line``."""
        # A chunk allocates thousands of tuples and no cycles: the cyclic collector, triggered
        # by those allocations, would only rescan the survivors over and over.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if lines and PID_MARK in "".join(lines):
                self._feed_processes(first_line, lines)
            else:
                self._use_process(None)
                self._feed(first_line, lines)
        finally:
            if collecting:
                gc.enable()

    def _feed_processes(self, first_line: int, lines: list[str]) -> None:
        """A chunk of a file that several processes share: each run of consecutive lines of one
        process goes to that process's stream."""
        start, current = 0, line_pid(lines[0])
        for index in range(1, len(lines)):
            pid = line_pid(lines[index])
            if pid != current:
                self._use_process(current)
                self._feed(first_line + start, lines[start:index])
                start, current = index, pid
        self._use_process(current)
        self._feed(first_line + start, lines[start:])

    def _feed(self, first_line: int, lines: list[str]) -> None:  # noqa: PLR0912, PLR0915
        # One long function on purpose: attribute lookups and calls per line are what limit
        # throughput, so everything the loop touches is bound to a local first, comparisons
        # are written out rather than calling min() and max(), and a line below every
        # threshold (the common case) costs three comparisons for the threshold clocks.
        s = self.settings
        minute_seconds = MINUTE_SECONDS
        hour_start = self._clock.hour_start
        hour_key, hour_value, day = "", None, ""
        check, idle = _CHECK, IDLE
        since, until, only_task = self._since, self._until, s.task
        filtering = since is not None or until is not None or only_task is not None
        warning_mb = s.warning_mb
        available_min, free_min = s.available_min_mb, s.free_min_percent
        stream = self._stream
        pairer = stream.pairer
        expected, quiet, fast_key = pairer.expected, pairer.quiet, stream.fast_key
        alarm = stream.alarm
        key, best = stream.key, self._best
        best_rss = best[0] if best is not None else -math.inf
        best_number = 0  # the line of a best found in this chunk, made an entry only when needed
        file = self._file
        order_base = self._file_index << 40
        on_point, on_above, above_mb = self._on_point, self._on_above, s.above_mb
        if above_mb is None:
            on_above = None
        hooks = on_point is not None or on_above is not None
        lowest_available, lowest_free = self._lowest_available, self._lowest_free
        low_available = lowest_available.value if lowest_available else math.inf
        low_free = lowest_free.value if lowest_free else math.inf
        first, last = self._first, self._last
        # Per-line work is only list appends; sums, minimums and maximums are taken per chunk
        # by C builtins (see _add_tasks and _add_idle).
        rss_by_name: dict[str, list[float]] = {}
        idle_t: list[float] = []
        idle_rss: list[float] = []
        idle_day_starts: list[tuple[int, str]] = []  # (index in idle_t, date) at each new date
        idle_day_key = ""
        rejected = unselected = 0
        t = 0.0
        run_name: str | None = None
        run_values: list[float] = []

        rows, vms_texts = match_chunk(lines, with_vms=on_point is not None)
        floats = self._floats
        if len(floats) > FLOAT_CACHE_SIZE:
            floats.clear()

        for number, row in enumerate(rows, first_line):
            if row is None:
                rejected += 1
                self._bad_line(number, lines[number - first_line])
                continue
            stamp, marker, name, rss_text, available_text, free_text = row
            if stamp[:13] != hour_key:
                hour_key = stamp[:13]
                hour_value = hour_start(hour_key)
                day = sys.intern(hour_key[:10])
            try:  # None + seconds (no such hour) or no such "MM:SS": TypeError, KeyError
                t = hour_value + minute_seconds[stamp[14:]]  # type: ignore[operator]
            except (TypeError, KeyError):
                slow = slow_seconds(stamp) if hour_value is not None else None
                if slow is None:
                    rejected += 1
                    self._bad_line(number, lines[number - first_line])
                    continue
                t = slow
            rss = floats[rss_text]
            available = floats[available_text]
            free = floats[free_text]

            if alarm is not None:  # the previous line was beyond a threshold until now
                self._account(alarm, t)
            # The common case, nothing starts or ends (no tuple built per line, hence the noqa).
            if marker == check and (name == expected or name == quiet):  # noqa: PLR1714, SIM109
                owner = name
                line_key = fast_key
            else:
                stream.last_t = t
                # The segment's best so far stands for the lines since the last call: they all
                # ran under the same innermost run, so it is their highest RSS, or a line of
                # that same run's that is higher.
                owner = pairer.line(marker, name, t, rss, best_rss)
                expected, quiet = pairer.expected, pairer.quiet
                line_key = pairer.line_serial or name
                fast_key = pairer.serial or expected
            # A new run or plateau: the best line of the last one is a peak candidate.
            if line_key is not key:  # identity: the same object while nothing changes
                if best_number:
                    text = lines[best_number - first_line].rstrip("\n")
                    best = (best_rss, -(order_base + best_number), file, best_number, text, key)
                    best_number = 0
                self._best = best
                self._end_segment()
                key = line_key
                best = self._run_best.pop(key, None) if isinstance(key, int) else None
                best_rss = best[0] if best is not None else -math.inf
            if filtering and not (
                (since is None or stamp >= since)
                and (until is None or stamp <= until)
                and (only_task is None or only_task in (name, owner))
            ):
                unselected += 1
                alarm = None  # it ends the previous interval but stands for no time
                continue
            if t < first:  # noqa: PLR1730
                first = t
            if t > last:  # noqa: PLR1730
                last = t

            if name != run_name:  # names come in runs: one dict lookup per run
                run_name = name
                run_values = rss_by_name.setdefault(name, [])
            run_values.append(rss)

            if rss > best_rss:
                best_rss = rss
                best_number = number

            if rss > warning_mb or available < available_min or free < free_min:
                alarm = (t, rss, available, free)
                self._count_breaches(alarm)
            else:
                alarm = None
            if available < low_available:
                low_available = available
                lowest_available = _Lowest(available, t, name)
            if free < low_free:
                low_free = free
                lowest_free = _Lowest(free, t, name)

            if name == idle and marker == check:
                if day is not idle_day_key:  # identity: one (interned) string per date
                    idle_day_key = day
                    idle_day_starts.append((len(idle_t), idle_day_key))
                idle_t.append(t)
                idle_rss.append(rss)

            if hooks:
                if on_point is not None:
                    on_point(t, rss, float(vms_texts[number - first_line]), available)
                if on_above is not None and rss > above_mb:  # type: ignore[operator]
                    on_above(file, number, lines[number - first_line].rstrip("\n"))

        if best_number:
            text = lines[best_number - first_line].rstrip("\n")
            best = (best_rss, -(order_base + best_number), file, best_number, text, key)
        parsed = len(lines) - rejected
        if parsed:
            stream.last_t = t
        stream.alarm, stream.key, stream.fast_key = alarm, key, fast_key
        self._best = best
        self._total += len(lines)
        self._parsed += parsed
        self._selected += parsed - unselected
        self._first, self._last = first, last
        self._lowest_available, self._lowest_free = lowest_available, lowest_free
        self._add_tasks(rss_by_name)
        self._add_idle(idle_t, idle_rss, idle_day_starts)

    def _end_segment(self) -> None:
        """The current run or plateau gave way: keep its best line as a peak candidate (a run
        may come back after a nested one, so its best waits until the run is over)."""
        best, self._best = self._best, None
        if best is None:
            return
        key = best[5]
        if isinstance(key, int) and self._stream.pairer.is_open(key):
            self._run_best[key] = best
            if len(self._run_best) > _MAX_WAITING_RUNS:
                self._flush_runs()
            return
        self._candidate(best)

    def _flush_runs(self) -> None:
        """Runs whose best line waits and that are over now: their line is a candidate."""
        pairers = [stream.pairer for stream in self._streams()]
        for key in [k for k in self._run_best if not any(p.is_open(k) for p in pairers)]:
            self._candidate(self._run_best.pop(key))

    def _candidate(self, best: PeakEntry) -> None:
        heap, size = self._heap, self.settings.top_n + _PEAK_MARGIN
        if len(heap) < size:
            heapq.heappush(heap, best)
        elif best[:2] > heap[0][:2]:
            heapq.heapreplace(heap, best)

    def _account(self, alarm: tuple[float, float, float, float], t: float) -> None:
        """Add the time from the alarming line ``alarm`` to ``t`` to the clocks it crossed."""
        previous_t, rss, available, free = alarm
        gap = min(t - previous_t, self._cap)
        if gap <= 0.0:
            return
        s = self.settings
        if rss > s.warning_mb:
            self._warning.seconds += gap
            if rss > s.critical_mb:
                self._critical.seconds += gap
        if available < s.available_min_mb:
            self._available_low.seconds += gap
        if free < s.free_min_percent:
            self._free_low.seconds += gap

    def _count_breaches(self, alarm: tuple[float, float, float, float]) -> None:
        """Count a line beyond one or more thresholds."""
        t, rss, available, free = alarm
        s = self.settings
        if rss > s.warning_mb:
            self._warning.line(t)
            if rss > s.critical_mb:
                self._critical.line(t)
        if available < s.available_min_mb:
            self._available_low.line(t)
        if free < s.free_min_percent:
            self._free_low.line(t)

    def _add_tasks(self, rss_by_name: dict[str, list[float]]) -> None:
        """Fold one chunk's RSS values per task name into the running aggregates."""
        for name, values in rss_by_name.items():
            found = self._lines_by_task.get(name)
            if found is None:
                self._lines_by_task[name] = _Values.of(values)
            else:
                found.add(values)

    def _add_idle(
        self, times: list[float], values: list[float], day_starts: list[tuple[int, str]]
    ) -> None:
        """Fold one chunk's idle lines into the trend points and the per-day aggregates."""
        if not times:
            return
        self._idle.add(times, values)
        ends = [start for start, _ in day_starts[1:]] + [len(values)]
        for (start, day), end in zip(day_starts, ends, strict=True):
            part = values[start:end]
            found = self._idle_days.get(day)
            if found is None:
                self._idle_days[day] = _Values.of(part)
            else:
                found.add(part)

    def _bad_line(self, number: int, line: str) -> None:
        if not line.strip():
            self._blank += 1
            return
        self._malformed += 1
        if len(self._malformed_at) < _MAX_MALFORMED_SHOWN:
            self._malformed_at.append(f"{self._file}:{number}")

    # ------------------------------------------------------------------ results

    def finish(self, files: list[str]) -> Analysis:
        """Close the last stream and freeze the statistics."""
        self._end_stream()
        self._stream_key = None
        s = self.settings
        return Analysis(
            files=files,
            lines=LineCounts(
                total=self._total,
                parsed=self._parsed,
                selected=self._selected,
                blank=self._blank,
                malformed=self._malformed,
                malformed_at=list(self._malformed_at),
            ),
            first=format_seconds(self._first) if self._selected else None,
            last=format_seconds(self._last) if self._selected else None,
            settings={
                "warning_mb": s.warning_mb,
                "critical_mb": s.critical_mb,
                "system_available_min_mb": s.available_min_mb,
                "system_free_min_percent": s.free_min_percent,
                "interval_seconds": s.interval_seconds,
                "max_seconds_per_line": self._cap,
                "task": s.task,
                "since": self._since,
                "until": self._until,
            },
            peaks=self._peaks(),
            tasks=self._task_summaries(),
            rss_warning=self._warning.frozen(s.warning_mb),
            rss_critical=self._critical.frozen(s.critical_mb),
            system_available_low=self._available_low.frozen(s.available_min_mb),
            system_free_low=self._free_low.frozen(s.free_min_percent),
            lowest_available_mb=_lowest(self._lowest_available),
            lowest_free_percent=_lowest(self._lowest_free),
            idle_trend=self._idle_trend(),
            unmatched_starts=self._unmatched_starts,
            unmatched_ends=self._unmatched_ends,
        )

    def _peaks(self) -> list[Peak]:
        seen: set[object] = set()
        peaks = []
        for rss, _, file, number, text, key in sorted(self._heap, reverse=True):
            if key in seen and isinstance(key, int):  # a run seen twice around a nested one
                continue
            seen.add(key)
            marker, name = _marker_and_name(text)
            peaks.append(Peak(rss, text[:19], marker, name, file=file, line=number, text=text))
        return peaks[: self.settings.top_n]

    def _task_summaries(self) -> list[TaskSummary]:
        summaries = []
        for name in self._lines_by_task.keys() | self._runs_by_task.keys():
            lines = self._lines_by_task.get(name)
            runs = self._runs_by_task.get(name)
            summaries.append(
                TaskSummary(
                    task=name,
                    lines=lines.count if lines else 0,
                    rss_avg_mb=_round(lines.mean) if lines else None,
                    rss_min_mb=lines.low if lines else None,
                    rss_max_mb=lines.high if lines else None,
                    runs=runs.count if runs else 0,
                    delta_avg_mb=_round(runs.delta_total / runs.count) if runs else None,
                    delta_max_mb=_round(runs.delta_max) if runs else None,
                    duration_avg_seconds=_round(runs.duration_total / runs.count) if runs else None,
                    duration_max_seconds=runs.duration_max if runs else None,
                )
            )
        # Highest peak first, as the seed's script sorts; tasks seen only through runs last.
        summaries.sort(
            key=lambda t: (-(t.rss_max_mb if t.rss_max_mb is not None else -math.inf), t.task)
        )
        return summaries

    def _idle_trend(self) -> IdleTrend:
        idle = self._idle
        days = [
            DayIdle(date=d, lines=v.count, avg_mb=_round(v.mean), min_mb=v.low, max_mb=v.high)
            for d, v in sorted(self._idle_days.items())
        ]
        rising = len(days) >= 2 and all(a.avg_mb < b.avg_mb for a, b in itertools.pairwise(days))
        span = (idle.last - idle.first) / 3600.0 if idle.count else 0.0
        found = fit(*idle.points()) if idle.count >= 3 and span >= 1.0 else None
        if found is None:
            return IdleTrend(
                lines=idle.count,
                slope_mb_per_hour=None,
                r_squared=None,
                span_hours=_round(span),
                growth_mb=None,
                verdict=INSUFFICIENT,
                message=tables.trend_message(INSUFFICIENT, None, None, span, None),
                daily_averages_rising=rising,
                days=days,
            )
        slope, r_squared = found.slope_per_hour, found.r_squared
        growth = slope * span
        mean = idle.total / idle.count
        significant = abs(growth) >= max(10.0, 0.05 * mean) and r_squared >= 0.5
        verdict = (GROWING if slope > 0 else SHRINKING) if significant else STABLE
        return IdleTrend(
            lines=idle.count,
            slope_mb_per_hour=_round(slope, 3),
            r_squared=_round(r_squared, 3),
            span_hours=_round(span, 3),
            growth_mb=_round(growth),
            verdict=verdict,
            message=tables.trend_message(verdict, slope, growth, span, r_squared),
            daily_averages_rising=rising,
            days=days,
        )


def _round(value: float, digits: int = 2) -> float:
    return round(value, digits)


def _lowest(found: _Lowest | None) -> Lowest:
    return Lowest(value=None, timestamp=None, task=None) if found is None else found.frozen()


def _marker_and_name(text: str) -> tuple[str, str]:
    """``("START", "Nations Dump Download")`` for a line the hot loop already matched."""
    match = LINE_PATTERN.fullmatch(text)
    return (_MARKER_NAMES[match["marker"]], match["name"]) if match else ("", "")
