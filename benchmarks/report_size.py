"""Size and cost of ``otel-memory report`` on a large log, next to ``analyze`` on the same log.

    python benchmarks/report_size.py                 # ~1 GB log (needs ~1 GB in $TMPDIR)
    python benchmarks/report_size.py --size-mb 100

Writes the log of ``analyze_throughput.py`` (tasks, checks, idle lines two minutes apart) into
a temporary directory, then runs, one after the other in the same run, ``otel-memory analyze``
(the peer: the same pass without a chart) and ``otel-memory report``, as subprocesses. For each
it prints wall time, lines per second, the child's peak RSS and the size of what it wrote, and
then what the page holds. Target: the page stays under 2 MB however large the log. The
temporary directory is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from analyze_throughput import run_measured, write_log

TARGET_PAGE_BYTES = 2 * 1024 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=1024, help="log size (default 1024)")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="otel-memory-report-bench-"))
    log = directory / "memory_20251116.log"
    page = directory / "report.html"
    try:
        started = time.perf_counter()
        lines = write_log(log, int(args.size_mb * (1 << 20)), compress=False)
        print(
            f"wrote {lines:,} lines, {log.stat().st_size / (1 << 20):,.0f} MB "
            f"in {time.perf_counter() - started:.1f} s"
        )
        cli = [sys.executable, "-m", "otel_memory.cli"]
        commands = {
            "otel-memory analyze": [*cli, "analyze", str(log)],
            "otel-memory report": [*cli, "report", str(log), "-o", str(page)],
        }
        rows = []
        for label, command in commands.items():
            elapsed, peak_mb, out = run_measured(command)
            written = page.stat().st_size if label.endswith("report") else len(out.encode())
            rows.append((label, elapsed, lines / elapsed, peak_mb, written))
        print()
        print(f"{'command':<22} {'wall s':>8} {'lines/s':>12} {'peak RSS MB':>12} {'output':>12}")
        for label, elapsed, rate, peak_mb, written in rows:
            print(
                f"{label:<22} {elapsed:>8.2f} {rate:>12,.0f} {peak_mb:>12.1f} "
                f"{written / 1024:>9,.0f} KiB"
            )
        text = page.read_text(encoding="utf-8")
        found = re.search(r'id="chart-data">(.*?)</script>', text, re.DOTALL)
        data = json.loads(found.group(1)) if found else {}
        size = len(text.encode())
        data_kib = len(found.group(1)) / 1024 if found else 0.0
        print()
        print(
            f"page: {size / 1024:,.0f} KiB, chart data {data_kib:,.0f} "
            f"KiB ({len(data.get('times', [])):,} rows, {len(data.get('bands', [])):,} bands "
            f"standing for {sum(b[4] for b in data.get('bands', [])):,} runs); "
            f"target < {TARGET_PAGE_BYTES / (1 << 20):g} MB: "
            f"{'met' if size < TARGET_PAGE_BYTES else 'NOT met'}"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
