"""One streaming pass over daily-log lines into bounded statistics (what ``analyze`` prints).

    from otel_memory.cli.stats import Analyzer, Settings

    analyzer = Analyzer(Settings(top_n=10))
    analyzer.begin_file("logs/memory_20251116.log", stream="logs")
    analyzer.feed(1, lines)               # lines ending with "\\n", numbered from 1
    analysis = analyzer.finish(["logs/memory_20251116.log"])

Lines are matched with the patterns of :mod:`otel_memory.logline` (a chunk at a time with
:data:`~otel_memory.logline.LINES_PATTERN`, line by line with ``LINE_PATTERN`` when a chunk has a
line that does not match); nothing else parses them.
State stays bounded whatever the input size: a top-N heap, one aggregate per task name, one
per day of idle lines, running least-squares sums, a short stack of open STARTs.

How the numbers are defined:

* **time above a threshold**: a line stands for the interval until the next line of the same
  stream (a directory's daily logs in date order), capped at twice ``interval_seconds`` so that a
  stopped process does not count as hours at its last level; the last line of a stream stands
  for nothing. "Above" is strictly greater (RSS), "below" strictly less (system memory).
* **START/END pairs**: an END line's brackets hold a *label* ("Nations Dump Complete"), not the
  task name, so an END closes the most recent open START whose name equals the label (what
  ``clear_active_task()`` writes without a label) or else the most recent open START (a stack:
  nested tasks end innermost first). Interleaved tasks from concurrent threads that end with
  labels can be mis-paired; the log has nothing to tell them apart.
* **idle trend**: least-squares slope of RSS over time across the ``--- [Idle]`` lines of all
  inputs (MB per hour), with r².
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from otel_memory.logline import (
    IDLE,
    LINE_PATTERN,
    LINES_PATTERN,
    LINES_PATTERN_NO_VMS,
    TIMESTAMP_FORMAT,
    Marker,
)

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DAY = _EPOCH.toordinal()
_START, _END, _CHECK = Marker.START.value, Marker.END.value, Marker.CHECK.value
_MARKER_NAMES = {m.value: m.name for m in Marker}
_MAX_OPEN_TASKS = 256
_MAX_MALFORMED_SHOWN = 5
_HOUR_CACHE_SIZE = 4096
_FLOAT_CACHE_SIZE = 1 << 15


def naive_seconds(moment: datetime) -> float:
    """Seconds from 1970-01-01 to a naive (log-local) datetime: the analyzer's time axis."""
    return (moment - _EPOCH).total_seconds()


def format_seconds(seconds: float) -> str:
    """A time on the analyzer's axis back in the log's timestamp format."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime(TIMESTAMP_FORMAT)


@dataclass(frozen=True, slots=True)
class Settings:
    """What to compute and over which lines.

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


@dataclass(frozen=True, slots=True)
class Peak:
    """One of the highest-RSS lines."""

    rss_mb: float
    timestamp: str
    marker: str
    task: str
    file: str
    line: int
    text: str


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """RSS of the lines bearing one bracketed name, and START→END deltas of that task."""

    task: str
    lines: int
    rss_avg_mb: float | None
    rss_min_mb: float | None
    rss_max_mb: float | None
    pairs: int
    delta_avg_mb: float | None
    delta_max_mb: float | None
    duration_avg_seconds: float | None
    duration_max_seconds: float | None


@dataclass(frozen=True, slots=True)
class Breach:
    """Time and lines beyond one threshold."""

    threshold: float
    seconds: float
    lines: int
    first: str | None
    last: str | None


@dataclass(frozen=True, slots=True)
class Lowest:
    """The lowest value of a system figure and when it was seen."""

    value: float | None
    timestamp: str | None
    task: str | None


@dataclass(frozen=True, slots=True)
class DayIdle:
    """Idle RSS of one day."""

    date: str
    lines: int
    avg_mb: float
    min_mb: float
    max_mb: float


