"""The daily memory log: ``{log_dir}/memory_YYYYMMDD.log``, one line per event, byte for byte.

    writer = DailyLogWriter("logs")
    writer.write_lines([(reading.timestamp, format_message(Marker.CHECK, "Idle", reading))])

Each line goes to the file of its own local date, so the switch at midnight needs no timer.
Lines of one batch that share a file leave in one ``os.write`` on a descriptor opened with
``O_APPEND``, so concurrent writers, threads or processes, never split a line. The writer does
not go through :mod:`logging`: the host's logging configuration neither silences the file nor
receives its lines. A failing write (ENOSPC, EFBIG, a removed directory) is reported once per
episode, and once more when writing works again; lines of a failed write are counted as lost.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from otel_memory.activity.events import Event, LineEvent
from otel_memory.base.diagnostics import logger
from otel_memory.base.logline import format_message, format_timestamp, log_file_name, pid_suffix

_Write = Callable[[int, bytes], int]


class DailyLogWriter:
    """Appends lines to the file of each line's local date under ``log_dir``.

    Args:
        log_dir: the directory (created on the first line).
        write: ``os.write`` by default; tests pass a slow or failing one.
    """

    def __init__(self, log_dir: str | os.PathLike[str], write: _Write = os.write) -> None:
        self.log_dir = Path(log_dir)
        self._write = write
        self._file_name: str | None = None
        self._fd: int | None = None
        self._failing = False
        self.lines_written = 0
        self.lines_lost = 0

    @property
    def current_path(self) -> Path | None:
        """The file the last line went to."""
        return self.log_dir / self._file_name if self._file_name else None

    def write_lines(self, lines: Iterable[tuple[float, str]]) -> None:
        """Append ``(timestamp, message)`` lines; each timestamp picks the file, starts the line."""
        pending: list[str] = []
        pending_file: str | None = None
        for timestamp, message in lines:  # both names are cached per second in logline
            file_name = log_file_name(timestamp)
            if file_name != pending_file and pending:
                self._append(pending_file, pending)  # type: ignore[arg-type]
                pending = []
            pending_file = file_name
            pending.append(f"{format_timestamp(timestamp)} {message}\n")
        if pending:
            self._append(pending_file, pending)  # type: ignore[arg-type]

    def _append(self, file_name: str, lines: list[str]) -> None:
        data = "".join(lines).encode("utf-8", "backslashreplace")
        try:
            fd = self._descriptor(file_name)
            while data:
                data = data[self._write(fd, data) :]
        except OSError as exc:
            self._close_descriptor()
            self.lines_lost += len(lines)
            if not self._failing:
                self._failing = True
                logger.warning(
                    "otel_memory: cannot write the daily log in %s: %s (reported once per "
                    "episode)",
                    self.log_dir,
                    exc,
                )
            return
        self.lines_written += len(lines)
        if self._failing:
            self._failing = False
            logger.warning(
                "otel_memory: writing the daily log in %s works again (%d lines lost so far)",
                self.log_dir,
                self.lines_lost,
            )

    def _descriptor(self, file_name: str) -> int:
        if self._fd is None or file_name != self._file_name:
            self._close_descriptor()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.log_dir / file_name, flags, 0o644)
            self._file_name = file_name
        return self._fd

    def _close_descriptor(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def sync(self) -> None:
        """Push what was written to disk (``fsync``)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; a later line reopens it."""
        self._close_descriptor()


class DailyLogSink:
    """The event pipeline's sink for the daily file: every line event, formatted and written."""

    durable = True
    """A child process's END writes its lines at once: it may end with ``os._exit()``."""

    def __init__(self, writer: DailyLogWriter) -> None:
        self.writer = writer
        self.pid_tag = ""
        """Appended to every line (``" | PID: 1234"``) when several processes share the file,
        so the analyzer pairs each process's lines; empty for a process alone."""

    def tag_with_pid(self, pid: int) -> None:
        """Mark this process's lines: it shares the daily file with other processes."""
        self.pid_tag = pid_suffix(pid)

    def write(self, batch: Sequence[Event]) -> None:
        """Format the batch's lines and write them."""
        tag = self.pid_tag
        self.writer.write_lines(
            (
                event.reading.timestamp,
                format_message(event.marker, event.name, event.reading) + tag,
            )
            for event in batch
            if isinstance(event, LineEvent)
        )

    def close(self) -> None:
        """Sync and close the file."""
        self.writer.sync()
        self.writer.close()
