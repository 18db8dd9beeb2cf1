"""Throughput of ``otel-memory analyze`` on a large daily log, next to grep and wc.

    python benchmarks/analyze_throughput.py            # ~1 GB log (needs ~1 GB in $TMPDIR)
    python benchmarks/analyze_throughput.py --size-mb 200 --gzip

Writes a log of realistic lines (tasks, checks, idle lines; timestamps moving two minutes per
line, days rolling over) into a temporary directory, then runs in the same process, one after
the other: ``grep -c RSS`` (the floor), ``wc -l`` and ``otel-memory analyze`` as subprocesses.
For each it prints wall time, lines per second and the peak RSS of the child (GNU
``/usr/bin/time -f %M``). Targets for analyze: >= 300k lines/s and peak RSS <= 50 MB.
The temporary directory is removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from otel_memory.base.logline import Marker, format_message
from otel_memory.testing import reading

TARGET_LINES_PER_SECOND = 300_000
TARGET_PEAK_RSS_MB = 50.0


def _block(start: datetime, count: int) -> tuple[list[str], datetime]:
    """``count`` lines from ``start``, two minutes apart: idle stretches and dump tasks."""
    lines = []
    moment = start
    for i in range(count):
        phase = i % 60
        if phase == 20:
            marker, name = Marker.START, "Nations Dump Download"
        elif 20 < phase < 26:
            marker, name = Marker.CHECK, "Nations Dump Download"
        elif 26 <= phase < 40:
            marker, name = Marker.CHECK, "Nations Dump Processing"
        elif phase == 40:
            marker, name = Marker.END, "Nations Dump Complete"
        else:
            marker, name = Marker.CHECK, "Idle"
        rss = 230 + (i % 7) * 1.3 + (400 if 26 <= phase < 40 else 0) + (phase % 5) * 12.5
        sample = reading(rss_mb=rss, vms_mb=rss + 260, available_mb=1800 - rss, total_mb=2048)
        lines.append(f"{moment:%Y-%m-%d %H:%M:%S} {format_message(marker, name, sample)}\n")
        moment += timedelta(seconds=120)
    return lines, moment


def write_log(path: Path, size_bytes: int, compress: bool) -> int:
    """Write about ``size_bytes`` of log; the number of lines written."""
    opener = gzip.open if compress else open
    written = lines_written = 0
    moment = datetime(2025, 11, 16)
    template, _ = _block(moment, 720)  # one day of lines
    # Re-stamping a block by swapping its timestamps is much faster than formatting each line.
    bodies = [line[20:] for line in template]
    with opener(path, "wt", encoding="utf-8") as out:  # type: ignore[operator]
        while written < size_bytes:
            chunk = []
            for body in bodies:
                chunk.append(f"{moment:%Y-%m-%d %H:%M:%S} {body}")
                moment += timedelta(seconds=120)
            text = "".join(chunk)
            out.write(text)
            written += len(text)
            lines_written += len(chunk)
    return lines_written


def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; wall seconds, its peak RSS in MB and its stdout.

    The peak comes from GNU ``/usr/bin/time -f %M`` when present: ``wait4``'s ``ru_maxrss``
    would include the pages the child inherited from this (much larger) Python process before
    ``exec``. Without GNU time it falls back to ``wait4`` and says so.
    """
    gnu_time = shutil.which("time", path="/usr/bin")
    wrapped = [gnu_time, "-f", "%M", *command] if gnu_time else command
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(wrapped, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        errors = err.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{command[0]} failed: {errors[-500:]}")
        peak_kb = int(errors.split()[-1]) if gnu_time else usage.ru_maxrss
        return elapsed, peak_kb / 1024, out.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=1024, help="log size (default 1024)")
    parser.add_argument("--gzip", action="store_true", help="write the log gzip-compressed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="otel-memory-bench-"))
    name = "memory_20251116.log" + (".gz" if args.gzip else "")
    log = directory / name
    try:
        started = time.perf_counter()
        lines = write_log(log, int(args.size_mb * (1 << 20)), args.gzip)
        size = log.stat().st_size
        print(
            f"wrote {lines:,} lines, {size / (1 << 20):,.0f} MB on disk "
            f"in {time.perf_counter() - started:.1f} s: {log}"
        )
        # The shell tools read gzip through zcat; analyze reads it itself.
        source = f"zcat {log} | " if args.gzip else f"< {log} "
        analyze = [sys.executable, "-m", "otel_memory.cli", "analyze", str(log)]
        commands = {
            "grep -c RSS": ["sh", "-c", f"{source}grep -c RSS"],
            "wc -l": ["sh", "-c", f"{source}wc -l"],
            "otel-memory analyze": analyze,
            "otel-memory analyze --json": [*analyze, "--json"],
        }
        rows = []
        for label, command in commands.items():
            elapsed, peak_mb, _ = run_measured(command)
            rows.append((label, elapsed, lines / elapsed, peak_mb))
        print()
        print(f"{'command':<28} {'wall s':>8} {'lines/s':>12} {'peak RSS MB':>12}")
        for label, elapsed, rate, peak_mb in rows:
            print(f"{label:<28} {elapsed:>8.2f} {rate:>12,.0f} {peak_mb:>12.1f}")
        _, elapsed, rate, peak_mb = rows[2]
        print()
        print(
            f"analyze: {rate:,.0f} lines/s (target >= {TARGET_LINES_PER_SECOND:,}): "
            f"{'met' if rate >= TARGET_LINES_PER_SECOND else 'NOT met'}; "
            f"peak RSS {peak_mb:.1f} MB (target <= {TARGET_PEAK_RSS_MB:g}): "
            f"{'met' if peak_mb <= TARGET_PEAK_RSS_MB else 'NOT met'}"
        )
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
