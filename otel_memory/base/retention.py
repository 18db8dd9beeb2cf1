"""Retention of the daily memory logs: gzip old days, optionally delete very old archives.

    from otel_memory.base.retention import archive_old_logs

    result = archive_old_logs("logs", retention_days=30, delete_archives_after_days=365)
    print(result.archived, result.deleted, result.errors)

Ages come from the date in the file name (``memory_YYYYMMDD.log``), not from file times, so
copying or touching a log never changes when it is archived. A log is *older than N days* when
``today - date > N`` days: with ``retention_days=30`` the file of 31 days ago is archived, the
one of 30 days ago is kept. Today's file is never touched, and ``retention_days=0`` keeps
everything. Archiving writes ``memory_YYYYMMDD.log.gz.tmp``, checks it decompresses to exactly
the original bytes, renames it to ``memory_YYYYMMDD.log.gz`` and only then removes the original.
The function only touches files: no logging, no printing, no global state.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

DAILY_LOG_NAME = re.compile(r"memory_(?P<date>\d{8})\.log(?P<gz>\.gz)?")
"""A daily log or its archive (use ``fullmatch`` on the file name)."""

PROFILES_DIR = "profiles"
"""The folder of ``log_dir`` that holds the allocation profiles (pprof)."""

PROFILE_NAME = re.compile(
    r"(?P<task>.+)_(?P<date>\d{8})-(?P<time>\d{6})_(?P<span>[0-9a-f]{16})\.pb\.gz"
)
"""An allocation profile's file name: task, local date and time, span id (``fullmatch``)."""

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What :func:`archive_old_logs` did (or, with ``dry_run``, would do).

    Args:
        archived: original logs that were compressed (their ``.gz`` sits next to them).
        deleted: archives that were deleted.
        kept: daily logs and archives left as they are.
        errors: one ``"path: reason"`` per file that could not be handled; the others go on.
        dry_run: nothing was changed on disk.
    """

    archived: tuple[Path, ...] = ()
    deleted: tuple[Path, ...] = ()
    kept: tuple[Path, ...] = ()
    errors: tuple[str, ...] = field(default=())
    dry_run: bool = False


def log_date(path: Path) -> date | None:
    """The date in a daily log's (or archive's) file name; ``None`` for any other file."""
    match = DAILY_LOG_NAME.fullmatch(path.name)
    if match is None:
        return None
    try:
        return datetime.strptime(match["date"], "%Y%m%d").date()
    except ValueError:  # memory_20251399.log: shaped like a date, but not one
        return None


def archive_old_logs(
    log_dir: str | os.PathLike[str],
    retention_days: int,
    delete_archives_after_days: int = 0,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> ArchiveResult:
    """Gzip daily logs older than ``retention_days``; delete archives older than
    ``delete_archives_after_days`` when that is > 0. ``now`` defaults to the local time."""
    if retention_days < 0 or delete_archives_after_days < 0:
        raise ValueError("retention_days and delete_archives_after_days must be >= 0")
    today = (now or datetime.now()).date()
    archived: list[Path] = []
    deleted: list[Path] = []
    kept: list[Path] = []
    errors: list[str] = []
    directory = Path(log_dir)
    for path in sorted(directory.iterdir()):
        day = log_date(path)
        if day is None or not path.is_file():
            continue
        age = (today - day).days
        is_archive = path.name.endswith(".gz")
        if not is_archive and retention_days > 0 and age > retention_days:
            try:
                if not dry_run:
                    _compress(path)
                archived.append(path)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            if delete_archives_after_days > 0 and age > delete_archives_after_days:
                _delete(path.with_name(path.name + ".gz"), dry_run, deleted, errors)
        elif is_archive and delete_archives_after_days > 0 and age > delete_archives_after_days:
            _delete(path, dry_run, deleted, errors)
        else:
            kept.append(path)
    profiles = directory / PROFILES_DIR
    _delete_old_profiles(profiles, today, retention_days, dry_run, (deleted, errors))
    return ArchiveResult(
        archived=tuple(archived),
        deleted=tuple(deleted),
        kept=tuple(kept),
        errors=tuple(errors),
        dry_run=dry_run,
    )


def _delete_old_profiles(
    directory: Path,
    today: date,
    retention_days: int,
    dry_run: bool,
    results: tuple[list[Path], list[str]],
) -> None:
    """Profiles leave with their day's plain log: once older than ``retention_days`` (>0).

    ``results``: the lists of deleted paths and errors to add to."""
    deleted, errors = results
    if retention_days <= 0 or not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        match = PROFILE_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        try:
            day = datetime.strptime(match["date"], "%Y%m%d").date()
        except ValueError:
            continue
        if (today - day).days > retention_days:
            _delete(path, dry_run, deleted, errors)


def _delete(path: Path, dry_run: bool, deleted: list[Path], errors: list[str]) -> None:
    try:
        if not dry_run:
            path.unlink()
        deleted.append(path)
    except OSError as exc:
        errors.append(f"{path}: {exc.strerror or exc}")


def _compress(path: Path) -> Path:
    """``path`` → ``path.gz`` through a verified temporary file; the original goes last."""
    target = path.with_name(path.name + ".gz")
    temporary = path.with_name(path.name + ".gz.tmp")
    try:
        size, crc = _write_gzip(path, temporary)
        if _gzip_digest(temporary) != (size, crc):
            raise OSError(f"archive {temporary.name} does not decompress to the original")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    stat = path.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    path.unlink()
    return target


def _write_gzip(source: Path, destination: Path) -> tuple[int, int]:
    """Compress ``source`` into ``destination`` (synced to disk); the original's size and CRC."""
    size, crc = 0, 0
    mtime = int(source.stat().st_mtime)
    with source.open("rb") as src, destination.open("wb") as raw:
        with gzip.GzipFile(filename=source.name, mode="wb", fileobj=raw, mtime=mtime) as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
        raw.flush()
        os.fsync(raw.fileno())
    return size, crc


def _gzip_digest(path: Path) -> tuple[int, int]:
    """Size and CRC of what ``path`` decompresses to; raises ``OSError`` when it is corrupt."""
    size, crc = 0, 0
    try:
        with gzip.open(path, "rb") as compressed:
            while chunk := compressed.read(_CHUNK):
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
    except (EOFError, zlib.error) as exc:
        raise OSError(f"archive {path.name} is corrupt: {exc}") from exc
    return size, crc
