"""Retention: old logs are gzipped (verified, atomically); archives deleted only on request."""

from __future__ import annotations

import gzip
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from otel_memory.base.retention import archive_old_logs, log_date
from otel_memory.cli import main

NOW = datetime(2025, 11, 16, 9, 30)


def daily(directory: Path, day: date, text: str | None = None, archive: bool = False) -> Path:
    path = directory / f"memory_{day:%Y%m%d}.log{'.gz' if archive else ''}"
    body = text if text is not None else f"a line of {day}\n" * 100
    if archive:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(body)
    else:
        path.write_text(body, encoding="utf-8")
    return path


def days_ago(n: int, now: datetime = NOW) -> date:
    return (now - timedelta(days=n)).date()


def test_logs_older_than_retention_are_gzipped_and_verified(tmp_path):
    old = daily(tmp_path, days_ago(31))
    content = old.read_bytes()
    os.utime(old, (1_700_000_000, 1_700_000_000))
    edge = daily(tmp_path, days_ago(30))
    today = daily(tmp_path, days_ago(0))
    (tmp_path / "notes.txt").write_text("not a daily log")

    result = archive_old_logs(tmp_path, retention_days=30, now=NOW)

    assert result.archived == (old,)
    assert result.deleted == ()
    assert result.errors == ()
    assert not old.exists()
    archive = old.with_name(old.name + ".gz")
    with gzip.open(archive, "rb") as packed:
        assert packed.read() == content
    assert archive.stat().st_mtime == 1_700_000_000  # keeps the log's time
    assert edge.exists() and today.exists()  # 30 days old is not older than 30 days
    assert (tmp_path / "notes.txt").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_retention_zero_keeps_everything(tmp_path):
    old = daily(tmp_path, days_ago(400))
    result = archive_old_logs(tmp_path, retention_days=0, delete_archives_after_days=1, now=NOW)
    assert result.archived == () and result.deleted == ()
    assert old.exists()


def test_today_and_yesterday_are_never_touched(tmp_path):
    today, yesterday = daily(tmp_path, days_ago(0)), daily(tmp_path, days_ago(1))
    before = daily(tmp_path, days_ago(2))
    future = daily(tmp_path, date(2030, 1, 1))
    result = archive_old_logs(tmp_path, retention_days=1, now=NOW)
    assert result.archived == (before,)
    assert today.exists() and yesterday.exists() and future.exists()


def test_archives_deleted_only_when_asked_and_only_older_ones(tmp_path):
    ancient = daily(tmp_path, days_ago(100), archive=True)
    recent_archive = daily(tmp_path, days_ago(40), archive=True)
    assert archive_old_logs(tmp_path, retention_days=30, now=NOW).deleted == ()
    assert ancient.exists()

    result = archive_old_logs(tmp_path, 30, delete_archives_after_days=90, now=NOW)
    assert result.deleted == (ancient,)
    assert not ancient.exists()
    assert recent_archive.exists()


def test_log_older_than_both_limits_is_archived_then_its_archive_deleted(tmp_path):
    old = daily(tmp_path, days_ago(120))
    result = archive_old_logs(tmp_path, 30, delete_archives_after_days=90, now=NOW)
    assert result.archived == (old,)
    assert result.deleted == (old.with_name(old.name + ".gz"),)
    assert list(tmp_path.iterdir()) == []


def test_dry_run_changes_nothing(tmp_path):
    old = daily(tmp_path, days_ago(60))
    ancient = daily(tmp_path, days_ago(200), archive=True)
    result = archive_old_logs(tmp_path, 30, delete_archives_after_days=90, now=NOW, dry_run=True)
    assert result.dry_run
    assert old in result.archived and ancient in result.deleted
    assert old.exists() and ancient.exists()
    assert not old.with_name(old.name + ".gz").exists()


def test_a_failure_keeps_the_original_and_goes_on(tmp_path):
    blocked = daily(tmp_path, days_ago(50))
    other = daily(tmp_path, days_ago(45))
    # A directory where the temporary archive should go: writing it fails.
    (tmp_path / (blocked.name + ".gz.tmp")).mkdir()
    result = archive_old_logs(tmp_path, retention_days=30, now=NOW)
    assert blocked.exists()
    assert len(result.errors) == 1 and str(blocked) in result.errors[0]
    assert result.archived == (other,)
    assert not other.exists()


def test_stale_temporary_file_is_replaced(tmp_path):
    old = daily(tmp_path, days_ago(50))
    content = old.read_bytes()
    (tmp_path / (old.name + ".gz.tmp")).write_bytes(b"half an archive from a crash")
    archive_old_logs(tmp_path, retention_days=30, now=NOW)
    with gzip.open(tmp_path / (old.name + ".gz"), "rb") as packed:
        assert packed.read() == content
    assert not (tmp_path / (old.name + ".gz.tmp")).exists()


def test_log_date_reads_only_daily_log_names():
    assert log_date(Path("memory_20251116.log")) == date(2025, 11, 16)
    assert log_date(Path("memory_20251116.log.gz")) == date(2025, 11, 16)
    assert log_date(Path("memory_20251399.log")) is None
    assert log_date(Path("memory_20251116.log.gz.tmp")) is None
    assert log_date(Path("bot_20251116.log")) is None


def test_negative_days_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="must be >= 0"):
        archive_old_logs(tmp_path, retention_days=-1)


def test_archive_command(tmp_path, capsys):
    now = datetime.now()
    old = daily(tmp_path, days_ago(10, now))
    kept = daily(tmp_path, days_ago(3, now))
    assert main(["archive", "--log-dir", str(tmp_path), "--retention-days", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would archive {old}" in out
    assert old.exists()

    assert main(["archive", "--log-dir", str(tmp_path), "--retention-days", "7"]) == 0
    assert "1 archived, 0 deleted, 1 kept" in capsys.readouterr().out
    assert not old.exists() and kept.exists()
    assert old.with_name(old.name + ".gz").exists()


def test_archive_command_reads_config(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    old = daily(logs, days_ago(5, datetime.now()))
    config = tmp_path / "memory.yaml"
    config.write_text(
        f"general:\n  monitoring:\n    memory_monitor:\n      log_dir: {logs}\n"
        "      retention_days: 2\n"
    )
    assert main(["archive", "--config", str(config)]) == 0
    assert not old.exists()


def test_archive_command_missing_directory(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["archive", "--log-dir", str(missing)]) == 2
    assert f"{missing}: no such directory" in capsys.readouterr().err
