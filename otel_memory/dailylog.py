"""The daily memory log: ``{log_dir}/memory_YYYYMMDD.log``, one line per event, byte for byte.

    handler = DailyLogHandler("logs")
    logging.getLogger("otel_memory").addHandler(handler)

Only records that carry a memory event (see :func:`otel_memory.tasks.emit_line`) are written;
the package's own diagnostics never reach the file. Each line goes to the file of its own local
date, so the switch at midnight needs no timer. Every line is one ``os.write`` on a descriptor
opened with ``O_APPEND``, so concurrent writers, threads or processes, never split a line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from otel_memory import attributes as attr
from otel_memory.logline import format_timestamp, log_file_name


def line_of(record: logging.LogRecord) -> str | None:
    """The daily-log line a record stands for (no newline), or None for other records."""
    timestamp = getattr(record, attr.LOG_TIMESTAMP, None)
    if timestamp is None:
        return None
    return f"{format_timestamp(timestamp)} {record.getMessage()}"


class DailyLogHandler(logging.Handler):
    """Appends memory lines to the file of each line's local date under ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike[str], level: int = logging.INFO) -> None:
        super().__init__(level)
        self.log_dir = Path(log_dir)
        self._file_name: str | None = None
        self._fd: int | None = None
        self._reported_error = False

    @property
    def current_path(self) -> Path | None:
        """The file the last line went to."""
        return self.log_dir / self._file_name if self._file_name else None

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's line, if it has one (called under the handler's lock)."""
        line = line_of(record)
        if line is None:
            return
        timestamp: float = getattr(record, attr.LOG_TIMESTAMP)
        data = (line + "\n").encode("utf-8")
        try:
            fd = self._descriptor(log_file_name(timestamp))
            while data:
                data = data[os.write(fd, data) :]
        except OSError as exc:
            self._close_descriptor()
            if not self._reported_error:
                self._reported_error = True
                # Not through logging: this handler sits on the logger it would report to.
                message = f"otel_memory: cannot write daily log in {self.log_dir}: {exc}"
                print(message, file=sys.stderr)

    def _descriptor(self, file_name: str) -> int:
        if self._fd is None or file_name != self._file_name:
            self._close_descriptor()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.log_dir / file_name, flags, 0o644)
            self._file_name = file_name
            self._reported_error = False
        return self._fd

    def _close_descriptor(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def flush(self) -> None:
        """Lines are written unbuffered; flushing pushes them to disk."""
        self.acquire()
        try:
            if self._fd is not None:
                os.fsync(self._fd)
        except OSError:
            pass
        finally:
            self.release()

    def close(self) -> None:
        """Close the file; a later line would reopen it."""
        self.acquire()
        try:
            self._close_descriptor()
        finally:
            self.release()
        super().close()
