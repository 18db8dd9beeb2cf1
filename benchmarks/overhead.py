"""What a task costs, as a multiple of a bare SDK span measured in the same process and round.

    .venv/bin/python benchmarks/overhead.py [--rounds 7] [--calls 10000]

Setups (each round runs every setup once, in order, each in a fresh worker process; medians of
``--rounds`` rounds are printed):

* ``monitor stopped``: SDK tracer and meter providers, a ``BatchSpanProcessor`` and a periodic
  metric reader (exporters that drop), ``otel_memory.start()`` never called;
* ``monitor started (daily log)``: the same, plus ``otel_memory.start(config)`` with the daily
  log in a temp dir and periodic lines hourly (out of the way), no SDK ``LoggerProvider`` (the
  OTel log API stays the no-op default);
* ``+ SDK LoggerProvider, export_logs: X``: what ``opentelemetry-instrument`` sets up (tracer,
  meter and logger providers with batch processors), for ``export_logs`` ``events`` and ``all``
  (on a version without ``events``, v0.1's ``true``, i.e. ``all``, and the ``events`` row is
  skipped);
* ``task_histograms: false``: the ``events`` setup without the two task histogram records
  (skipped on versions without ``events``).

In every worker, after a warm-up, three loops of ``--calls`` calls each run back to back:
a bare span (``tracer.start_as_current_span``), a bare span with the 11 attributes of a task
span (the floor: what a task must pay at least), and a task (an empty ``@traced_task``
function). For each loop: the caller thread's CPU (``time.thread_time``), the whole process's
CPU (``time.process_time``, so the batch processors' and the monitor's threads count too; the
loop ends after the providers are flushed and, when the monitor runs, after
``otel_memory.stop()``, which drains what the monitor still holds) and wall time.
Only the public API is used: the same script measures any version of the package.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _common import (
    export_logs_values,
    install_providers,
    median,
    python_line,
    run_worker,
    write_config,
)

SETUPS = ("stopped", "started", "logs_events", "logs_all", "no_histograms")
LABELS = {
    "stopped": "task, monitor stopped",
    "started": "task, monitor started (daily log)",
    "logs_events": "task, + SDK LoggerProvider, export_logs: {events}",
    "logs_all": "task, + SDK LoggerProvider, export_logs: {all}",
    "no_histograms": "task, export_logs: {events}, task_histograms: false",
}
ATTRIBUTES = {  # the 11 numeric attributes of a task span, as a task sets them
    "memory.rss.start": 250_000_000, "memory.vms.start": 500_000_000,
    "memory.system.available.start": 1_000_000_000, "memory.system.free_ratio.start": 0.5,
    "memory.limit": 2_000_000_000, "memory.rss.end": 260_000_000, "memory.vms.end": 510_000_000,
    "memory.rss.delta": 10_000_000, "memory.vms.delta": 10_000_000,
    "memory.rss.peak": 261_000_000, "memory.system.available.end": 990_000_000,
}


def measure(fn: Callable[[], None], calls: int, finish: Callable[[], None]) -> dict[str, float]:
    """Per-call microseconds: caller thread CPU, process CPU (through ``finish``) and wall."""
    gc.collect()
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    for _ in range(calls):
        fn()
    thread = time.thread_time() - thread
    finish()
    wall, process = time.perf_counter() - wall, time.process_time() - process
    scale = 1e6 / calls
    return {"caller": thread * scale, "process": process * scale, "wall": wall * scale}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One setup in this fresh process: bare span, span + 11 attributes, task."""
    setup, calls = spec["setup"], spec["calls"]
    providers = install_providers(logs=setup.startswith("logs") or setup == "no_histograms")

    import otel_memory  # after the providers, as opentelemetry-instrument orders it
    from otel_memory import traced_task

    tracer = providers.tracer.get_tracer("benchmark")

    def bare_span() -> None:
        with tracer.start_as_current_span("bench"):
            pass

    def span_with_attributes() -> None:
        with tracer.start_as_current_span("bench") as span:
            span.set_attributes(ATTRIBUTES)

    @traced_task("bench")
    def task() -> None:
        pass

    with tempfile.TemporaryDirectory(prefix="otel-memory-bench-") as log_dir:
        monitor: dict[str, Any] = {"log_dir": log_dir, "interval_seconds": 3600}
        if spec.get("export_logs"):
            monitor["export_logs"] = spec["export_logs"]
        if spec.get("task_histograms") is False:
            monitor["task_histograms"] = False
        if setup != "stopped":
            otel_memory.start(write_config(log_dir, {}, monitor))
        for fn in (bare_span, span_with_attributes, task):  # warm-up: caches, lazy imports
            for _ in range(min(calls, 1000)):
                fn()
        providers.flush()
        result = {
            "bare": measure(bare_span, calls, providers.flush),
            "floor": measure(span_with_attributes, calls, providers.flush),
        }

        def finish() -> None:
            if setup != "stopped":
                otel_memory.stop()  # drains whatever the monitor still holds
            providers.flush()

        result["task"] = measure(task, calls, finish)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="median of this many rounds")
    parser.add_argument("--calls", type=int, default=10_000, help="calls per loop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    events, all_ = export_logs_values()
    setups = [s for s in SETUPS if events or s not in ("logs_events", "no_histograms")]
    spec_of = {
        "stopped": {}, "started": {},
        "logs_events": {"export_logs": events}, "logs_all": {"export_logs": all_},
        "no_histograms": {"export_logs": events, "task_histograms": False},
    }
    print(f"{python_line()}; median of {args.rounds} interleaved rounds x {args.calls:,} calls, "
          "one fresh process per setup and round")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    for _ in range(args.rounds):
        for setup in setups:
            spec = {"setup": setup, "calls": args.calls, **spec_of[setup]}
            runs[setup].append(run_worker(__file__, spec))
    print_table(setups, runs, {"events": events, "all": str(all_).lower()})
    if not events:
        print("export_logs: events does not exist in this version (v0.1: true/false): "
              "that row is skipped; 'true' exports every line, as 'all' does")
    return 0


def print_table(
    setups: list[str], runs: dict[str, list[dict[str, Any]]], names: dict[str, str]
) -> None:
    """One row per setup: µs per call and ratios to the bare span of the same worker."""

    def med(setup: str, case: str, clock: str) -> float:
        return median([run[case][clock] for run in runs[setup]])

    def ratio(setup: str, case: str, clock: str) -> float:
        return median([run[case][clock] / run["bare"][clock] for run in runs[setup]])

    header = (f"{'case':<50} {'caller µs':>9} {'x span':>6}  {'process µs':>10} {'x span':>6}"
              f"  {'bg share':>8} {'wall µs':>8}")
    print()
    print(header)
    print("-" * len(header))
    first = setups[0]
    for label, setup, case in (
        ("bare SDK span (reference)", first, "bare"),
        ("SDK span + 11 attributes (the floor)", first, "floor"),
        *((LABELS[s].format(**names), s, "task") for s in setups),
    ):
        caller, process = med(setup, case, "caller"), med(setup, case, "process")
        share = median([1 - run[case]["caller"] / run[case]["process"] for run in runs[setup]])
        print(f"{label:<50} {caller:>9.1f} {ratio(setup, case, 'caller'):>6.2f}  "
              f"{process:>10.1f} {ratio(setup, case, 'process'):>6.2f}  "
              f"{share:>8.0%} {med(setup, case, 'wall'):>8.1f}")
    print()
    print("x span: median over rounds of (this loop / the bare-span loop of the same process).")
    print("bg share: the part of the process CPU spent off the caller's thread (batch")
    print("processors, the monitor's threads, flush at the end of the loop).")
    print("Goals (issue 10): events: caller <= 2.0x, process <= 3x; all: caller <= 2.5x;")
    print("monitor stopped: caller <= 1.6x.")


if __name__ == "__main__":
    sys.exit(main())
