"""The analysis, under its former name: a façade over :mod:`~otel_memory.cli.pipeline`
(the pass), :mod:`~otel_memory.cli.schema` (what it returns) and :mod:`~otel_memory.cli.scan`
(the time axis).

    from otel_memory.cli.stats import Analyzer, Settings
"""

from __future__ import annotations

from otel_memory.cli.pipeline import AboveSink, Analyzer, BandSink, PointSink, Settings
from otel_memory.cli.scan import format_seconds, naive_seconds
from otel_memory.cli.schema import (
    Analysis,
    Breach,
    DayIdle,
    IdleTrend,
    LineCounts,
    Lowest,
    Peak,
    TaskSummary,
)

__all__ = [
    "AboveSink",
    "Analysis",
    "Analyzer",
    "BandSink",
    "Breach",
    "DayIdle",
    "IdleTrend",
    "LineCounts",
    "Lowest",
    "Peak",
    "PointSink",
    "Settings",
    "TaskSummary",
    "format_seconds",
    "naive_seconds",
]
