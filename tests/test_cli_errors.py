"""The command line's Unix habits: one-line errors with exit 2, never a traceback, never a
clobbered output; ``--version``, ``-`` for stdin and stdout, ``--force``, ``--fail-on-breach``."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import otel_memory
from otel_memory.base.version import __version__
from otel_memory.cli import main

LINES = [
    "2025-11-16 08:30:00 >>> TASK START [Nations Dump Download] | RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free)",
    "2025-11-16 08:32:00 --- [Nations Dump Download] | RSS:  267.8 MB | VMS:  534.2 MB | System Available: 1001.2 MB (49.1% free)",
    "2025-11-16 08:33:00 >>> TASK START [Nations Dump Processing] | RSS:  270.0 MB | VMS:  540.0 MB | System Available: 1000.0 MB (49.0% free)",
    "2025-11-16 08:34:15 --- [Nations Dump Processing] | RSS:  598.4 MB | VMS:  812.7 MB | System Available:  725.3 MB (35.6% free)",
    "2025-11-16 08:36:45 <<< TASK END [Nations Dump Complete] | RSS:  289.1 MB | VMS:  545.8 MB | System Available:  989.7 MB (48.6% free)",
    "2025-11-16 08:38:00 --- [Idle] | RSS:  234.2 MB | VMS:  498.3 MB | System Available: 1043.8 MB (51.3% free)",
]  # fmt: skip
TEXT = "".join(f"{line}\n" for line in LINES)
REPO = Path(otel_memory.__file__).resolve().parent.parent
LONG = "x" * 5000


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a good log and every kind of bad input and output."""
    monkeypatch.chdir(tmp_path)
    Path("memory_20251116.log").write_text(TEXT, encoding="utf-8")
    Path("corrupt.log.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    Path("truncated.log.gz").write_bytes(gzip.compress(TEXT.encode() * 50)[:300])
    Path("baddir").mkdir()
    Path("baddir/memory_20251117.log.gz").write_bytes(b"\x1f\x8b\x08\x00not gzip at all")
    Path("empty_dir").mkdir()
    Path("existing_dir").mkdir()
    Path("binary.yaml").write_bytes(bytes(range(256)) * 4)
    Path("bad.yaml").write_text("general: {monitoring: {memory_monitor: {interval_seconds: 0}}}")
    Path("existing.html").write_text("keep me", encoding="utf-8")
    os.mkfifo("fifo")
    return tmp_path


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: its kind, and the bytes of regular files."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        found[str(path)] = path.read_bytes() if stat.S_ISREG(mode) else stat.S_IFMT(mode)
    return found


LOG = "memory_20251116.log"
# (arguments, words the message must contain)
BAD_INPUTS: list[tuple[list[str], str]] = [
    ([], "required"),
    (["bogus"], "bogus"),
    (["analyze"], "required"),
    (["analyze", LOG, "--no-such-option"], "--no-such-option"),
    (["analyze", LOG, "--top"], "--top"),
    (["analyze", LOG, "--top", "0"], "'0'"),
    (["analyze", LOG, "--top", "-3"], "'-3'"),
    (["analyze", LOG, "--top", "many"], "'many'"),
    (["analyze", LOG, "--top", "1.5"], "whole number"),
    (["analyze", LOG, "--top", "9" * 5000], "whole number"),
    (["analyze", LOG, "--warning-mb", "nan"], "'nan'"),
    (["analyze", LOG, "--warning-mb", "inf"], "'inf'"),
    (["analyze", LOG, "--warning-mb", "-1"], "'-1'"),
    (["analyze", LOG, "--warning-mb", "lots"], "size in MB"),
    (["analyze", LOG, "--critical-mb", "NaN"], "'NaN'"),
    (["analyze", LOG, "--warning-mb", "200", "--critical-mb", "100"], "--critical-mb (100)"),
    (["analyze", LOG, "--interval", "nan"], "'nan'"),
    (["analyze", LOG, "--interval", "0"], "> 0"),
    (["analyze", LOG, "--interval", "-5"], "'-5'"),
    (["analyze", LOG, "--interval", "1e999"], "'1e999'"),
    (["analyze", LOG, "--above", "nan"], "'nan'"),
    (["analyze", LOG, "--above", "x"], "'x'"),
    (["analyze", LOG, "--since", "0001-01-01T00:00+01:00"], "0001-01-01T00:00+01:00"),
    (["analyze", LOG, "--until", "9999-12-31T23:59-01:00"], "9999-12-31T23:59-01:00"),
    (["analyze", LOG, "--since", "yesterday"], "'yesterday'"),
    (["analyze", LOG, "--since", "2025-13-01"], "'2025-13-01'"),
    (["analyze", LOG, "--since", "2025-11-17", "--until", "2025-11-16"], "--since is after"),
    (["analyze", LOG, "--config", "binary.yaml"], "binary.yaml"),
    (["analyze", LOG, "--config", "bad.yaml"], "interval_seconds"),
    (["analyze", LOG, "--config", "missing.yaml"], "missing.yaml"),
    (["analyze", LOG, "--config", "existing_dir"], "existing_dir"),
    (["analyze", LOG, "--config", LONG], "xxx"),
    (["analyze", LONG], "5,000 characters"),
    (["analyze", f"{LONG}/memory_20251116.log"], "characters"),
    (["analyze", "missing.log"], "missing.log: no such file"),
    (["analyze", ""], "empty input"),
    (["analyze", "a\0b"], "a\\x00b"),
    (["analyze", "corrupt.log.gz"], "corrupt.log.gz"),
    (["analyze", "truncated.log.gz"], "truncated.log.gz"),
    (["analyze", "baddir"], "memory_20251117.log.gz"),
    (["analyze", "empty_dir"], "no memory_YYYYMMDD.log files"),
    (["analyze", "nomatch*.log"], "no file matches"),
    (["analyze", "fifo"], "not a regular file"),
    (["report", LOG, "-o", "nodir/r.html"], "nodir"),
    (["report", LOG, "-o", "existing_dir"], "is a directory; not replaced"),
    (["report", LOG, "-o", "existing_dir", "--force"], "is a directory; not replaced"),
    (["report", LOG, "-o", "fifo", "--force"], "is a FIFO; not replaced"),
    (["report", LOG, "-o", "existing.html"], "use --force"),
    (["report", LOG, "-o", ""], "empty"),
    (["report", LOG, "-o", LONG], "characters"),
    (["report", LOG, "-o", "/dev/full", "--force"], "character device; not replaced"),
    (["report", "corrupt.log.gz", "-o", "new.html"], "corrupt.log.gz"),
    (["archive", "--retention-days", "-1"], "'-1'"),
    (["archive", "--log-dir", "missing_logs"], "missing_logs"),
]


def assert_one_line_error(code: int, err: str, words: str) -> None:
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("otel-memory: ")
    assert "Traceback" not in err and "unexpected error" not in err, err
    assert words in err, err
    assert len(err) < 400, err


@pytest.mark.parametrize(("args", "words"), BAD_INPUTS, ids=lambda v: repr(v)[:60])
def test_bad_input_is_one_line_exit_2_and_nothing_replaced(place, capsys, args, words):
    before = snapshot(place)
    device = os.stat("/dev/full").st_mode
    code = main(args)
    assert_one_line_error(code, capsys.readouterr().err, words)
    assert snapshot(place) == before  # no temporary left behind, nothing replaced
    assert os.stat("/dev/full").st_mode == device


def test_there_are_at_least_forty_bad_inputs():
    assert len(BAD_INPUTS) >= 40


def run_cli(*args: str, stdin: bytes = b"", cwd: Path) -> subprocess.CompletedProcess[bytes]:
    command = Path(sys.executable).parent / "otel-memory"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(command), *args], input=stdin, capture_output=True, cwd=cwd, env=env, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["analyze", LONG], "characters"),
        (["analyze", "corrupt.log.gz"], "corrupt.log.gz"),
        (["analyze", "baddir"], "memory_20251117.log.gz"),
        (["analyze", LOG, "--since", "0001-01-01T00:00+01:00"], "0001-01-01"),
        (["analyze", LOG, "--interval", "nan"], "'nan'"),
        (["report", LOG, "-o", "/dev/full", "--force"], "character device"),
        (["report", LOG, "-o", "fifo", "--force"], "FIFO"),
        (["report", LOG, "-o", "existing_dir"], "directory"),
    ],
)
def test_real_process_prints_one_line_and_exits_2(place, args, words):
    before = snapshot(place)
    device = os.stat("/dev/full")
    result = run_cli(*args, cwd=place)
    assert result.stdout == b""
    assert_one_line_error(result.returncode, result.stderr.decode(), words)
    assert snapshot(place) == before
    after = os.stat("/dev/full")
    assert (after.st_mode, after.st_rdev) == (device.st_mode, device.st_rdev)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"otel-memory {__version__}\n"


