"""The ``--json`` schema of ``analyze``: frozen dataclasses, :func:`dataclasses.asdict` gives it.

    analysis = run_analysis(args)
    json.dump(dataclasses.asdict(analysis), sys.stdout)

Key names and order are what scripts read: change them only on purpose, with the docs.
Sizes are MB, times are ``YYYY-MM-DD HH:MM:SS`` in the log's local time, durations seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

GROWING, SHRINKING, STABLE, INSUFFICIENT = "growing", "shrinking", "stable", "insufficient data"
"""The values of :attr:`IdleTrend.verdict`."""


@dataclass(frozen=True, slots=True)
class Peak:
    """The highest-RSS line of one task run or one plateau of lines (e.g. idle)."""

    rss_mb: float
    timestamp: str
    marker: str
    task: str
    file: str
    line: int
    text: str


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """RSS of the lines bearing one bracketed name, and the runs of that task (START to end)."""

    task: str
    lines: int
    rss_avg_mb: float | None
    rss_min_mb: float | None
    rss_max_mb: float | None
    runs: int
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