@dataclass(frozen=True, slots=True)
class IdleTrend:
    """Least-squares trend of idle RSS and the verdict drawn from it."""

    lines: int
    slope_mb_per_hour: float | None
    r_squared: float | None
    span_hours: float
    growth_mb: float | None
    verdict: str
    message: str
    daily_averages_rising: bool
    days: list[DayIdle]


@dataclass(frozen=True, slots=True)
class LineCounts:
    """How many lines were read and what became of them."""

    total: int
    parsed: int
    selected: int
    blank: int
    malformed: int
    malformed_at: list[str]


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything ``analyze`` reports; :func:`dataclasses.asdict` gives the JSON form."""

    files: list[str]
    lines: LineCounts
    first: str | None
    last: str | None
    settings: dict[str, float | str | None]
    peaks: list[Peak]
    tasks: list[TaskSummary]
    rss_warning: Breach
    rss_critical: Breach
    system_available_low: Breach
    system_free_low: Breach
    lowest_available_mb: Lowest
    lowest_free_percent: Lowest
    idle_trend: IdleTrend
    unmatched_starts: int
    unmatched_ends: int


@dataclass(slots=True)
class _Breach:
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
class _Stream:
    """What carries from one line to the next within a stream."""

    # The previous selected line (t, rss, available, free) when it was beyond a threshold: it
    # stands for the time until the next line. None when it was not, or was not selected.
    alarm: tuple[float, float, float, float] | None = None
    open_tasks: list[tuple[str, float, float]] = field(default_factory=list)  # name, t, rss
    last_t: float | None = None


BandSink = Callable[[str, float, float], None]
PointSink = Callable[[float, float, float, float], None]
AboveSink = Callable[[str, int, str], None]

# "MM:SS" -> seconds into the hour; a stamp whose tail is not in here is not a time.
_MINUTE_SECONDS = {f"{m:02d}:{s:02d}": float(m * 60 + s) for m in range(60) for s in range(60)}


class _Floats(dict[str, float]):
    """``float(text)`` by text: logs repeat the same few thousand numbers, and a lookup is
    several times cheaper than parsing."""

    def __missing__(self, text: str) -> float:
        value = self[text] = float(text)
        return value


class Analyzer:
    """Feed it chunks of lines file by file; :meth:`finish` gives the :class:`Analysis`.

    ``on_point(t, rss, vms, available)`` and ``on_band(task, start, end)`` receive every
    selected line and every START..END interval (for charts); ``on_above(file, line, text)``
    every selected line above ``settings.above_mb``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        on_point: PointSink | None = None,
        on_band: BandSink | None = None,
        on_above: AboveSink | None = None,
    ) -> None:
        self.settings = s = settings or Settings()
        self._on_point = on_point
        self._on_band = on_band
        self._on_above = on_above
        self._since = None if s.since is None else s.since.strftime(TIMESTAMP_FORMAT)
        self._until = None if s.until is None else s.until.strftime(TIMESTAMP_FORMAT)
        self._cap = 2.0 * s.interval_seconds
        self._hour_cache: dict[str, float | None] = {}
        self._floats = _Floats()
        self._stream_key: str | None = None
        self._stream = _Stream()
        self._file = ""
        self._file_index = -1
        # Counters and aggregates.
        self._total = self._parsed = self._selected = self._blank = self._malformed = 0
        self._malformed_at: list[str] = []
        self._first, self._last = math.inf, -math.inf
        self._heap: list[tuple[float, int, str, int, str]] = []
        self._tasks: dict[str, list[float]] = {}  # name -> [lines, sum, min, max]
        self._pairs: dict[str, list[float]] = {}  # name -> [pairs, sum Δ, max Δ, sum s, max s]
        self._warning, self._critical = _Breach(), _Breach()
        self._available_low, self._free_low = _Breach(), _Breach()
        self._lowest_available: tuple[float, float, str] | None = None
        self._lowest_free: tuple[float, float, str] | None = None
        self._idle_origin: float | None = None
        self._idle_sums = [0.0] * 6  # n, Σx, Σy, Σx², Σxy, Σy² (x: hours since the origin)
        self._idle_x_range = [math.inf, -math.inf]
        self._idle_days: dict[str, list[float]] = {}  # date -> [lines, sum, min, max]
        self._unmatched_starts = self._unmatched_ends = 0

    # ------------------------------------------------------------------ streams and files

    def begin_file(self, file: str, stream: str) -> None:
        """Start a file; files of the same ``stream`` continue each other (in date order)."""
        if stream != self._stream_key:
            self._end_stream()
            self._stream_key = stream
        self._file = file
        self._file_index += 1

    def _end_stream(self) -> None:
        stream = self._stream
        if stream.open_tasks and self._on_band is not None and stream.last_t is not None:
            for name, started, _ in stream.open_tasks:
                if self.settings.task is None or name == self.settings.task:
                    self._on_band(name, started, stream.last_t)
        self._unmatched_starts += len(stream.open_tasks)
        self._stream = _Stream()

    # ------------------------------------------------------------------ the hot loop

    def _hour_start(self, stamp: str) -> float | None:
        """Seconds at the start of the hour ``"YYYY-MM-DD HH"``, or None if it is no hour."""
        cache = self._hour_cache
        if stamp in cache:
            return cache[stamp]
        if len(cache) >= _HOUR_CACHE_SIZE:
            cache.clear()
        start: float | None = None
        try:
            if stamp.isascii():
                hour = int(stamp[11:13])
                if hour <= 23:
                    start = (date.fromisoformat(stamp[:10]).toordinal() - _EPOCH_DAY) * 86400.0
                    start += hour * 3600.0
            else:  # other Unicode digits: exactly what parse_line's strptime accepts
                start = naive_seconds(datetime.strptime(stamp, "%Y-%m-%d %H"))
        except ValueError:
            start = None
        cache[stamp] = start
        return start

    @staticmethod
    def _seconds_of(stamp: str) -> float | None:
        """A whole timestamp as seconds, the slow way (only for non-ASCII digits)."""
        try:
            return naive_seconds(datetime.strptime(stamp, TIMESTAMP_FORMAT))
        except ValueError:
            return None

    def feed(self, first_line: int, lines: list[str]) -> None:
        """Account for ``lines`` (each ending with ``"\\n"``) numbered from ``first_line``."""
        # A chunk allocates thousands of tuples and no cycles: the cyclic collector, triggered
        # by those allocations, would only rescan the survivors over and over.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._feed(first_line, lines)
        finally:
            if collecting:
                gc.enable()

    def _feed(self, first_line: int, lines: list[str]) -> None:  # noqa: PLR0912, PLR0915
        # One long function on purpose: attribute lookups and calls per line are what limit
        # throughput, so everything the loop touches is bound to a local first, comparisons
        # are written out rather than calling min() and max(), and a line below every
        # threshold (the common case) costs three comparisons for the threshold clocks.
        s = self.settings
        fullmatch = LINE_PATTERN.fullmatch
        minute_seconds = _MINUTE_SECONDS
        hour_start = self._hour_start
        hour_key, hour_value = "", None
        check, idle = _CHECK, IDLE
        since, until, only_task = self._since, self._until, s.task
        filtering = since is not None or until is not None or only_task is not None
        warning_mb = s.warning_mb
        available_min, free_min = s.available_min_mb, s.free_min_percent
        heap, top_n = self._heap, s.top_n
        heap_floor = heap[0][0] if len(heap) >= top_n else -1.0
        rss_by_name: dict[str, list[float]] = {}
        stream = self._stream
        alarm = stream.alarm
        on_point, on_above, above_mb = self._on_point, self._on_above, s.above_mb
        if above_mb is None:
            on_above = None
        hooks = on_point is not None or on_above is not None
        order_base = self._file_index << 40
        lowest_available, lowest_free = self._lowest_available, self._lowest_free
        low_available = lowest_available[0] if lowest_available else math.inf
        low_free = lowest_free[0] if lowest_free else math.inf
        first, last = self._first, self._last
        # Per-line work is only list appends; sums, minimums and maximums are taken per chunk
        # by C builtins (see _add_tasks and _add_idle).
        idle_t: list[float] = []
        idle_rss: list[float] = []
        idle_day_starts: list[tuple[int, str]] = []  # (index in idle_t, date) at each new date
        idle_day_key = ""
        rejected = unselected = 0
        t = 0.0
        run_name: str | None = None
        run_values: list[float] = []

        # One regex pass over the whole chunk. No group can cross a "\n", so one match per
        # line means that every line matched, in order; otherwise (a malformed line, digits
        # other than ASCII) match line by line, and a line that does not match is None. A row
        # is (stamp, marker, name, rss, available, free); VMS, only for on_point, is apart.
        text = "".join(lines)
        count = len(lines)
        rows: list[tuple[str, ...] | None] | None = None
        vms_texts: list[str] = []
        if on_point is None:
            rows = LINES_PATTERN_NO_VMS.findall(text)
            if len(rows) != count:
                rows = None
        else:
            full = LINES_PATTERN.findall(text)
            if len(full) == count:
                rows = [(r[0], r[1], r[2], r[3], r[5], r[6]) for r in full]
                vms_texts = [r[4] for r in full]
        if rows is None:
            matches = [fullmatch(line, 0, len(line) - 1) for line in lines]
            rows = [None if m is None else m.group(1, 2, 3, 4, 6, 7) for m in matches]
            vms_texts = ["" if m is None else m["vms"] for m in matches]
        del text
        floats = self._floats
        if len(floats) > _FLOAT_CACHE_SIZE:
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
            try:  # None + seconds (no such hour) or no such "MM:SS": TypeError, KeyError
                t = hour_value + minute_seconds[stamp[14:]]  # type: ignore[operator]
            except (TypeError, KeyError):
                slow = self._seconds_of(stamp) if hour_value is not None else None
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
            owner = name
            if marker != check:
                owner = self._start_or_end(marker, name, t, rss, stamp)
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

            if rss > heap_floor:
                text = lines[number - first_line].rstrip("\n")
                entry = (rss, -(order_base + number), self._file, number, text)
                if len(heap) < top_n:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)
                if len(heap) >= top_n:
                    heap_floor = heap[0][0]

            if rss > warning_mb or available < available_min or free < free_min:
                alarm = (t, rss, available, free)
                self._count_breaches(alarm)
            else:
                alarm = None
            if available < low_available:
                low_available = available
                lowest_available = (available, t, name)
            if free < low_free:
                low_free = free
                lowest_free = (free, t, name)

            if name == idle and marker == check:
                if stamp[:10] != idle_day_key:
                    idle_day_key = stamp[:10]
                    idle_day_starts.append((len(idle_t), idle_day_key))
                idle_t.append(t)
                idle_rss.append(rss)

            if hooks:
                if on_point is not None:
                    on_point(t, rss, float(vms_texts[number - first_line]), available)
                if on_above is not None and rss > above_mb:  # type: ignore[operator]
                    on_above(self._file, number, lines[number - first_line].rstrip("\n"))

        parsed = len(lines) - rejected
        if parsed:
            stream.last_t = t
        stream.alarm = alarm
        self._total += len(lines)
        self._parsed += parsed
        self._selected += parsed - unselected
        self._first, self._last = first, last
        self._lowest_available, self._lowest_free = lowest_available, lowest_free
        self._add_tasks(rss_by_name)
        self._add_idle(idle_t, idle_rss, idle_day_starts)

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
            low, high = min(values), max(values)
            aggregate = self._tasks.get(name)
            if aggregate is None:
                self._tasks[name] = [len(values), math.fsum(values), low, high]
            else:
                aggregate[0] += len(values)
                aggregate[1] += math.fsum(values)
                aggregate[2] = min(aggregate[2], low)
                aggregate[3] = max(aggregate[3], high)

    def _add_idle(
        self, times: list[float], values: list[float], day_starts: list[tuple[int, str]]
    ) -> None:
        """Fold one chunk's idle lines into the least-squares sums and the per-day aggregates."""
        if not times:
            return
        if self._idle_origin is None:
            self._idle_origin = times[0]
        origin = self._idle_origin
        hours = [(t - origin) / 3600.0 for t in times]
        sums = self._idle_sums
        sums[0] += len(hours)
        sums[1] += math.fsum(hours)
        sums[2] += math.fsum(values)
        sums[3] += math.fsum(map(operator.mul, hours, hours))
        sums[4] += math.fsum(map(operator.mul, hours, values))
        sums[5] += math.fsum(map(operator.mul, values, values))
        x_range = self._idle_x_range
        x_range[0] = min(x_range[0], *hours)
        x_range[1] = max(x_range[1], *hours)
        ends = [start for start, _ in day_starts[1:]] + [len(values)]
        for (start, day), end in zip(day_starts, ends, strict=True):
            part = values[start:end]
            aggregate = self._idle_days.get(day)
            if aggregate is None:
                self._idle_days[day] = [len(part), math.fsum(part), min(part), max(part)]
            else:
                aggregate[0] += len(part)
                aggregate[1] += math.fsum(part)
                aggregate[2] = min(aggregate[2], *part)
                aggregate[3] = max(aggregate[3], *part)

    def _bad_line(self, number: int, line: str) -> None:
        if not line.strip():
            self._blank += 1
            return
        self._malformed += 1
        if len(self._malformed_at) < _MAX_MALFORMED_SHOWN:
            self._malformed_at.append(f"{self._file}:{number}")

    def _start_or_end(self, marker: str, name: str, t: float, rss: float, stamp: str) -> str:
        """Push a START, or pair an END with its START; the task the line belongs to."""
        open_tasks = self._stream.open_tasks
        if marker == _START:
            if len(open_tasks) >= _MAX_OPEN_TASKS:  # STARTs that never ended: forget the oldest
                del open_tasks[0]
                self._unmatched_starts += 1
            open_tasks.append((name, t, rss))
            return name
        for index in range(len(open_tasks) - 1, -1, -1):
            if open_tasks[index][0] == name:
                break
        else:
            index = len(open_tasks) - 1
        if index < 0:
            self._unmatched_ends += 1
            return name
        task, started, start_rss = open_tasks.pop(index)
        s = self.settings
        in_range = (self._since is None or stamp >= self._since) and (
            self._until is None or stamp <= self._until
        )
        if in_range and (s.task is None or task == s.task):
            delta, duration = rss - start_rss, max(0.0, t - started)
            pairs = self._pairs.get(task)
            if pairs is None:
                self._pairs[task] = [1, delta, delta, duration, duration]
            else:
                pairs[0] += 1
                pairs[1] += delta
                pairs[2] = max(pairs[2], delta)
                pairs[3] += duration
                pairs[4] = max(pairs[4], duration)
            if self._on_band is not None:
                self._on_band(task, started, t)
        return task

    # ------------------------------------------------------------------ results

    def finish(self, files: list[str]) -> Analysis:
        """Close the last stream and freeze the statistics."""
        self._end_stream()
        self._stream_key = None
        s = self.settings
        peaks = [
            Peak(rss, text[:19], *_marker_and_name(text), file=file, line=number, text=text)
            for rss, _, file, number, text in sorted(self._heap, reverse=True)
        ]
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
            peaks=peaks,
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

    def _task_summaries(self) -> list[TaskSummary]:
        summaries = []
        for name in self._tasks.keys() | self._pairs.keys():
            lines = self._tasks.get(name)
            pairs = self._pairs.get(name)
            summaries.append(
                TaskSummary(
                    task=name,
                    lines=int(lines[0]) if lines else 0,
                    rss_avg_mb=_round(lines[1] / lines[0]) if lines else None,
                    rss_min_mb=lines[2] if lines else None,
                    rss_max_mb=lines[3] if lines else None,
                    pairs=int(pairs[0]) if pairs else 0,
                    delta_avg_mb=_round(pairs[1] / pairs[0]) if pairs else None,
                    delta_max_mb=_round(pairs[2]) if pairs else None,
                    duration_avg_seconds=_round(pairs[3] / pairs[0]) if pairs else None,
                    duration_max_seconds=pairs[4] if pairs else None,
                )
            )
        # Highest peak first, as the seed's script sorts; tasks seen only through pairs last.
        summaries.sort(
            key=lambda t: (-(t.rss_max_mb if t.rss_max_mb is not None else -math.inf), t.task)
        )
        return summaries

    def _idle_trend(self) -> IdleTrend:
        n, sx, sy, sxx, sxy, syy = self._idle_sums
        days = [
            DayIdle(date=d, lines=int(v[0]), avg_mb=_round(v[1] / v[0]), min_mb=v[2], max_mb=v[3])
            for d, v in sorted(self._idle_days.items())
        ]
        rising = len(days) >= 2 and all(a.avg_mb < b.avg_mb for a, b in itertools.pairwise(days))
        low, high = self._idle_x_range
        span = high - low if n else 0.0
        variance_x = n * sxx - sx * sx
        if n < 3 or span < 1.0 or variance_x <= 0:
            return IdleTrend(
                lines=int(n),
                slope_mb_per_hour=None,
                r_squared=None,
                span_hours=_round(span),
                growth_mb=None,
                verdict="insufficient data",
                message="not enough idle lines for a trend (need 3 over at least an hour)",
                daily_averages_rising=rising,
                days=days,
            )
        slope = (n * sxy - sx * sy) / variance_x
        variance_y = n * syy - sy * sy
        r_squared = (n * sxy - sx * sy) ** 2 / (variance_x * variance_y) if variance_y > 0 else 0.0
        growth = slope * span
        mean = sy / n
        significant = abs(growth) >= max(10.0, 0.05 * mean) and r_squared >= 0.5
        if significant and slope > 0:
            verdict = "growing"
            message = (
                f"idle RSS keeps growing: {slope:+.2f} MB/h, {growth:+.1f} MB over "
                f"{span:.1f} h (r²={r_squared:.2f}); it does not return to baseline: "
                "possible leak"
            )
        elif significant:
            verdict = "shrinking"
            message = f"idle RSS is falling: {slope:+.2f} MB/h over {span:.1f} h"
        else:
            verdict = "stable"
            message = f"idle RSS is stable: {slope:+.2f} MB/h over {span:.1f} h"
        return IdleTrend(
            lines=int(n),
            slope_mb_per_hour=_round(slope, 3),
            r_squared=_round(min(1.0, r_squared), 3),
            span_hours=_round(span, 3),
            growth_mb=_round(growth),
            verdict=verdict,
            message=message,
            daily_averages_rising=rising,
            days=days,
        )


def _round(value: float, digits: int = 2) -> float:
    return round(value, digits)


def _lowest(found: tuple[float, float, str] | None) -> Lowest:
    if found is None:
        return Lowest(value=None, timestamp=None, task=None)
    return Lowest(value=found[0], timestamp=format_seconds(found[1]), task=found[2])


def _marker_and_name(text: str) -> tuple[str, str]:
    """``("START", "Nations Dump Download")`` for a line the hot loop already matched."""
    match = LINE_PATTERN.fullmatch(text)
    return (_MARKER_NAMES[match["marker"]], match["name"]) if match else ("", "")