@pytest.mark.parametrize("compress", [False, True])
def test_dash_reads_standard_input_plain_or_gzip(place, compress):
    data = gzip.compress(TEXT.encode()) if compress else TEXT.encode()
    from_stdin = run_cli("analyze", "--json", "-", stdin=data, cwd=place)
    from_file = run_cli("analyze", "--json", LOG, cwd=place)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.replace(b'"-"', b'"memory_20251116.log"') == from_file.stdout


def test_report_to_standard_output(place):
    result = run_cli("report", LOG, "-o", "-", cwd=place)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"<!DOCTYPE html>") or b"<html" in result.stdout[:200]
    assert not Path(place, "memory_report.html").exists()


def test_output_gets_the_umask_mode_and_force_replaces_a_file(place, capsys):
    old = os.umask(0o022)
    try:
        assert main(["report", LOG, "-o", "new.html"]) == 0
        assert stat.S_IMODE(os.stat("new.html").st_mode) == 0o644
        assert main(["report", LOG, "-o", "existing.html", "--force"]) == 0
    finally:
        os.umask(old)
    assert Path("existing.html").read_text(encoding="utf-8") != "keep me"
    assert "wrote existing.html" in capsys.readouterr().out
    assert [p.name for p in place.iterdir() if p.name.endswith(".tmp")] == []


def test_force_through_a_symlink_keeps_the_link(place):
    os.symlink("existing.html", "link.html")
    assert main(["report", LOG, "-o", "link.html", "--force"]) == 0
    assert os.path.islink("link.html")
    assert "<html" in Path("existing.html").read_text(encoding="utf-8")


def test_fail_on_breach_exits_1_only_when_a_threshold_was_crossed(place, capsys):
    assert main(["analyze", LOG, "--fail-on-breach"]) == 0  # defaults: nothing crossed
    assert main(["analyze", LOG, "--fail-on-breach", "--warning-mb", "500"]) == 1
    assert main(["analyze", LOG, "--warning-mb", "500"]) == 0  # only on request
    assert main(["analyze", LOG, "--json", "--fail-on-breach", "--warning-mb", "500"]) == 1
    assert main(["report", LOG, "-o", "b.html", "--fail-on-breach", "--warning-mb", "500"]) == 1
    assert Path("b.html").exists()  # the report is still written
    capsys.readouterr()
