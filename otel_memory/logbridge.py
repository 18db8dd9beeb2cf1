"""The log bridge: records of the ``otel_memory`` logger become OpenTelemetry log records.

Built on the Logs Bridge API (``opentelemetry._logs``), not on the SDK's deprecated
``LoggingHandler``. A memory event keeps its daily-log line as the body and its reading as
structured attributes; START and END are emitted inside the task span's context, so the
exported record carries that span's trace and span ids::

    logging.getLogger("otel_memory").addHandler(OTelLogHandler())
"""

from __future__ import annotations

import logging

from opentelemetry import _logs
from opentelemetry._logs import LoggerProvider, SeverityNumber

from otel_memory import attributes as attr
from otel_memory.dailylog import line_of
from otel_memory.version import __version__

_EVENT_ATTRIBUTES = (
    attr.LOG_MARKER,
    attr.LOG_TASK_NAME,
    attr.LOG_RSS,
    attr.LOG_VMS,
    attr.LOG_SYSTEM_AVAILABLE,
    attr.LOG_SYSTEM_FREE_RATIO,
)


def _severity(levelno: int) -> SeverityNumber:
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


class OTelLogHandler(logging.Handler):
    """Emits each record through an OpenTelemetry logger (the global provider by default)."""

    def __init__(
        self, level: int = logging.INFO, logger_provider: LoggerProvider | None = None
    ) -> None:
        super().__init__(level)
        # Without a provider this is a proxy that follows the global provider once it is set.
        self._logger = _logs.get_logger("otel_memory", __version__, logger_provider=logger_provider)

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record; never raises into the caller."""
        try:
            line = line_of(record)
            attributes: dict[str, str | int | float] = {
                name: getattr(record, name)
                for name in _EVENT_ATTRIBUTES
                if hasattr(record, name)
            }
            if line is None:
                attributes["code.function.name"] = record.funcName
            timestamp = getattr(record, attr.LOG_TIMESTAMP, record.created)
            self._logger.emit(
                timestamp=int(timestamp * 1e9),
                observed_timestamp=int(record.created * 1e9),
                severity_number=_severity(record.levelno),
                severity_text=record.levelname,
                body=line if line is not None else record.getMessage(),
                attributes=attributes,
            )
        except Exception:
            self.handleError(record)
