"""The log bridge: memory events leave as OpenTelemetry log records (SPEC: Events).

    sink = OTelLogSink(mode="events")               # the global logger provider
    sink = OTelLogSink(mode="all", logger_provider=provider)

Built on the Logs Bridge API (``opentelemetry._logs``). ``export_logs`` decides what leaves:
``events`` (``---`` lines and the named events), ``all`` (also every START and END line, inside
the task span's context so the record carries its trace and span ids) or ``none`` (no sink).
A line keeps its daily-log text as the body and its reading as structured attributes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from opentelemetry import _logs, trace
from opentelemetry._logs import LoggerProvider, SeverityNumber

from otel_memory.activity.events import Event, LineEvent, Notice
from otel_memory.base import attributes as attr
from otel_memory.base.config import ExportLogs
from otel_memory.base.logline import Marker, format_line
from otel_memory.base.version import __version__

_SHORT = {marker: marker.short for marker in Marker}  # Enum properties cost a call per line


def severity(levelno: int) -> SeverityNumber:
    """Python level to OTel severity (the four base levels; finer levels round down)."""
    if levelno >= logging.CRITICAL:
        return SeverityNumber.FATAL
    if levelno >= logging.ERROR:
        return SeverityNumber.ERROR
    if levelno >= logging.WARNING:
        return SeverityNumber.WARN
    if levelno >= logging.INFO:
        return SeverityNumber.INFO
    return SeverityNumber.DEBUG


class OTelLogSink:
    """The event pipeline's sink for OTLP logs.

    Args:
        mode: :attr:`ExportLogs.EVENTS` or :attr:`ExportLogs.ALL` (see the module docstring).
        logger_provider: defaults to the global provider (followed once it is set).
    """

    def __init__(
        self, mode: ExportLogs = ExportLogs.EVENTS, logger_provider: LoggerProvider | None = None
    ) -> None:
        self.mode = mode
        self.droppable = mode is ExportLogs.ALL
        """Every task line makes a record: under overload those may drop (counted)."""
        self._logger = _logs.get_logger("otel_memory", __version__, logger_provider=logger_provider)

    def write(self, batch: Sequence[Event]) -> None:
        """Emit one record per exported event."""
        every_line = self.mode is ExportLogs.ALL
        observed = time.time_ns()
        for event in batch:
            if isinstance(event, Notice):
                self._logger.emit(
                    timestamp=int(event.timestamp * 1e9),
                    observed_timestamp=observed,
                    severity_number=severity(event.level),
                    severity_text=logging.getLevelName(event.level),
                    body=event.body,
                    attributes=event.attributes,
                    event_name=event.event_name,
                )
            elif isinstance(event, LineEvent) and (every_line or event.marker is Marker.CHECK):
                self._emit_line(event, observed)

    def _emit_line(self, event: LineEvent, observed: int) -> None:
        marker, name, reading, span, _ = event
        context = None
        if span is not None and marker is not Marker.CHECK:
            context = trace.set_span_in_context(span)
        self._logger.emit(
            timestamp=int(reading.timestamp * 1e9),
            observed_timestamp=observed,
            context=context,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=format_line(marker, name, reading),
            attributes={
                attr.LOG_MARKER: _SHORT[marker],
                attr.LOG_TASK_NAME: name,
                attr.LOG_RSS: reading.rss,
                attr.LOG_VMS: reading.vms,
                attr.LOG_SYSTEM_AVAILABLE: reading.system_available,
                attr.LOG_SYSTEM_FREE_RATIO: reading.free_ratio,
            },
        )

    def close(self) -> None:
        """Nothing to release (the provider is flushed by the monitor)."""
