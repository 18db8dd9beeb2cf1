"""Daily logs shaped like real runs, for the report tests: one of 16 seconds, one of 3 days."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

from test_cli_analyze import line, write_log

START = datetime(2025, 11, 16, 0, 0, 0)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def short_log(directory: Path) -> Path:
    """One task of 16 seconds, a line every 2 seconds (``interval_seconds: 2``)."""
    t0 = START.replace(hour=8, minute=30)
    lines = [line(_stamp(t0), ">>>", "Nations Dump Download", 245.3, 1024.5)]
    for second in range(2, 16, 2):
        rss = 245.3 + 22 * second + (300 if second == 10 else 0)
        lines.append(
            line(
                _stamp(t0 + timedelta(seconds=second)),
                "---",
                "Nations Dump Download",
                rss,
                1024.5 - rss / 2,
            )
        )
    lines.append(
        line(_stamp(t0 + timedelta(seconds=16)), "<<<", "Nations Dump Complete", 289.1, 990.0)
    )
    return write_log(directory / "memory_20251116.log", lines)


def three_day_log(directory: Path) -> list[Path]:
    """Three daily logs: idle lines every 120 s with a slow leak, a 4-minute nightly dump in
    the legacy two-sets/one-clear shape every 6 hours, a 6-second cache refresh every 30
    minutes (a hairline at this scale) and one spike."""
    by_day: dict[str, list[str]] = {}

    def emit(moment: datetime, marker: str, name: str, rss: float, available: float) -> None:
        by_day.setdefault(moment.strftime("%Y%m%d"), []).append(
            line(_stamp(moment), marker, name, rss, available)
        )

    minutes = 3 * 24 * 60
    for minute in range(0, minutes, 2):
        moment = START + timedelta(minutes=minute)
        idle = 230 + minute * 0.004 + 6 * math.sin(minute / 97)
        if minute % 360 == 60:  # the dump: Download, then Processing replaces it, one clear
            emit(moment, ">>>", "Nations Dump Download", idle, 1040)
            emit(moment + timedelta(seconds=60), "---", "Nations Dump Download", idle + 40, 1000)
            emit(moment + timedelta(seconds=90), ">>>", "Nations Dump Processing", idle + 45, 995)
            peak = 900.0 if minute == 60 + 360 * 5 else idle + 380
            emit(moment + timedelta(seconds=180), "---", "Nations Dump Processing", peak, 700)
            emit(moment + timedelta(seconds=239), "<<<", "Nations Dump Complete", idle + 30, 1010)
            continue
        if minute % 30 == 14:
            emit(moment, ">>>", "Cache Refresh", idle, 1040)
            emit(moment + timedelta(seconds=6), "<<<", "Cache Refresh", idle + 12, 1030)
            continue
        emit(moment, "---", "Idle", idle, 1040 - minute * 0.01)
    return [write_log(directory / f"memory_{day}.log", lines) for day, lines in by_day.items()]
