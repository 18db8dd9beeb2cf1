"""The daily memory log's line format: one function writes it, one regex reads it back.

    >>> from otel_memory.base.logline import Marker, format_line, parse_line
    >>> line = format_line(Marker.START, "Nations Dump Download", reading)   # doctest: +SKIP
    >>> parse_line(line).rss_mb                                              # doctest: +SKIP
    245.3

A line (1 MB = 1,048,576 bytes, numbers ``%6.1f``, percent ``%.1f``)::

    2025-11-16 08:30:00 >>> TASK START [Nations Dump Download] | RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free)
"""  # noqa: E501

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from otel_memory.base.memory import MB, MemoryReading

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
FILE_DATE_FORMAT = "%Y%m%d"
IDLE = "Idle"
"""The name a periodic line gives when no task is open."""


class Marker(str, Enum):
    """What a line records; the value is the text that opens the line after the timestamp."""

    START = ">>> TASK START"
    END = "<<< TASK END"
    CHECK = "---"

    @property
    def short(self) -> str:
        """``START``, ``END`` or ``CHECK``: the structured form sent with OTel log records."""
        return self.name


# Characters that would break a line apart (those str.splitlines splits on) become spaces, and
# the closing bracket becomes a parenthesis, so the bracketed name always parses back.
_UNSAFE_NAME_CHARS = str.maketrans(
    {c: " " for c in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"} | {"]": ")"}
)


def sanitize_name(name: str) -> str:
    """The name as it may stand inside ``[...]``: no line breaks, no ``]``."""
    return name.translate(_UNSAFE_NAME_CHARS)


def format_message(marker: Marker, name: str, reading: MemoryReading) -> str:
    """The line without its timestamp: marker, bracketed name and the four numbers."""
    head = _cached_head(marker, name) if len(name) <= _CACHED_NAME_LENGTH else _head(marker, name)
    return (
        f"{head}{reading.rss / MB:6.1f}"
        f"{_tail(reading.vms, reading.system_available, reading.free_ratio)}"
    )


# The events thread formats two lines per task. Only the RSS changes from line to line in a
# burst: the name repeats, VMS rarely moves and the system side is a reading reused for 10 ms
# (readings.PsutilReadingSource), so those parts are formatted once and looked up after.
# Long names are not kept (the cache stays well under a megabyte).
_CACHED_NAME_LENGTH = 200


def _head(marker: Marker, name: str) -> str:
    return f"{marker.value} [{sanitize_name(name)}] | RSS: "


_cached_head = functools.lru_cache(maxsize=1024)(_head)


@functools.lru_cache(maxsize=64)
def _tail(vms: int, system_available: int, free_ratio: float) -> str:
    return (
        f" MB | VMS: {vms / MB:6.1f} MB | System Available: {system_available / MB:6.1f} MB"
        f" ({free_ratio * 100:.1f}% free)"
    )


@functools.lru_cache(maxsize=4)
def _format_second(second: int) -> str:
    return time.strftime(TIMESTAMP_FORMAT, time.localtime(second))


def format_timestamp(timestamp: float) -> str:
    """Local time of ``timestamp`` as the line shows it (cached: lines come in bursts)."""
    return _format_second(int(timestamp))


def pid_suffix(pid: int) -> str:
    """What ends every line of process ``pid`` when several processes share the daily file."""
    return f"{PID_MARK}{pid}"


def line_pid(line: str) -> int | None:
    """The pid a line ends with (several processes share the file), else None."""
    at = line.rfind(PID_MARK)
    if at < 0:
        return None
    tail = line[at + len(PID_MARK) :].rstrip("\r\n")
    return int(tail) if tail.isascii() and tail.isdigit() else None


def format_line(marker: Marker, name: str, reading: MemoryReading) -> str:
    """The whole line (no trailing newline), stamped with the reading's local time."""
    return f"{format_timestamp(reading.timestamp)} {format_message(marker, name, reading)}"


@functools.lru_cache(maxsize=4)
def _file_name_of_second(second: int) -> str:
    return f"memory_{time.strftime(FILE_DATE_FORMAT, time.localtime(second))}.log"


def log_file_name(timestamp: float) -> str:
    """``memory_YYYYMMDD.log`` for the local date of ``timestamp`` (cached per second)."""
    return _file_name_of_second(int(timestamp))


_LINE_SOURCE = (
    r"(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) "
    r"(?P<marker>>>> TASK START|<<< TASK END|---) "
    r"\[(?P<name>[^\]\r\n]*)\] "
    r"\| RSS: *(?P<rss>\d+\.\d) MB "
    r"\| VMS: *(?P<vms>\d+\.\d) MB "
    r"\| System Available: *(?P<available>\d+\.\d) MB "
    r"\((?P<free>\d+\.\d)% free\)"
    r"(?: \| PID: \d+)?"
)

PID_MARK = " | PID: "
"""What a line of a process that shares the daily file ends with, before its pid (a process
alone writes none: its lines are the SPEC's, byte for byte)."""

LINE_PATTERN = re.compile(
    _LINE_SOURCE.replace(r"(?: \| PID: \d+)?", r"(?: \| PID: (?P<pid>\d+))?")
)
"""Matches one whole line (use ``fullmatch``); every group is named."""

LINES_PATTERN = re.compile(r"^" + _LINE_SOURCE + r"$", re.MULTILINE | re.ASCII)
"""The same format, anchored per line of a text of many ``"\\n"``-terminated lines (use
``findall``): no group can cross a ``"\\n"``, so a text whose lines all match has exactly one
match per line, in order. Digits are ASCII only (faster): a line this rejects may still be one
that :data:`LINE_PATTERN` accepts (other Unicode digits), never the other way round, and the
groups of a line both accept are the same."""

LINES_PATTERN_NO_VMS = re.compile(
    r"^" + _LINE_SOURCE.replace("(?P<vms>", "(?:") + r"$", re.MULTILINE | re.ASCII
)
""":data:`LINES_PATTERN` without the ``vms`` group (one string fewer per line)."""

_MARKERS = {m.value: m for m in Marker}


@dataclass(frozen=True, slots=True)
class LogLine:
    """One parsed line of the daily memory log (sizes in MB, as written)."""

    timestamp: datetime
    marker: Marker
    name: str
    rss_mb: float
    vms_mb: float
    available_mb: float
    free_percent: float
    pid: int | None = None
    """The process that wrote the line, when several processes share the file."""


def parse_line(line: str) -> LogLine | None:
    """Parse one line (a trailing newline is allowed); ``None`` when it is not a memory line."""
    match = LINE_PATTERN.fullmatch(line.rstrip("\r\n"))
    if match is None:
        return None
    try:
        timestamp = datetime.strptime(match["timestamp"], TIMESTAMP_FORMAT)
    except ValueError:  # shaped like a date but not one, e.g. month 13
        return None
    return LogLine(
        timestamp=timestamp,
        marker=_MARKERS[match["marker"]],
        name=match["name"],
        rss_mb=float(match["rss"]),
        vms_mb=float(match["vms"]),
        available_mb=float(match["available"]),
        free_percent=float(match["free"]),
        pid=int(match["pid"]) if match["pid"] is not None else None,
    )
