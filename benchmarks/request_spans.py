"""What memory on a request span costs, in µs per request, beside the floor it cannot go under.

    .venv/bin/python benchmarks/request_spans.py [--rounds 7] [--calls 20000]
    .venv/bin/python benchmarks/request_spans.py --before /tmp/otel-memory-main   # before/after

Each worker is a fresh process with what ``opentelemetry-instrument`` sets up (tracer, meter and
logger providers, batch processors, exporters that drop) and ``otel_memory.start(config)``; it
then times ``--calls`` SERVER spans (``start_as_current_span``, as the flask instrumentation
opens them), each around the work of ``servers.py``'s app (``--rows``, 0: none; the work keeps
the package's code out of the CPU caches, as in a server), three ways, back to back:

* ``bare``: ``request_spans: false``, the span alone;
* ``floor``: ``request_spans: false``, the span given five integer attributes by hand (what
  memory on the span costs at least);
* ``request``: ``request_spans: true``, the span gets its memory from the package.

Per request: the caller thread's CPU (``time.thread_time``: what the request's thread pays) and
the process's CPU (``time.process_time``, through ``otel_memory.stop()``, which drains the
events thread's histogram records). ``--before DIR`` adds the same rows for the package found
in ``DIR`` (e.g. ``git archive main`` unpacked there, extensions built in place), interleaved
round by round with this tree's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _common import install_providers, median, python_line, run_worker, write_config

CASES = ("bare", "floor", "request")
ATTRIBUTES = {
    "memory.rss.start": 250_000_000, "memory.rss.end": 260_000_000,
    "memory.rss.delta": 10_000_000, "memory.rss.peak": 261_000_000, "memory.task.overlap": 0,
}  # fmt: skip


def measure(fn: Callable[[], None], calls: int, finish: Callable[[], None]) -> dict[str, float]:
    """Per-call µs: the caller thread's CPU and the process's CPU (through ``finish``)."""
    gc.collect()
    thread, process = time.thread_time(), time.process_time()
    for _ in range(calls):
        fn()
    thread = time.thread_time() - thread
    finish()
    process = time.process_time() - process
    return {"caller": thread * 1e6 / calls, "process": process * 1e6 / calls}


def work(rows: int) -> None:
    """What ``benchmarks/servers.py``'s app does per request (it pushes the package's code and
    data out of the CPU caches, as a real request does); nothing with ``--rows 0``."""
    if rows:
        _ = [{"id": n, "name": f"row-{n}"} for n in range(rows)]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The three loops in this fresh process."""
    providers = install_providers(logs=True)

    from opentelemetry.trace import SpanKind

    import otel_memory  # after the providers, as opentelemetry-instrument orders it

    tracer = providers.tracer.get_tracer("opentelemetry.instrumentation.flask")
    server = SpanKind.SERVER

    rows = spec["rows"]

    def request() -> None:
        with tracer.start_as_current_span("GET /work", kind=server):
            work(rows)

    def floor() -> None:
        with tracer.start_as_current_span("GET /work", kind=server) as span:
            work(rows)
            span.set_attributes(ATTRIBUTES)

    result: dict[str, Any] = {"package": otel_memory.__file__}
    calls = spec["calls"]
    for case, fn in (("bare", request), ("floor", floor), ("request", request)):
        with tempfile.TemporaryDirectory(prefix="otel-memory-bench-") as log_dir:
            monitor = {"log_dir": log_dir, "interval_seconds": 3600,
                       "request_spans": case == "request"}  # fmt: skip
            otel_memory.start(write_config(log_dir, {}, monitor))
            for _ in range(min(calls, 2000)):  # warm-up: caches, lazy imports
                fn()
            providers.flush()

            def finish() -> None:
                otel_memory.stop()  # drains the histogram records still queued
                providers.flush()

            result[case] = measure(fn, calls, finish)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="median of this many rounds")
    parser.add_argument("--calls", type=int, default=5_000, help="requests per loop")
    parser.add_argument(
        "--rows", type=int, default=1000, help="rows each request builds, as servers.py's app"
    )
    parser.add_argument("--before", help="a directory holding another otel_memory to compare")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    trees = {"this tree": None} if args.before is None else {"before": args.before,
                                                             "this tree": None}  # fmt: skip
    print(f"{python_line()}; median of {args.rounds} interleaved rounds x {args.calls:,} "
          f"requests of {args.rows} rows, one fresh process per tree and round")
    runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
    for _ in range(args.rounds):
        for tree, path in trees.items():
            env = None
            if path is not None:
                env = {"PYTHONPATH": os.pathsep.join([path, os.environ.get("PYTHONPATH", "")])}
            runs[tree].append(run_worker(__file__, {"calls": args.calls, "rows": args.rows}, env))
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    header = f"{'tree':<12}{'case':<10}{'caller µs':>10}{'process µs':>12}"
    header += f"{'caller - bare':>15}{'process - bare':>16}"
    print(header)
    print("-" * len(header))
    for tree in trees:
        for case in CASES:
            caller = median([run[case]["caller"] for run in runs[tree]])
            process = median([run[case]["process"] for run in runs[tree]])
            extra_caller = median([r[case]["caller"] - r["bare"]["caller"] for r in runs[tree]])
            extra_process = median(
                [r[case]["process"] - r["bare"]["process"] for r in runs[tree]]
            )
            print(f"{tree:<12}{case:<10}{caller:>10.1f}{process:>12.1f}"
                  f"{extra_caller:>15.1f}{extra_process:>16.1f}")  # fmt: skip
        print(f"  ({runs[tree][0]['package']})")
    print("\nrequest - bare: what memory on a request span costs; floor - bare: the least it can"
          "\n(five attributes set by hand; their export is not counted: exporters drop).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
