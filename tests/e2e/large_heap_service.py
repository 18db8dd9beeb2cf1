"""A service with a large long-lived heap, busy workers, and optionally a leak (e2e driver).

    opentelemetry-instrument python tests/e2e/large_heap_service.py --heap 800000 \\
        --leak-per-second 2000 --seconds 50
    opentelemetry-instrument python tests/e2e/large_heap_service.py --heap 800000 \\
        --garbage-per-second 3000 --gc-off 40 --gc-on 5 --seconds 90

The heap: ``--heap`` GC-tracked objects (``Record``\\ s, each owning a list) kept for the whole
run, so the interpreter's own full collections are rare (one needs a quarter of it in new
survivors). Workers handle ``Request``\\ s: each request is a reference cycle (garbage only the
cyclic collector frees), ``--garbage-per-second`` of them in all, and each worker holds its
current batch in a local variable while it works (in-flight objects reachable from its frame).
``--gc-off S --gc-on T`` alternates ``gc.disable()`` for S seconds with ``gc.enable()`` for T,
so garbage piles up for S seconds at a time. ``--leak-per-second N`` keeps N ``Leaked`` objects a
second in the module-level dict ``_kept`` and never drops them.

It prints ``leak started at: <epoch seconds>`` once the heap is built, and at exit one line
``stats: {...}`` with the times (seconds after the leak's start) when the interpreter's own full
collections finished and the profiler's counters (censuses, reachability checks). It never
calls ``gc.collect()``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from dataclasses import asdict, is_dataclass
from typing import Any

STARTED_PREFIX = "leak started at:"
STATS_PREFIX = "stats:"
PROFILER_THREAD = "otel-memory-profiler"


class Record:
    """A long-lived heap object (with its list: two GC-tracked objects)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tags: list[int] = [n]


class Request:
    """A request in a reference cycle with itself: garbage once handled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.me = self


class Leaked:
    """What the leak keeps."""

    def __init__(self, n: int) -> None:
        self.n = n


_kept: dict[int, Leaked] = {}
_heap: list[Record] = []


def _leak(per_second: int, stop: threading.Event) -> None:
    n, batch = 0, max(1, per_second // 10)
    while not stop.wait(0.1):
        for _ in range(batch):
            _kept[n] = Leaked(n)
            n += 1


def _work(per_second: int, stop: threading.Event) -> None:
    per_batch = max(1, per_second // 20)
    while not stop.wait(0.05):
        in_flight = [Request(n) for n in range(per_batch)]  # reachable from this frame meanwhile
        time.sleep(0.005)
        del in_flight


def _profiler_stats() -> dict[str, Any]:
    for thread in threading.enumerate():
        if thread.name == PROFILER_THREAD:
            stats = getattr(getattr(getattr(thread, "_target", None), "__self__", None), "stats", None)
            if is_dataclass(stats) and not isinstance(stats, type):
                return asdict(stats)
    return {}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heap", type=int, default=800_000)
    parser.add_argument("--leak-per-second", type=int, default=0)
    parser.add_argument("--garbage-per-second", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--gc-off", type=float, default=0.0)
    parser.add_argument("--gc-on", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=50.0)
    args = parser.parse_args()

    _heap.extend(Record(n) for n in range(args.heap // 2))
    started = time.time()
    full: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(round(time.time() - started, 2))

    gc.callbacks.append(on_gc)
    print(STARTED_PREFIX, started, flush=True)
    stop = threading.Event()
    threads = []
    if args.leak_per_second:
        threads.append(threading.Thread(target=_leak, args=(args.leak_per_second, stop)))
    for i in range(args.workers if args.garbage_per_second else 0):
        share = args.garbage_per_second // args.workers
        threads.append(threading.Thread(target=_work, args=(share, stop), name=f"worker-{i}"))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            if args.gc_off:
                gc.disable()
                time.sleep(min(args.gc_off, max(0.0, deadline - time.monotonic())))
                gc.enable()
            time.sleep(min(args.gc_on, max(0.0, deadline - time.monotonic())))
    finally:
        gc.enable()
        stop.set()
        for thread in threads:
            thread.join()
        stats = {"full_collections": full, "profiler": _profiler_stats(), "kept": len(_kept)}
        print(STATS_PREFIX, json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
