"""Text to numbers, fast: log timestamps as seconds, cached float parsing, a chunk of lines
matched at once.

    from otel_memory.cli.scan import Clock, Floats, match_chunk, format_seconds

    rows, vms = match_chunk(lines, with_vms=False)   # one row per line, None when malformed
    clock, floats = Clock(), Floats()
    t = clock.seconds("2025-11-16 08:30:00")         # seconds since 1970-01-01, log-local
    rss = floats["245.3"]
    format_seconds(t)                                # "2025-11-16 08:30:00"

Lines are matched with the patterns of :mod:`otel_memory.base.logline` (a chunk at a time with
:data:`~otel_memory.base.logline.LINES_PATTERN`, line by line with ``LINE_PATTERN`` when a chunk has
a line that does not match); nothing else parses them. Every cache is bounded.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import cast

from otel_memory.base.logline import (
    LINE_PATTERN,
    LINES_PATTERN,
    LINES_PATTERN_NO_VMS,
    TIMESTAMP_FORMAT,
)

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DAY = _EPOCH.toordinal()
_HOUR_CACHE_SIZE = 4096
FLOAT_CACHE_SIZE = 1 << 15
"""Distinct numbers :class:`Floats` keeps before starting over."""

Row = tuple[str, str, str, str, str, str]
"""``(stamp, marker, name, rss, available, free)`` as text."""

MINUTE_SECONDS = {f"{m:02d}:{s:02d}": float(m * 60 + s) for m in range(60) for s in range(60)}
"""``"MM:SS"`` -> seconds into the hour; a stamp whose tail is not in here is not a time."""


def naive_seconds(moment: datetime) -> float:
    """Seconds from 1970-01-01 to a naive (log-local) datetime: the analyzer's time axis."""
    return (moment - _EPOCH).total_seconds()


def format_seconds(seconds: float) -> str:
    """A time on the analyzer's axis back in the log's timestamp format."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime(TIMESTAMP_FORMAT)


def stamp_of(moment: datetime) -> str:
    """``moment`` as the log writes it (years below 1000 zero-padded, unlike ``strftime``), so
    that stamps compare as text."""
    return moment.isoformat(sep=" ", timespec="seconds")[:19]


class Floats(dict[str, float]):
    """``float(text)`` by text: logs repeat the same few thousand numbers, and a lookup is
    several times cheaper than parsing. Clear it when it holds :data:`FLOAT_CACHE_SIZE`."""

    def __missing__(self, text: str) -> float:
        value = self[text] = float(text)
        return value


class Clock:
    """Timestamps to seconds: the start of each ``"YYYY-MM-DD HH"`` is computed once.

    The hot loop uses :meth:`hour_start` and :data:`MINUTE_SECONDS` directly (no call per
    line); :meth:`seconds` is the same thing for one stamp.
    """

    def __init__(self) -> None:
        self._hours: dict[str, float | None] = {}

    def hour_start(self, hour: str) -> float | None:
        """Seconds at the start of the hour ``"YYYY-MM-DD HH"``, or None if it is no hour."""
        cache = self._hours
        if hour in cache:
            return cache[hour]
        if len(cache) >= _HOUR_CACHE_SIZE:
            cache.clear()
        start: float | None = None
        try:
            if hour.isascii():
                hours = int(hour[11:13])
                if hours <= 23:
                    start = (date.fromisoformat(hour[:10]).toordinal() - _EPOCH_DAY) * 86400.0
                    start += hours * 3600.0
            else:  # other Unicode digits: exactly what parse_line's strptime accepts
                start = naive_seconds(datetime.strptime(hour, "%Y-%m-%d %H"))
        except ValueError:
            start = None
        cache[hour] = start
        return start

    def seconds(self, stamp: str) -> float | None:
        """A whole ``YYYY-MM-DD HH:MM:SS`` as seconds, None when it is no time."""
        start = self.hour_start(stamp[:13])
        if start is None:
            return None
        within = MINUTE_SECONDS.get(stamp[14:])
        return start + within if within is not None else slow_seconds(stamp)


def slow_seconds(stamp: str) -> float | None:
    """A whole timestamp as seconds through ``strptime`` (only for non-ASCII digits)."""
    try:
        return naive_seconds(datetime.strptime(stamp, TIMESTAMP_FORMAT))
    except ValueError:
        return None


def match_chunk(lines: list[str], with_vms: bool) -> tuple[list[Row | None], list[str]]:
    """One row per line of ``lines`` (each ending with ``"\\n"``), None for a line that is
    not a memory line; and the VMS texts when ``with_vms`` (else an empty list)."""
    # One regex pass over the whole chunk. No group can cross a "\n", so one match per line
    # means that every line matched, in order; otherwise (a malformed line, digits other than
    # ASCII) match line by line.
    text = "".join(lines)
    count = len(lines)
    if not with_vms:
        rows: list[Row | None] = LINES_PATTERN_NO_VMS.findall(text)
        if len(rows) == count:
            return rows, []
    else:
        full = LINES_PATTERN.findall(text)
        if len(full) == count:
            return [(r[0], r[1], r[2], r[3], r[5], r[6]) for r in full], [r[4] for r in full]
    del text
    fullmatch = LINE_PATTERN.fullmatch
    matches = [fullmatch(line, 0, len(line) - 1) for line in lines]
    rows = [None if m is None else cast(Row, m.group(1, 2, 3, 4, 6, 7)) for m in matches]
    vms = ["" if m is None else m["vms"] for m in matches] if with_vms else []
    return rows, vms
