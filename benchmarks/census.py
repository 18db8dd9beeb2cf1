"""Heap census speed and GIL stalls, against the peers as users call them, in the same run.

    .venv/bin/python benchmarks/census.py [--objects 1300000] [--rounds 7]

Builds a heap of ``--objects`` new GC-tracked objects (instances of two classes, dicts, lists,
tuples) and times, in ``--rounds`` interleaved rounds (median reported):

* ``gc.get_objects()`` alone: the floor every census pays, and a call that cannot be chunked;
* ``take_census()``: counts and exact shallow sizes per class (ours), through the compiled pass
  when it is installed, and through the pure-Python pass (``accelerated=False``) in any case;
* ``objgraph.typestats()`` with its default arguments, as its users call it: counts only;
* ``objgraph.typestats(shortnames=False)``: module-qualified names like ours, 1.8x slower, shown
  for information only (comparing with it would flatter us);
* pympler's ``summarize(muppy.get_objects())``: counts and sizes. It is slow, so ``summarize``
  runs once on a slice of the objects and is scaled up linearly; the table says so.

Wall time and the calling thread's CPU time are both shown: on a loaded machine the census's
``time.sleep(0)`` between chunks (which hands the GIL to waiting threads) also lets other
processes run, which costs wall time but no CPU.

Stalls: a ticker thread sleeps 1 ms in a loop and records the longest gap between its wake-ups,
i.e. the longest time another thread waited for the GIL, during each ``take_census()`` pass and
during ``gc.get_objects()`` alone, interleaved, one of each per round.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
from collections.abc import Callable

import objgraph
from _common import build_heap, python_line
from pympler import muppy, summary

from otel_memory.activity.census import ACCELERATED, take_census


class Ticker:
    """A thread that wakes every millisecond and remembers the longest gap between wake-ups."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        time.sleep(0.05)  # let it settle into its loop
        self.max_gap = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one call."""
    gc.collect()  # a collection triggered inside one contender would be charged to it
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def stall(fn: Callable[[], object]) -> float:
    """The longest gap a 1 ms ticker saw while ``fn`` ran."""
    gc.collect()
    with Ticker() as ticker:
        fn()
    return ticker.max_gap


def pympler_estimate(sample_size: int) -> tuple[float, float, int]:
    """(muppy.get_objects seconds, summarize seconds scaled to all objects, objects)."""
    started = time.perf_counter()
    objs = muppy.get_objects()
    muppy_seconds = time.perf_counter() - started
    total = len(objs)
    part = objs[:sample_size]
    started = time.perf_counter()
    summary.summarize(part)
    summarize_seconds = (time.perf_counter() - started) * total / len(part)
    del objs, part
    return muppy_seconds, summarize_seconds, total


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_300_000, help="new GC-tracked objects")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pympler-sample", type=int, default=50_000)
    args = parser.parse_args()

    heap = build_heap(args.objects)
    tracked = len(gc.get_objects())
    census = take_census()

    compiled = "otel_memory take_census() compiled (counts + sizes)"
    pure = "otel_memory take_census() pure Python (counts + sizes)"
    contenders: dict[str, Callable[[], object]] = {
        "gc.get_objects() alone (floor)": gc.get_objects,
        compiled: take_census,
        pure: lambda: take_census(accelerated=False),
        "objgraph.typestats() defaults (counts only)": objgraph.typestats,
        "objgraph.typestats(shortnames=False) (info)": lambda: objgraph.typestats(
            shortnames=False
        ),
    }
    if not ACCELERATED:
        del contenders[compiled]
    floor, objgraph_default = next(iter(contenders)), "objgraph.typestats() defaults (counts only)"
    ours = [name for name in (compiled, pure) if name in contenders]
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    stalls: dict[str, list[float]] = {name: [] for name in (floor, *ours)}
    for _ in range(args.rounds):  # interleaved: load from other processes hits all alike
        for name, fn in contenders.items():
            wall, cpu = timed(fn)
            times[name].append(wall)
            cpus[name].append(cpu)
        for name, gaps in stalls.items():
            gaps.append(stall(contenders[name]))
    muppy_s, summarize_s, pympler_objects = pympler_estimate(args.pympler_sample)
    median = {name: statistics.median(values) for name, values in times.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpus.items()}

    print(f"heap: {tracked:,} GC-tracked objects ({args.objects:,} built here), "
          f"{len(census.counts):,} classes, {census.total_size / 2**20:,.1f} MB shallow; "
          f"{len(heap):,} top-level items")
    print(f"{python_line()}; median of {args.rounds} interleaved rounds")
    print(f"compiled census pass (otel_memory.activity._census): "
          f"{'installed' if ACCELERATED else 'NOT installed, pure Python only'}")
    print()
    print(f"{'what':<54} {'wall s':>7} {'min s':>7} {'x objgraph':>10} {'CPU s':>7} "
          f"{'x objgraph':>10}")
    for name, values in times.items():
        print(f"{name:<54} {median[name]:>7.3f} {min(values):>7.3f} "
              f"{median[name] / median[objgraph_default]:>10.2f} {median_cpu[name]:>7.3f} "
              f"{median_cpu[name] / median_cpu[objgraph_default]:>10.2f}")
    sampled = f"pympler summarize(muppy.get_objects()) (scaled from {args.pympler_sample:,})"
    pympler_s = muppy_s + summarize_s
    print(f"{sampled:<54} {pympler_s:>7.3f} {'once':>7} "
          f"{pympler_s / median[objgraph_default]:>10.2f}")
    print(f"  (pympler counted {pympler_objects:,} objects: it also follows referents)")
    print()
    print(f"{'take_census / objgraph.typestats() defaults':<54} {'wall':>6} {'CPU':>6}  "
          f"target <= 0.40")
    for name in ours:
        wall = median[name] / median[objgraph_default]
        cpu = median_cpu[name] / median_cpu[objgraph_default]
        print(f"{name:<54} {wall:>6.2f} {cpu:>6.2f}  {verdict(max(wall, cpu) <= 0.40)}")
    print()
    print(f"{'longest GIL stall seen by a 1 ms ticker':<54} {'median':>7} {'worst':>7} "
          f"{'x floor':>7}  (ms; target <= 1.2x)")
    floor_stall = statistics.median(stalls[floor])
    for name, gaps in stalls.items():
        ratio = statistics.median(gaps) / floor_stall
        met = "" if name == floor else verdict(ratio <= 1.2)
        print(f"{name:<54} {statistics.median(gaps) * 1000:>7.1f} {max(gaps) * 1000:>7.1f} "
              f"{ratio:>7.2f}  {met}")


if __name__ == "__main__":
    main()
