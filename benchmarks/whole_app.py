"""A whole asyncio service with tasks, against the same service with a bare span, and idle CPU.

    .venv/bin/python benchmarks/whole_app.py [--rounds 7] [--seconds 1.5] [--idle-seconds 60]

**Throughput.** A service keeps 50 requests in flight: 50 connection loops, each awaiting one
request after another, every request its own asyncio task (as an ASGI server runs them). A
request awaits once (the request arrives), does ``--work`` of CPU work (a calibrated loop), awaits
once more (the response goes out). Variants, each in a fresh worker process with the same
providers (tracer, meter and logger, as ``opentelemetry-instrument`` sets them up, exporters that
drop):

* ``bare span``: every request inside ``tracer.start_as_current_span``; otel-memory not started;
* ``tasks``: every request a ``@traced_task`` coroutine, ``otel_memory.start()`` (daily log);
* ``tasks + profiling``: the same with ``memory_profiling.enabled`` at its default 60 s;
* ``tasks, no histograms``: ``tasks`` with ``memory_monitor.task_histograms: false`` (what a
  service of many tiny tasks can choose; the spans keep the same numbers).

Requests/s over ``--seconds`` after a warm-up; rounds interleave every variant at every request
size; medians.

**Idle CPU.** A process holding a heap of ``--idle-objects`` GC-tracked objects starts the monitor
with profiling on; the process's CPU over ``--idle-seconds`` is measured, and the same with
profiling off. Two loads: ``idle`` (the main thread sleeps: the profiler may reuse its previous
census when no collection ran since) and ``light load`` (the main thread drops 20,000 small
reference cycles a second, so the collector runs and every tick takes a fresh census). The census
interval is shortened to ``--idle-interval`` (the metric reader's too) so that a short run holds
several cycles; the cost at the default 60 s is extrapolated, assuming the profiling's CPU is
proportional to the number of intervals: ``CPU/h = (idle CPU rate, profiling off) x 3600 +
(CPU per interval) x 60``, where the CPU per interval is the difference between the runs with
and without profiling divided by ``--idle-seconds / --idle-interval``. The first term is the idle
run's (the load's own CPU is not the monitor's) and counts the metric reader at the short
interval, so the estimate overstates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import (
    build_heap,
    install_providers,
    median,
    python_line,
    run_worker,
    write_config,
)

VARIANTS = ("bare", "tasks", "profiling", "no_histograms")
LABELS = {
    "bare": "bare SDK span", "tasks": "tasks", "profiling": "tasks + profiling",
    "no_histograms": "tasks, no histograms",
}
CONCURRENCY = 50


def busy(loops: int) -> int:
    """CPU work standing for a request's own work."""
    return sum(range(loops))


def calibrate(target_seconds: float) -> int:
    """Loops of :func:`busy` that take about ``target_seconds`` (best of a few tries)."""
    loops = 1000
    while True:
        best = min(_time_busy(loops) for _ in range(5))
        if best > 0.002:
            return max(1, round(loops * target_seconds / best))
        loops *= 2


def _time_busy(loops: int) -> float:
    started = time.perf_counter()
    busy(loops)
    return time.perf_counter() - started


async def serve(handler: Callable[[], Awaitable[None]], seconds: float) -> int:
    """Requests completed in ``seconds`` with :data:`CONCURRENCY` of them in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done = 0

    async def connection() -> None:
        nonlocal done
        while loop.time() < deadline:
            await asyncio.create_task(handler())  # one asyncio task per request
            done += 1

    await asyncio.gather(*(connection() for _ in range(CONCURRENCY)))
    return done


def app_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Requests/s of one variant at one request size, in this fresh process."""
    variant, loops, seconds = spec["variant"], spec["loops"], spec["seconds"]
    providers = install_providers(logs=True)

    import otel_memory
    from otel_memory import traced_task

    tracer = providers.tracer.get_tracer("benchmark")

    async def bare_request() -> None:
        with tracer.start_as_current_span("GET /items"):
            await asyncio.sleep(0)
            busy(loops)
            await asyncio.sleep(0)

    @traced_task("GET /items")
    async def task_request() -> None:
        await asyncio.sleep(0)
        busy(loops)
        await asyncio.sleep(0)

    handler = bare_request if variant == "bare" else task_request
    with tempfile.TemporaryDirectory(prefix="otel-memory-bench-") as log_dir:
        if variant != "bare":
            profiling = {"enabled": variant == "profiling"}
            monitor: dict[str, Any] = {"log_dir": log_dir}
            if variant == "no_histograms":
                monitor["task_histograms"] = False
            otel_memory.start(write_config(log_dir, profiling, monitor))
        try:
            asyncio.run(serve(handler, 0.3))  # warm-up
            started = time.perf_counter()
            done = asyncio.run(serve(handler, seconds))
            elapsed = time.perf_counter() - started
        finally:
            otel_memory.stop()
    providers.flush()
    return {"rps": done / elapsed}


