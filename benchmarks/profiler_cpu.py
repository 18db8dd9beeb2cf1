"""CPU the heap profiler's thread costs on a 1M-object heap: v0.1 (a census every interval) next
to v0.2 (censuses right after full collections, reused while nothing changed), idle and busy.

    python benchmarks/profiler_cpu.py                 # interval 2 s, 20 s per contender
    python benchmarks/profiler_cpu.py --interval 5 --seconds 60

The thread's own CPU time is read from /proc/self/task/<tid>/stat (Linux), so the host's work
does not count. Per-hour figures scale the measured CPU per interval to the default 60 s
interval; 0.1 % of a core is 3.6 s/hour. "busy" runs a host thread that keeps 50,000 objects
alive for about a second at a time (young objects promoted, generation-1 collections) plus a
1,000 objects/s leak, so the interpreter makes full collections on its own; "gc-heavy" adds a
full collection by the host every second (the most trend censuses v0.2 can be asked for).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from otel_memory.activity.census import take_census
from otel_memory.base.config import load_config
from otel_memory.guards.profiler import Profiler

DEFAULT_INTERVAL = 60.0
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU of one thread of this process."""
    with open(f"/proc/self/task/{native_id}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND  # utime, stime


class Contender(Protocol):
    """A profiler thread under measurement."""

    def start(self) -> None: ...
    def close(self) -> None: ...
    def native_id(self) -> int: ...
    def censuses(self) -> int: ...


class EveryInterval:
    """v0.1: a census on every tick, whatever happened."""

    def __init__(self, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._censuses = 0

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            take_census()
            self._censuses += 1

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def native_id(self) -> int:
        return self._thread.native_id or 0

    def censuses(self) -> int:
        return self._censuses


class Current:
    """v0.2: the package's profiler thread."""

    def __init__(self, interval: float) -> None:
        self._profiler = Profiler(load_config(), interval=interval)

    def start(self) -> None:
        self._profiler.start()

    def close(self) -> None:
        self._profiler.close()

    def native_id(self) -> int:
        thread = self._profiler._thread  # the benchmark reads the thread's own CPU
        return 0 if thread is None else thread.native_id or 0

    def censuses(self) -> int:
        return self._profiler.stats.censuses


class Leak:
    """What the busy host keeps for good."""


@contextmanager
def host(kind: str) -> Iterator[None]:
    """``idle``; ``busy``: promoted churn and a small leak on a thread of its own;
    ``gc-heavy``: the same, and the host runs a full collection every second."""
    if kind == "idle":
        yield
        return
    stop = threading.Event()
    kept: list[Leak] = []

    def work() -> None:
        window: deque[list[int]] = deque(maxlen=50_000)
        last_collect = time.monotonic()
        while not stop.is_set():
            for i in range(5_000):
                window.append([i])
            kept.extend(Leak() for _ in range(100))
            if kind == "gc-heavy" and time.monotonic() - last_collect >= 1:
                gc.collect()
                last_collect = time.monotonic()
            time.sleep(0.1)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def measure(contender: Contender, interval: float, seconds: float) -> tuple[float, int]:
    """CPU seconds of the contender's thread over ``seconds`` after one warm-up interval (the
    first census is always taken), and the censuses it took meanwhile."""
    contender.start()
    time.sleep(interval + 0.5)
    before, taken = thread_cpu_seconds(contender.native_id()), contender.censuses()
    time.sleep(seconds)
    used = thread_cpu_seconds(contender.native_id()) - before
    contender.close()
    return used, contender.censuses() - taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--objects", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    heap: list[list[int]] = [[] for _ in range(args.objects)]  # noqa: F841  (the heap to census)
    started = time.perf_counter()
    census = take_census()
    one = time.perf_counter() - started
    print(f"heap: {census.total_objects:,} GC-tracked objects; one census {one * 1000:.0f} ms")
    print(f"interval {args.interval:g} s, {args.seconds:g} s per contender; per hour at 60 s:")
    header = ("host", "contender", "censuses", "CPU s", "s/hour", "% core")
    print("{:<8} {:<34} {:>8} {:>7} {:>8} {:>7}".format(*header))
    contenders: list[tuple[str, Callable[[float], Contender]]] = [
        ("v0.1 census every interval", EveryInterval),
        ("v0.2 after full gc / if changed", Current),
    ]
    for kind in ("idle", "busy", "gc-heavy"):
        for name, make in contenders:
            with host(kind):
                used, censuses = measure(make(args.interval), args.interval, args.seconds)
            per_hour = used / (args.seconds / args.interval) * (3600 / DEFAULT_INTERVAL)
            print(
                f"{kind:<8} {name:<34} {censuses:>8} {used:>7.2f} {per_hour:>8.2f}"
                f" {per_hour / 36:>6.3f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
