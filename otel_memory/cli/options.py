"""What ``analyze`` and ``report`` share: their input and threshold options, and the pass.

    parser = argparse.ArgumentParser()
    add_analysis_arguments(parser)
    args = parser.parse_args(["logs/", "--top", "5"])
    analysis = run_analysis(args)
    code = exit_status(args, analysis)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import TextIO

from otel_memory.base.config import load_config
from otel_memory.base.retention import log_date
from otel_memory.cli.errors import UsageError
from otel_memory.cli.pipeline import AboveSink, Analyzer, BandSink, PointSink, Settings
from otel_memory.cli.reading import iter_chunks, progress_for, resolve_inputs
from otel_memory.cli.schema import Analysis
from otel_memory.cli.taskruns import RunSink


def _moment(end_of_day: bool) -> Callable[[str], datetime]:
    """An argparse ``type`` for ISO dates and datetimes (a bare date covers the whole day)."""

    def parse(text: str) -> datetime:
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return datetime.combine(day, time.max if end_of_day else time.min)
            moment = datetime.fromisoformat(text)
            # The log is in local time: an aware datetime is converted to local, then compared.
            return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment
        except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 once shifted
            raise argparse.ArgumentTypeError(
                f"expects an ISO date or datetime between years 1 and 9999 "
                f"(e.g. 2025-11-16 or 2025-11-16T08:30), got {text!r}"
            ) from None

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expects a whole number >= 1, got {text!r}")
    return value


def _number(what: str, *, positive: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number >= 0 (> 0 when ``positive``)."""
    rule = "> 0" if positive else ">= 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"expects {what} {rule}, got {text!r}")
        return value

    return parse


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, filters and thresholds, identical for ``analyze`` and ``report``."""
    parser.add_argument(
        "inputs", nargs="+", metavar="LOG_OR_DIR_OR_GLOB",
        help="daily logs (.log or .log.gz), directories holding memory_YYYYMMDD.log files, "
        "or glob patterns",
    )  # fmt: skip
    parser.add_argument("--top", type=_positive_int, default=10, metavar="N",
                        help="how many peak lines to list (default 10)")
    parser.add_argument("--task", metavar="NAME", help="only lines of this task")
    parser.add_argument("--since", type=_moment(end_of_day=False), metavar="WHEN",
                        help="only lines at or after this ISO date or datetime")
    parser.add_argument("--until", type=_moment(end_of_day=True), metavar="WHEN",
                        help="only lines at or before this ISO date or datetime (a date: "
                        "the whole day)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML configuration for thresholds and interval (default: "
                        "OTEL_PYTHON_MEMORY_CONFIG, then built-in defaults)")
    parser.add_argument("--warning-mb", type=_number("a size in MB"), metavar="MB",
                        help="RSS warning threshold (default: config, 1000)")
    parser.add_argument("--critical-mb", type=_number("a size in MB"), metavar="MB",
                        help="RSS critical threshold (default: config, 1500)")
    parser.add_argument("--interval", type=_number("a number of seconds", positive=True),
                        metavar="SECONDS",
                        help="the monitor's interval; a line stands for at most twice this "
                        "long (default: config, 120)")
    parser.add_argument("--fail-on-breach", action="store_true",
                        help="exit with status 1 when a line crossed a threshold (RSS warning, "
                        "system available or free)")


def megabytes(text: str) -> float:
    """An argparse ``type``: a finite size in MB, >= 0."""
    return _number("a size in MB")(text)


def exit_status(args: argparse.Namespace, analysis: Analysis) -> int:
    """0, or 1 with ``--fail-on-breach`` when some selected line crossed a threshold."""
    return 1 if args.fail_on_breach and breached(analysis) else 0


def breached(analysis: Analysis) -> bool:
    """Whether any selected line was beyond a threshold."""
    return any(
        breach.lines
        for breach in (
            analysis.rss_warning,
            analysis.rss_critical,
            analysis.system_available_low,
            analysis.system_free_low,
        )
    )


def settings_from(args: argparse.Namespace, above_mb: float | None = None) -> Settings:
    """:class:`Settings` from the options, the configuration filling what is not given; the
    analysis past this point sees only these (no ``Namespace``)."""
    config = load_config(args.config)
    thresholds = config.monitor.thresholds
    warning = thresholds.rss_warning_mb if args.warning_mb is None else args.warning_mb
    critical = thresholds.rss_critical_mb if args.critical_mb is None else args.critical_mb
    interval = config.monitor.interval_seconds if args.interval is None else args.interval
    if critical < warning:
        raise UsageError(f"--critical-mb ({critical:g}) must be >= the warning level ({warning:g})")
    if interval <= 0:
        raise UsageError(f"--interval must be > 0, got {interval:g}")
    if args.since and args.until and args.since > args.until:
        raise UsageError("--since is after --until")
    return Settings(
        top_n=args.top,
        warning_mb=warning,
        critical_mb=critical,
        available_min_mb=thresholds.system_available_min_mb,
        free_min_percent=thresholds.system_free_min_percent,
        interval_seconds=interval,
        task=args.task,
        since=args.since,
        until=args.until,
        above_mb=above_mb,
    )


def run_analysis(
    args: argparse.Namespace,
    *,
    above_mb: float | None = None,
    on_point: PointSink | None = None,
    on_band: BandSink | None = None,
    on_above: AboveSink | None = None,
    on_run: RunSink | None = None,
    progress: bool = True,
    stderr: TextIO | None = None,
) -> Analysis:
    """Read every input once, streaming; raises :class:`InputError` or ``ConfigError``.

    ``on_run`` receives every :class:`~otel_memory.cli.taskruns.TaskRun` in the selection.
    """
    settings = settings_from(args, above_mb)
    files = resolve_inputs(args.inputs)
    analyzer = Analyzer(
        settings, on_point=on_point, on_band=on_band, on_above=on_above, on_run=on_run
    )
    meter = progress_for(files, stderr or sys.stderr, enabled=progress)
    try:
        for log in files:
            if _outside(log.path, settings):
                continue
            analyzer.begin_file(str(log.path), log.stream)
            on_bytes = meter.advance if meter is not None else None
            for first_line, lines in iter_chunks(log.path, on_bytes):
                analyzer.feed(first_line, lines)
    finally:
        if meter is not None:
            meter.close()
    return analyzer.finish([str(f.path) for f in files])


def _outside(path: Path, settings: Settings) -> bool:
    """Whether a daily log's date (from its name) lies wholly outside --since/--until: a daily
    log only holds lines of its own date, so it need not be read at all."""
    day = log_date(path)
    if day is None:
        return False
    if settings.since is not None and day < settings.since.date():
        return True
    return settings.until is not None and day > settings.until.date()