class _Snapshots(logging.Handler):
    """Counts the snapshot log's records (one per census cycle)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first.set()


def churn(seconds: float) -> None:
    """Drop 200 small reference cycles every 10 ms: the collector runs, nothing is retained.

    (Garbage freed by reference counting would not do: it never triggers a collection.)
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i in range(200):
            cycle: dict[str, Any] = {"i": i}
            cycle["self"] = cycle
        del cycle
        time.sleep(0.01)


def idle_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Process CPU while idle with a large heap, profiling on or off."""
    heap = build_heap(spec["objects"])
    interval = spec["interval"]
    providers = install_providers(logs=True, metric_interval_ms=interval * 1000)
    snapshots = _Snapshots()
    profiler_log = logging.getLogger("memory_profiler")  # SPEC: the snapshot log's logger
    profiler_log.addHandler(snapshots)
    profiler_log.setLevel(logging.INFO)  # a host that turns profiling on reads the snapshots

    import otel_memory

    with tempfile.TemporaryDirectory(prefix="otel-memory-bench-") as log_dir:
        profiling = {"enabled": spec["profiling"], "interval_seconds": interval}
        otel_memory.start(write_config(log_dir, profiling, {"log_dir": log_dir}))
        try:
            if spec["profiling"]:
                snapshots.first.wait(interval + 10)  # start-up and first census stay outside
            else:
                time.sleep(1)
            cpu, count = time.process_time(), snapshots.count
            if spec["load"]:
                churn(spec["seconds"])
            else:
                time.sleep(spec["seconds"])
            cpu, count = time.process_time() - cpu, snapshots.count - count
        finally:
            otel_memory.stop()
    providers.flush()
    return {"cpu": cpu, "snapshots": count, "seconds": spec["seconds"], "heap": len(heap)}


def throughput(args: argparse.Namespace) -> None:
    sizes = {"~0.1 ms": calibrate(0.0001), "~0.45 ms": calibrate(0.00045)}
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for size, loops in sizes.items():
            for variant in VARIANTS:
                spec = {"variant": variant, "loops": loops, "seconds": args.seconds}
                runs.setdefault((size, variant), []).append(
                    run_worker(__file__, {"mode": "app", **spec})["rps"]
                )
    print(f"\nasyncio service, {CONCURRENCY} requests in flight, median requests/s of "
          f"{args.rounds} interleaved rounds x {args.seconds} s")
    header = f"{'work per request':<18} {'variant':<20} {'requests/s':>10} {'% of bare':>9}"
    print(header)
    print("-" * len(header))
    for size, loops in sizes.items():
        bare = median(runs[(size, "bare")])
        for variant in VARIANTS:
            rps = median(runs[(size, variant)])
            print(f"{size:<18} {LABELS[variant]:<20} {rps:>10,.0f} {rps / bare:>9.0%}")
        work_ms = min(_time_busy(loops) for _ in range(20)) * 1000
        print(f"{'':<18} (the work loop alone: {work_ms:.2f} ms)")
    print("Goals (issue 10): tasks >= 85 % of bare at ~0.1 ms, >= 97 % at ~0.45 ms.")


def idle(args: argparse.Namespace) -> None:
    print(f"\nidle CPU, ~{args.idle_objects:,} GC-tracked objects built, "
          f"{args.idle_seconds:.0f} s per run, census every {args.idle_interval:.0f} s "
          "extrapolated to the default 60 s")
    header = (f"{'load':<12} {'CPU s off':>9} {'CPU s on':>9} {'snapshots':>9} "
              f"{'ms/interval':>11} {'s/hour':>7} {'% core':>7}")
    print(header)
    print("-" * len(header))
    idle_rate = 0.0
    for load in (False, True):
        spec = {"mode": "idle", "objects": args.idle_objects, "interval": args.idle_interval,
                "seconds": args.idle_seconds, "load": load}
        off = run_worker(__file__, {**spec, "profiling": False})
        on = run_worker(__file__, {**spec, "profiling": True})
        if not load:
            idle_rate = off["cpu"] / off["seconds"]
        per_cycle = max(on["cpu"] - off["cpu"], 0.0) * args.idle_interval / args.idle_seconds
        per_hour = idle_rate * 3600 + per_cycle * 60
        print(f"{'light load' if load else 'idle':<12} {off['cpu']:>9.2f} {on['cpu']:>9.2f} "
              f"{on['snapshots']:>9} {per_cycle * 1000:>11.0f} {per_hour:>7.2f} "
              f"{per_hour / 36:>6.3f}%")
    print("Goal (issue 10): idle, profiling on at 60 s, 1M-object heap: <= 0.1 % of a core "
          "(3.6 s/hour).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured time per run")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="0 skips idle CPU")
    parser.add_argument("--idle-interval", type=float, default=10.0, help="census interval")
    parser.add_argument("--idle-objects", type=int, default=1_000_000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = app_worker(spec) if spec["mode"] == "app" else idle_worker(spec)
        print(json.dumps(result))
        return 0
    print(python_line())
    if not args.skip_throughput:
        throughput(args)
    if args.idle_seconds > 0:
        idle(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
