"""What deep capture costs: nothing much for tasks that are not traced, a slowdown while tracing.

    .venv/bin/python benchmarks/deepcapture.py [--repeat 5]

Three tables, each case measured in the same run as its peers (best of ``--repeat`` rounds):

1. Per task that is never traced (the common case, on the task hot path): a bare call, a dict
   insert + pop (the least any registry costs), ``task_started`` + ``task_ended``; and per
   ``sampled`` call with 10 open tasks, none grown.
2. An allocation-heavy loop (building 100,000 small dicts and tuples) with tracemalloc off, and
   while a task is traced with ``frames=1`` and ``frames=10``: the slowdown a traced task pays.
3. The report at the end of a traced task holding 10,000 / 100,000 / 1,000,000 live blocks: two
   snapshots (tracing started by deep capture: one snapshot) and their statistics.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable

from otel_memory.guards.deepcapture import DeepCapture

MB = 1_048_576


def ns_per_call(func: Callable[[], object]) -> float:
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    return timer.timeit(number) / number * 1e9


def hot_path_cases() -> dict[str, Callable[[], object]]:
    capture = DeepCapture(rss_growth_bytes=200 * MB)
    registry: dict[int, object] = {}
    key = object()

    def bare(k: object, name: str, rss: int) -> None:
        pass

    def dict_insert_pop() -> None:
        registry[id(key)] = key
        registry.pop(id(key))

    def started_ended() -> None:
        capture.task_started(key, "task", 100 * MB)
        capture.task_ended(key)

    sampling = DeepCapture(rss_growth_bytes=200 * MB)
    for n in range(10):
        sampling.task_started(object(), f"open-{n}", 100 * MB)
    return {
        "bare call, 3 arguments": lambda: bare(key, "task", 0),
        "dict insert + pop": dict_insert_pop,
        "task_started + task_ended (not traced)": started_ended,
        "sampled(), 10 open tasks, none grown": lambda: sampling.sampled(150 * MB),
    }


def workload() -> None:
    """Allocation-heavy pure Python: 100,000 small dicts and tuples, kept until the end."""
    rows = [{"id": n, "name": str(n), "pair": (n, n + 1)} for n in range(100_000)]
    del rows


def traced_workload_seconds(frames: int | None) -> float:
    """The workload's time, with a task traced by deep capture (``frames``) or no tracing."""
    if frames is None:
        start = time.perf_counter()
        workload()
        return time.perf_counter() - start
    capture = DeepCapture(rss_growth_bytes=1, frames=frames)
    key = object()
    capture.task_started(key, "traced", 0)
    capture.sampled(MB)  # grown: tracing starts now
    start = time.perf_counter()
    workload()
    elapsed = time.perf_counter() - start
    capture.task_ended(key)
    return elapsed


def report_seconds(blocks: int) -> float:
    """Time of ``task_ended`` for a traced task holding ``blocks`` live allocations."""
    capture = DeepCapture(rss_growth_bytes=1)
    key = object()
    capture.task_started(key, "traced", 0)
    capture.sampled(MB)
    held = [object() for _ in range(blocks)]
    start = time.perf_counter()
    capture.task_ended(key)
    elapsed = time.perf_counter() - start
    del held
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if tracemalloc.is_tracing():
        parser.error("run without PYTHONTRACEMALLOC: the baseline must be untraced")
    print(f"Python {platform.python_version()} on {platform.machine()}, best of {args.repeat}")

    hot = hot_path_cases()
    best = dict.fromkeys(hot, float("inf"))
    for _ in range(args.repeat):
        for name, func in hot.items():
            best[name] = min(best[name], ns_per_call(func))
    print(f"\n{'untraced task, per call':44} {'ns':>10}")
    for name, ns in best.items():
        print(f"{name:44} {ns:10.0f}")

    modes: dict[str, int | None] = {"tracemalloc off": None, "traced, frames=1": 1}
    modes["traced, frames=10"] = 10
    loop = dict.fromkeys(modes, float("inf"))
    for _ in range(args.repeat):
        for name, frames in modes.items():
            loop[name] = min(loop[name], traced_workload_seconds(frames))
    base = loop["tracemalloc off"]
    print(f"\n{'allocation-heavy loop':44} {'ms':>10} {'slowdown':>10}")
    for name, seconds in loop.items():
        print(f"{name:44} {seconds * 1e3:10.1f} {seconds / base:9.2f}x")

    sizes = (10_000, 100_000, 1_000_000)
    ends = dict.fromkeys(sizes, float("inf"))
    for _ in range(args.repeat):
        for blocks in sizes:
            ends[blocks] = min(ends[blocks], report_seconds(blocks))
    print(f"\n{'task_ended of a traced task':44} {'ms':>10}")
    for blocks, seconds in ends.items():
        print(f"{f'{blocks:,} live blocks':44} {seconds * 1e3:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
