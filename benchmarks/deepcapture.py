"""What deep capture costs: nothing much for tasks that are not traced, a slowdown while tracing.

    .venv/bin/python benchmarks/deepcapture.py [--repeat 5]

Three tables, each case measured in the same run as its peers (best of ``--repeat`` rounds):

1. Per task that is never traced (the common case, on the task hot path): a bare call, a dict
   insert + pop (the least any registry costs), ``task_started`` + ``task_ended``; and per
   ``sampled`` call with 10 open tasks, none grown.
2. An allocation-heavy loop (building 100,000 small dicts and tuples) with tracemalloc off, and
   while a task is traced with ``frames=1`` and ``frames=16``: the slowdown a traced task pays.
3. The report at the end of a traced task holding 10,000 / 100,000 / 1,000,000 live blocks: two
   snapshots (tracing started by deep capture: one snapshot) and their statistics.
4. Allocation profiles (``deep_capture.profiles``): what a traced task's end adds on the task's
   thread for 10,000 live blocks allocated 20 calls deep at 50 sites, against the bare baseline
   of an untraced task's end, with 1 and 16 frames: ``task_ended`` (snapshot, grouping, the
   event's top sites) and handing the stacks to the profiles thread; then, off the caller's
   thread, what that thread spends building the OTLP request and the pprof file (goal: the
   task's end adds <= 50 ms).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Callable

from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_memory.guards.deepcapture import DeepCapture
from otel_memory.sinks.profiles import ProfileSink

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


SPAN = NonRecordingSpan(
    SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
)


def _allocate_at(site: int, depth: int, count: int) -> list[object]:
    """``count`` blocks allocated ``depth`` calls deep, at one of 50 sites."""
    if depth:
        return _allocate_at(site, depth - 1, count)
    return [[site, n] for n in range(count)]


def profile_end_seconds(blocks: int, frames: int, sink: ProfileSink | None) -> tuple[float, float]:
    """(caller's time at the task's end, profiles thread's time for it) for a traced task."""
    capture = DeepCapture(rss_growth_bytes=1, frames=frames)
    key = object()
    capture.task_started(key, "traced", 0)
    capture.sampled(MB)
    # Each site's list holds blocks // 50 lists (plus the list itself): ~blocks live blocks.
    held = [_allocate_at(site, 20, blocks // 50 - 1) for site in range(50)]
    start = time.perf_counter()
    report = capture.task_ended(key)
    if sink is not None and report is not None:
        sink.submit_task("traced", SPAN, report.stacks)
    caller = time.perf_counter() - start
    background = 0.0
    if sink is not None:
        start = time.perf_counter()
        sink.flush(60)
        background = time.perf_counter() - start
    del held
    return caller, background


def untraced_end_seconds() -> float:
    """The bare baseline: an untraced task's start and end in deep capture."""
    capture = DeepCapture(rss_growth_bytes=200 * MB)
    key = object()
    capture.task_started(key, "task", 0)
    start = time.perf_counter()
    capture.task_ended(key)
    return time.perf_counter() - start


def profile_table(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        # No exporter: what is measured is building, not a network; pprof files are written.
        sink = ProfileSink(dict, pprof_dir=folder)
        rows: dict[str, tuple[float, float]] = {
            "bare: untraced task's end": (
                min(untraced_end_seconds() for _ in range(repeat)), 0.0
            )
        }
        for frames in (1, 16):
            for name, used in ((f"traced end, frames={frames}", None),
                               (f"traced end + profile, frames={frames}", sink)):
                rounds = [profile_end_seconds(10_000, frames, used) for _ in range(repeat)]
                rows[name] = min(rounds)
        sink.close()
    print(f"\n{'10,000 live blocks, 20 calls deep':44} {'caller ms':>10} {'thread ms':>10}")
    for name, (caller, background) in rows.items():
        print(f"{name:44} {caller * 1e3:10.3f} {background * 1e3:10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profiles-only", action="store_true", help="only table 4")
    args = parser.parse_args(argv)
    if tracemalloc.is_tracing():
        parser.error("run without PYTHONTRACEMALLOC: the baseline must be untraced")
    print(f"Python {platform.python_version()} on {platform.machine()}, best of {args.repeat}")
    if args.profiles_only:
        profile_table(args.repeat)
        return 0

    hot = hot_path_cases()
    best = dict.fromkeys(hot, float("inf"))
    for _ in range(args.repeat):
        for name, func in hot.items():
            best[name] = min(best[name], ns_per_call(func))
    print(f"\n{'untraced task, per call':44} {'ns':>10}")
    for name, ns in best.items():
        print(f"{name:44} {ns:10.0f}")

    modes: dict[str, int | None] = {"tracemalloc off": None, "traced, frames=1": 1}
    modes["traced, frames=16"] = 16
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
    profile_table(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
