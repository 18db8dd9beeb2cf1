"""The analyzer's time axis: log timestamps as seconds, and back.

    from otel_memory.cli.scan import format_seconds, naive_seconds

    t = naive_seconds(datetime(2025, 11, 16, 8, 30))   # seconds since 1970-01-01, log-local
    format_seconds(t)                                  # "2025-11-16 08:30:00"
"""

from __future__ import annotations

from datetime import datetime, timedelta

from otel_memory.logline import TIMESTAMP_FORMAT

_EPOCH = datetime(1970, 1, 1)


def naive_seconds(moment: datetime) -> float:
    """Seconds from 1970-01-01 to a naive (log-local) datetime: the analyzer's time axis."""
    return (moment - _EPOCH).total_seconds()


def format_seconds(seconds: float) -> str:
    """A time on the analyzer's axis back in the log's timestamp format."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime(TIMESTAMP_FORMAT)
