"""What the live guard adds to a task: thresholds checked on every reading and the cgroup limit
folded into the system numbers, against the same monitor without them, in the same process.

    .venv/bin/python benchmarks/guard.py [--rounds 7] [--calls 20000]

Four setups, interleaved in every round (medians printed), each an empty ``@traced_task`` with
the monitor started (daily log, ``export_logs: events``, SDK tracer provider with a
``BatchSpanProcessor`` whose exporter drops): ``guard off`` (no threshold listener, no cgroup
source), ``thresholds``, ``limit`` (the process's real cgroups) and ``guard on`` (both, as
``start()`` sets it up). Caller-thread CPU per task (``time.thread_time``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_memory
from otel_memory.base.config import config_from_dict
from otel_memory.kernel.limits import CgroupMemory
from otel_memory.kernel.readings import PsutilReadingSource
from otel_memory.runtime.runtime import get_runtime


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _HostOnly:
    """A limit source that applies no cgroup limit (the host's numbers pass through)."""

    def effective(self, host_available: int, host_total: int) -> tuple[int, int, str]:
        return host_available, host_total, "host"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    trace.set_tracer_provider(provider)
    with tempfile.TemporaryDirectory() as log_dir:
        otel_memory.start(
            config_from_dict({"general": {"monitoring": {"memory_monitor": {
                "log_dir": log_dir, "interval_seconds": 3600, "retention_days": 0}}}})
        )
        runtime = get_runtime()
        guard = runtime.reader.on_reading
        sources = {"host": PsutilReadingSource(limits=_HostOnly()),
                   "cgroup": PsutilReadingSource(limits=CgroupMemory())}
        setups = {
            "guard off": (None, "host"),
            "thresholds": (guard, "host"),
            "limit": (None, "cgroup"),
            "guard on": (guard, "cgroup"),
        }

        @otel_memory.traced_task("bench")
        def task() -> None:
            pass

        results: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(args.rounds):
            for name, (listener, source) in setups.items():
                runtime.reader.on_reading = listener
                runtime.set_reading_source(sources[source])
                for _ in range(1_000):
                    task()
                started = time.thread_time()
                for _ in range(args.calls):
                    task()
                results[name].append((time.thread_time() - started) / args.calls * 1e6)
                runtime.events.flush()
        runtime.reader.on_reading = guard
        otel_memory.stop()

    base = statistics.median(results["guard off"])
    print(f"python {sys.version.split()[0]}; median of {args.rounds} interleaved rounds "
          f"x {args.calls:,} tasks; caller-thread CPU per task")
    print(f"{'setup':<12} {'µs':>7} {'vs guard off':>13}")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"{name:<12} {value:7.2f} {100 * (value / base - 1):+12.1f}%")
    print("Goal (issue 9): guard on within 5 % of guard off.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
