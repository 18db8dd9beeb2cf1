"""Finding and streaming the daily logs: paths, directories and globs; plain and gzip files.

    from otel_memory.cli.reading import iter_chunks, resolve_inputs

    for log in resolve_inputs(["logs/", "old/*.log.gz"]):
        for first_line_number, lines in iter_chunks(log.path):
            ...

Lines are read in chunks of about a megabyte (``readlines(hint)``), so memory stays constant
whatever the file size, and every line of a chunk ends with ``"\\n"``. The argument ``-`` is
standard input; files and standard input are gunzipped when they start with gzip's magic bytes,
whatever their name.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from otel_memory.base.memory import MB
from otel_memory.base.retention import DAILY_LOG_NAME
from otel_memory.cli.errors import InputError, shown

CHUNK_HINT = 1 << 20
"""Bytes of text per ``readlines`` call."""

_GLOB_CHARS = frozenset("*?[")


STDIN = Path("-")
"""The input ``-``: standard input (a file named ``-`` is ``./-``)."""

# What reading a damaged file raises: bad gzip header or data, truncated stream.
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True, slots=True)
class LogFile:
    """One input file and the stream it belongs to.

    Args:
        path: the file.
        stream: files with the same stream (a directory of daily logs) are read as one
            continuous log, in date order, so a task or an interval that crosses midnight
            stays whole.
        size: bytes on disk (compressed size for ``.gz``), for progress.
    """

    path: Path
    stream: str
    size: int


def _daily_logs_in(directory: Path) -> list[Path]:
    """The ``memory_YYYYMMDD.log[.gz]`` files of ``directory`` in date order; when a day has
    both (an archive being written), the plain log wins so that no line counts twice."""
    by_day: dict[str, Path] = {}
    for path in directory.iterdir():
        match = DAILY_LOG_NAME.fullmatch(path.name)
        if match is None or not _is_file(path):
            continue
        if match["gz"] is None or match["date"] not in by_day:
            by_day[match["date"]] = path
    return [by_day[day] for day in sorted(by_day)]


def _sort_key(path: Path) -> tuple[str, str]:
    match = DAILY_LOG_NAME.fullmatch(path.name)
    return (str(path.parent), match["date"] if match else path.name)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long: is_file() only hides "no such file"
        return False


def _paths_of(argument: str) -> list[Path]:
    """The files one argument names; raises :class:`InputError`."""
    if argument == str(STDIN):
        return [STDIN]
    path = Path(argument)
    if not argument:
        raise InputError("an empty input name (use - for standard input)")
    try:
        if path.is_dir():
            found = _daily_logs_in(path)
            if not found:
                raise InputError(
                    f"{shown(argument)}: no memory_YYYYMMDD.log files in this directory"
                )
            return found
        if path.is_file():
            return [path]
        if _GLOB_CHARS.intersection(argument):
            matches = [m for m in map(Path, glob.glob(argument, recursive=True)) if _is_file(m)]
            if not matches:
                raise InputError(f"{shown(argument)}: no file matches this pattern")
            return sorted(matches, key=_sort_key)
        if path.exists():
            raise InputError(f"{shown(argument)}: not a regular file or directory")
    except OSError as exc:
        raise InputError(f"{shown(argument)}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the name
        raise InputError(f"{shown(argument)}: {exc}") from None
    raise InputError(f"{shown(argument)}: no such file or directory")


def resolve_inputs(arguments: list[str]) -> list[LogFile]:
    """Files named by ``arguments`` (files, directories, globs, ``-``), grouped into streams by
    directory and sorted by date; raises :class:`InputError` for a path that is not there."""
    files: list[LogFile] = []
    seen: set[Path] = set()
    for path in (p for argument in arguments for p in _paths_of(argument)):
        if path == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                files.append(LogFile(path=STDIN, stream="<stdin>", size=0))
            continue
        try:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            size = path.stat().st_size
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.10-3.12)
            raise InputError(f"{shown(path)}: {getattr(exc, 'strerror', None) or exc}") from None
        files.append(LogFile(path=path, stream=str(resolved.parent), size=size))
    return files


def _open_text(path: Path) -> tuple[TextIO, BinaryIO]:
    """``path`` as text (gunzipped by magic number, not by name) and its raw byte stream,
    whose position tells how much of the file has been read."""
    if path == STDIN:
        # A duplicate descriptor: closing the text wrapper must not close the real stdin.
        raw: BinaryIO = io.BufferedReader(io.FileIO(os.dup(sys.stdin.fileno()), "rb"))
    else:
        raw = path.open("rb")
    try:
        compressed = raw.peek(2)[:2] == b"\x1f\x8b"  # type: ignore[attr-defined]
        stream: gzip.GzipFile | BinaryIO = raw
        if compressed:
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        # Undecodable bytes become U+FFFD: one bad byte must not stop the analysis.
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    except BaseException:
        raw.close()
        raise
    return text, raw


def iter_chunks(
    path: Path, on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[int, list[str]]]:
    """``(number of the first line, lines)`` chunks of ``path``; every line ends with ``\\n``.

    ``on_bytes`` is told the raw bytes consumed after each chunk (for progress). Raises
    :class:`InputError` when the file cannot be opened or read (e.g. a truncated gzip).
    """
    name = "standard input" if path == STDIN else shown(path)
    try:
        text, raw = _open_text(path)
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    line_number = 1
    consumed = 0
    with text:
        while True:
            try:
                lines = text.readlines(CHUNK_HINT)
            except _READ_ERRORS as exc:
                raise InputError(f"{name}: cannot read past line {line_number}: {exc}") from None
            if not lines:
                break
            if not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            yield line_number, lines
            line_number += len(lines)
            if on_bytes is not None and path != STDIN:
                position = raw.tell()
                on_bytes(position - consumed)
                consumed = position


class Progress:
    """Bytes read out of the total, and the rate, on one rewritten line of ``stream``.

    Updates are throttled to ``max_rate`` per second and start only after ``delay`` seconds,
    so quick runs print nothing; :meth:`close` erases the line.
    """

    def __init__(
        self,
        total_bytes: int,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_rate: float = 5.0,
        delay: float = 0.5,
    ) -> None:
        self._total = total_bytes
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._period = 1.0 / max_rate
        self._started = clock()
        self._next = self._started + delay
        self._done = 0
        self._shown = False
        self.updates = 0

    def advance(self, count: int) -> None:
        """Count ``count`` more bytes read; redraw when the throttle allows."""
        self._done += count
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._period
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed / MB
        percent = 100.0 * self._done / self._total if self._total else 100.0
        self._stream.write(
            f"\rreading {self._done / MB:,.0f} / {self._total / MB:,.0f} MB"
            f" ({percent:.0f}%), {rate:,.1f} MB/s "
        )
        self._stream.flush()
        self._shown = True
        self.updates += 1

    def close(self) -> None:
        """Erase the progress line, if one was drawn."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


PROGRESS_MIN_BYTES = 32 << 20
PROGRESS_MIN_FILES = 20


def progress_for(files: list[LogFile], stream: TextIO, enabled: bool = True) -> Progress | None:
    """A :class:`Progress` when ``stream`` is a terminal and there is much to read."""
    if not enabled or not _isatty(stream):
        return None
    total = sum(f.size for f in files)
    if total < PROGRESS_MIN_BYTES and len(files) < PROGRESS_MIN_FILES:
        return None
    return Progress(total, stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
