"""The daily log under pressure: lines written, RSS growth, and what a worker process pays.

    .venv/bin/python benchmarks/backpressure.py [--tasks 200000] [--threads 8]

Two measurements, each in a fresh worker process with SDK providers whose exporters drop and
the monitor started (daily log in a temp dir, default config):

* ``burst``: ``--threads`` threads run ``--tasks`` empty tasks in all, as fast as they can.
  RSS (``/proc/self/statm``) is read when a fifth of the tasks have ended (the warm-up: the
  queue has filled and the allocator's pools hold what a full queue needs) and again after the
  last line is written; the growth between them, per task after warm-up, is the backlog's cost.
  ``monitor stopped`` is the floor (spans only: the SDK and the allocator grow too); the row
  with a queue of 100,000 events is v0.2's size, kept for comparison. The ``1 arena`` rows run
  with ``MALLOC_ARENA_MAX=1``: glibc gives each of the 8 threads a malloc arena of its own,
  which grows lazily after the warm-up whatever the threads do; with one arena that growth is
  gone and what remains is the monitor's and the SDK's own.
* ``worker``: one thread, 10,000 tasks: the caller's CPU per task in the parent and in a forked
  child, where a task's END writes the queue in the caller (the child may end with
  ``os._exit()`` as soon as its work returns).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

from _common import install_providers, python_line, run_worker, write_config

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _start(directory: str) -> None:
    import otel_memory

    otel_memory.start(write_config(directory, {}, {"log_dir": directory, "retention_days": 0,
                                                   "interval_seconds": 3600}))


def _task_lines(directory: str) -> int:
    count = 0
    for name in os.listdir(directory):
        if name.startswith("memory_"):
            with open(os.path.join(directory, name)) as log:
                count += sum(1 for line in log if "TASK" in line)
    return count


def _burst(spec: dict[str, Any]) -> dict[str, Any]:
    import otel_memory
    from otel_memory import api as monitor
    from otel_memory import traced_task
    from otel_memory.runtime.runtime import get_runtime

    providers = install_providers(logs=False)
    tasks_n, threads_n = spec["tasks"], spec["threads"]
    per_thread = tasks_n // threads_n
    with tempfile.TemporaryDirectory() as directory:
        if spec["capacity"] >= 0:  # -1: the floor, the monitor never started
            _start(directory)
        events = get_runtime().events
        if spec["capacity"] > 0:
            events.capacity = spec["capacity"]
        done = [0] * threads_n

        def worker(n: int) -> None:
            for i in range(per_thread):
                with traced_task("burst"):
                    pass
                done[n] = i + 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        warm_at = per_thread * threads_n // 5
        longest = 0
        while sum(done) < warm_at:
            longest = max(longest, len(events._queue))
            time.sleep(0.001)
        warm_tasks, warm_rss = sum(done), _rss()
        while any(t.is_alive() for t in threads):
            longest = max(longest, len(events._queue))
            time.sleep(0.001)
        elapsed = time.perf_counter() - started
        monitor.flush()
        providers.flush()
        end_rss = _rss()
        dropped = events.dropped
        otel_memory.stop()
        written = _task_lines(directory)
    after = per_thread * threads_n - warm_tasks
    return {"expected": 2 * per_thread * threads_n, "written": written, "dropped": dropped,
            "warm_rss": warm_rss, "end_rss": end_rss, "after": after, "longest": longest,
            "rate": per_thread * threads_n / elapsed}


def _loop(n: int) -> float:
    from otel_memory import traced_task

    started = time.thread_time()
    for _ in range(n):
        with traced_task("worker"):
            pass
    return (time.thread_time() - started) / n * 1e6


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import otel_memory
    from otel_memory import api

    install_providers(logs=False)
    n = spec["calls"]
    with tempfile.TemporaryDirectory() as directory:
        _start(directory)
        _loop(1000)  # warm-up
        parent = _loop(n)
        api.flush()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            _loop(1000)
            os.write(write_end, json.dumps(_loop(n)).encode())
            os._exit(0)
        os.close(write_end)
        child = json.loads(os.read(read_end, 1000))
        os.waitpid(pid, 0)
        otel_memory.stop()
        written = _task_lines(directory)
    return {"parent": parent, "child": child, "written": written, "expected": 2 * (2 * n + 2000)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = _burst(spec) if spec["kind"] == "burst" else _worker(spec)
        print(json.dumps(result))
        return 0
    print(python_line())
    print(f"\nburst: {args.threads} threads, {args.tasks:,} empty tasks in all, at full speed")
    print(f"{'queue':<27}{'lines expected':>16}{'written':>10}{'dropped':>9}{'max queued':>12}"
          f"{'tasks/s':>9}{'RSS warm MB':>13}{'growth MB':>11}{'B/task':>8}")
    one_arena = {"MALLOC_ARENA_MAX": "1"}
    for capacity, env in ((-1, None), (0, None), (100_000, None), (-1, one_arena), (0, one_arena)):
        r = run_worker(__file__, {"kind": "burst", "tasks": args.tasks, "threads": args.threads,
                                  "capacity": capacity}, env)
        growth = r["end_rss"] - r["warm_rss"]
        label = {-1: "monitor stopped", 0: "default (2,048)"}.get(capacity, f"{capacity:,} (v0.2)")
        label += ", 1 arena" if env else ""
        print(f"{label:<27}{r['expected']:>16,}{r['written']:>10,}{r['dropped']:>9,}"
              f"{r['longest']:>12,}{r['rate']:>9,.0f}{r['warm_rss'] / 2**20:>13.1f}"
              f"{growth / 2**20:>11.2f}{growth / r['after']:>8.1f}")
    r = run_worker(__file__, {"kind": "worker", "calls": args.calls})
    print(f"\nworker: caller CPU per task, one thread, {args.calls:,} tasks")
    print(f"  parent (writer thread)          {r['parent']:6.1f} µs")
    print(f"  forked child (END writes now)   {r['child']:6.1f} µs   "
          f"(+{r['child'] - r['parent']:.1f} µs)")
    print(f"  lines expected {r['expected']:,}, written {r['written']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
