"""The analysis as titled tables of strings: ``analyze`` prints them, ``report`` renders HTML.

    for table in analysis_tables(analysis):
        print(table.title, table.headers, table.rows, table.notes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_memory.cli.schema import GROWING, INSUFFICIENT, SHRINKING, Analysis, Breach, Lowest

MAX_DAYS_SHOWN = 31
"""Idle days listed in text and HTML (the most recent); ``--json`` has them all."""


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table; ``numeric`` marks right-aligned columns; ``notes`` follow the table."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def duration(seconds: float | None) -> str:
    """``1:02:03`` (hours may exceed 24); ``-`` for none."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def mb(value: float | None) -> str:
    """A size in MB with one decimal, as the log writes it; ``-`` for none."""
    return "-" if value is None else f"{value:.1f}"


def signed_mb(value: float | None) -> str:
    """A change in MB with its sign; ``-`` for none."""
    return "-" if value is None else f"{value:+.1f}"


def trend_message(
    verdict: str,
    slope: float | None,
    growth: float | None,
    span_hours: float,
    r_squared: float | None,
) -> str:
    """The sentence that explains an idle-trend verdict (slope in MB/h, growth in MB)."""
    if verdict == INSUFFICIENT or slope is None:
        return "not enough idle lines for a trend (need 3 over at least an hour)"
    if verdict == GROWING:
        return (
            f"idle RSS keeps growing: {slope:+.2f} MB/h, {growth or 0.0:+.1f} MB over "
            f"{span_hours:.1f} h (r²={r_squared or 0.0:.2f}); it does not return to baseline: "
            "possible leak"
        )
    if verdict == SHRINKING:
        return f"idle RSS is falling: {slope:+.2f} MB/h over {span_hours:.1f} h"
    return f"idle RSS is stable: {slope:+.2f} MB/h over {span_hours:.1f} h"


def analysis_tables(analysis: Analysis) -> list[Table]:
    """Summary, peaks, tasks, thresholds, system memory and idle trend, in reading order."""
    return [
        _summary(analysis),
        _peaks(analysis),
        _tasks(analysis),
        _thresholds(analysis),
        _system(analysis),
        _idle(analysis),
    ]


def _summary(analysis: Analysis) -> Table:
    lines = analysis.lines
    rows = [
        ["files", str(len(analysis.files))],
        ["lines read", f"{lines.total:,}"],
        ["memory lines", f"{lines.parsed:,}"],
        ["lines analysed (after filters)", f"{lines.selected:,}"],
        ["malformed lines", f"{lines.malformed:,}"],
        ["first line", analysis.first or "-"],
        ["last line", analysis.last or "-"],
    ]
    notes = []
    if lines.malformed:
        shown = ", ".join(lines.malformed_at)
        more = " ..." if lines.malformed > len(lines.malformed_at) else ""
        notes.append(f"{lines.malformed:,} malformed line(s) skipped, at {shown}{more}")
    if analysis.unmatched_starts or analysis.unmatched_ends:
        notes.append(
            f"unpaired: {analysis.unmatched_starts} START without END, "
            f"{analysis.unmatched_ends} END without START"
        )
    return Table("Summary", ["", ""], rows, numeric={1}, notes=notes)


def _peaks(analysis: Analysis) -> Table:
    rows = [
        [str(rank), mb(p.rss_mb), p.timestamp, p.marker, p.task, f"{p.file}:{p.line}"]
        for rank, p in enumerate(analysis.peaks, 1)
    ]
    return Table(
        f"Top {len(analysis.peaks)} peaks by RSS (one line per task run or plateau)",
        ["#", "RSS MB", "time", "marker", "task", "where"],
        rows,
        numeric={0, 1},
    )


def _tasks(analysis: Analysis) -> Table:
    rows = [
        [
            t.task,
            str(t.lines),
            mb(t.rss_avg_mb),
            mb(t.rss_min_mb),
            mb(t.rss_max_mb),
            str(t.runs),
            signed_mb(t.delta_avg_mb),
            signed_mb(t.delta_max_mb),
            duration(t.duration_avg_seconds),
            duration(t.duration_max_seconds),
        ]
        for t in analysis.tasks
    ]
    return Table(
        "Memory by task (bracketed name; runs: START to its end, deltas under the START's task)",
        ["task", "lines", "avg MB", "min MB", "max MB", "runs", "Δ avg MB", "Δ max MB",
         "avg time", "max time"],
        rows,
        numeric=set(range(1, 10)),
    )  # fmt: skip


def _breach_row(level: str, rule: str, breach: Breach) -> list[str]:
    return [
        level,
        f"{rule} {breach.threshold:g}",
        duration(breach.seconds),
        f"{breach.lines:,}",
        breach.first or "-",
        breach.last or "-",
    ]


def _thresholds(analysis: Analysis) -> Table:
    cap = analysis.settings["max_seconds_per_line"]
    return Table(
        "Time beyond thresholds",
        ["level", "rule", "time", "lines", "first", "last"],
        [
            _breach_row("RSS warning", "RSS MB >", analysis.rss_warning),
            _breach_row("RSS critical", "RSS MB >", analysis.rss_critical),
            _breach_row("system available low", "available MB <", analysis.system_available_low),
            _breach_row("system free low", "free % <", analysis.system_free_low),
        ],
        numeric={2, 3},
        notes=[
            f"each line stands for the time until the next line of its log, at most {cap:g} s"
        ],
    )


def _lowest_row(what: str, lowest: Lowest, unit: str) -> list[str]:
    value = "-" if lowest.value is None else f"{lowest.value:.1f}{unit}"
    return [what, value, lowest.timestamp or "-", lowest.task or "-"]


def _system(analysis: Analysis) -> Table:
    return Table(
        "Lowest system memory",
        ["", "value", "time", "task"],
        [
            _lowest_row("system available", analysis.lowest_available_mb, " MB"),
            _lowest_row("system free", analysis.lowest_free_percent, " %"),
        ],
        numeric={1},
    )


def _idle(analysis: Analysis) -> Table:
    trend = analysis.idle_trend
    shown = trend.days[-MAX_DAYS_SHOWN:]
    rows = [[d.date, str(d.lines), mb(d.avg_mb), mb(d.min_mb), mb(d.max_mb)] for d in shown]
    notes = [f"verdict: {trend.verdict.upper()}: {trend.message}"]
    if len(trend.days) > len(shown):
        notes.insert(0, f"{len(trend.days) - len(shown)} earlier day(s) not shown (see --json)")
    if trend.daily_averages_rising:
        notes.append("the daily idle average rose every day")
    return Table(
        "Idle RSS trend (--- [Idle] lines)",
        ["date", "lines", "avg MB", "min MB", "max MB"],
        rows,
        numeric={1, 2, 3, 4},
        notes=notes,
    )
