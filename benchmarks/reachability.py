"""What the leak detector's reachability check costs on a large heap, and per hour at 60 s.

    .venv/bin/python benchmarks/reachability.py [--objects 1000000] [--rounds 5]

Builds a heap of ``--objects`` long-lived GC-tracked objects, then for each case makes a class
grow beside it and times ``ReachabilityCheck.check`` (the profiler thread's CPU time, median of
``--rounds``), with the search's ``gc.get_referrers`` calls and objects visited:

* ``leak, module global``: 20,000 new objects in a module-level dict (reachable: named, one check);
* ``leak, thread local``: 20,000 new objects in a list another thread's frame holds;
* ``leak, closure cell``: 20,000 new objects in a list a module-level function's closure holds
  (the closure tuple costs a second heap walk: tuples are checked for a holder, see
  ``referrers_of``);
* ``garbage, gc off``: 20,000 new reference cycles with automatic collection off (unreachable:
  the search runs dry, the class stays a candidate and is checked again later);
* ``garbage + in-flight``: the same with the newest 50 held by another thread's frame.

The floor beside it: one ``gc.get_referrers`` call of one object (a walk of the whole heap),
``gc.get_objects()``, and one ``take_census()``, which the profiler pays every interval anyway.

Per hour at the default 60 s interval (60 censuses): a class named at its first check costs one
check; a candidate whose growth stays garbage is checked at censuses 0, 1, 3, 7, 15, then every 8
(the profiler's back-off): 10 checks in an hour. The goal: <= 3.6 CPU s/h (0.1 % of a core).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
from collections.abc import Callable

from _common import build_heap, python_line

from otel_memory.activity.census import take_census
from otel_memory.guards.reachability import Limits, ReachabilityCheck

GROWTH = 20_000
GOAL_SECONDS_PER_HOUR = 3.6
CHECKS_PER_HOUR_GARBAGE = len([0, 1, 3, 7, 15, 23, 31, 39, 47, 55])


class Leaked:
    """What the leak keeps."""

    def __init__(self, n: int) -> None:
        self.n = n


class Cycle:
    """A request in a reference cycle: garbage until a collection."""

    def __init__(self) -> None:
        self.me = self


_kept: dict[int, Leaked] = {}


def cpu(run: Callable[[], object]) -> float:
    started = time.thread_time()
    run()
    return time.thread_time() - started


def case_global(check: ReachabilityCheck) -> tuple[float, int, int, bool, tuple[str, ...]]:
    _kept.update((n, Leaked(n)) for n in range(GROWTH))
    try:
        verdict = check.check(f"{__name__}.Leaked", GROWTH)
    finally:
        _kept.clear()
    return verdict.seconds, verdict.calls, verdict.visited, verdict.reachable_enough, verdict.path


def _closure() -> Callable[[Leaked], None]:
    seen: list[Leaked] = []

    def remember(item: Leaked) -> None:
        seen.append(item)

    return remember


remember = _closure()


def case_closure(check: ReachabilityCheck) -> tuple[float, int, int, bool, tuple[str, ...]]:
    for n in range(GROWTH):
        remember(Leaked(n))
    try:
        verdict = check.check(f"{__name__}.Leaked", GROWTH)
    finally:
        remember.__closure__[0].cell_contents.clear()  # type: ignore[index]
    return verdict.seconds, verdict.calls, verdict.visited, verdict.reachable_enough, verdict.path


def _in_thread(build: Callable[[], list[object]], check: ReachabilityCheck, name: str):
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        held = build()
        ready.set()
        done.wait(60)
        held.clear()

    worker = threading.Thread(target=hold, name="holder")
    worker.start()
    ready.wait(60)
    try:
        verdict = check.check(f"{__name__}.{name}", GROWTH)
    finally:
        done.set()
        worker.join()
    return verdict.seconds, verdict.calls, verdict.visited, verdict.reachable_enough, verdict.path


def case_local(check: ReachabilityCheck):
    return _in_thread(lambda: [Leaked(n) for n in range(GROWTH)], check, "Leaked")


def case_garbage(check: ReachabilityCheck):
    gc.disable()
    try:
        for _ in range(GROWTH):
            Cycle()
        verdict = check.check(f"{__name__}.Cycle", GROWTH)
    finally:
        gc.enable()
    return verdict.seconds, verdict.calls, verdict.visited, verdict.reachable_enough, verdict.path


def case_in_flight(check: ReachabilityCheck):
    gc.disable()
    try:
        for _ in range(GROWTH):
            Cycle()
        return _in_thread(lambda: [Cycle() for _ in range(50)], check, "Cycle")
    finally:
        gc.enable()


CASES = {
    "leak, module global": (case_global, 1),
    "leak, thread local": (case_local, 1),
    "leak, closure cell": (case_closure, 1),
    "garbage, gc off": (case_garbage, CHECKS_PER_HOUR_GARBAGE),
    "garbage + in-flight": (case_in_flight, CHECKS_PER_HOUR_GARBAGE),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    heap = build_heap(args.objects)
    gc.collect()  # the benchmark's own set-up, not the package: start from a settled heap
    check = ReachabilityCheck(Limits())
    print(python_line())
    print(f"heap: {len(gc.get_objects()):,} GC-tracked objects; limits: {Limits()}")
    one = heap[0]
    floors = {
        "gc.get_referrers(1 object)": statistics.median(
            cpu(lambda: gc.get_referrers(one)) for _ in range(args.rounds)
        ),
        "gc.get_objects()": statistics.median(cpu(gc.get_objects) for _ in range(args.rounds)),
        "take_census()": statistics.median(cpu(take_census) for _ in range(args.rounds)),
    }
    print()
    print(f"{'floor':32} {'CPU ms':>8}")
    for name, seconds in floors.items():
        print(f"{name:32} {seconds * 1000:8.1f}")
    print()
    header = (f"{'case':22} {'CPU ms':>7} {'calls':>5} {'visited':>7} {'named':>5} "
              f"{'checks/h':>8} {'CPU s/h':>7}  path")
    print(header)
    for name, (run, per_hour) in CASES.items():
        results = [run(check) for _ in range(args.rounds)]
        seconds = statistics.median(r[0] for r in results)
        _, calls, visited, named, path = results[-1]
        print(f"{name:22} {seconds * 1000:7.1f} {calls:5d} {visited:7,d} {named!s:>5} "
              f"{per_hour:8d} {seconds * per_hour:7.2f}  {' -> '.join(path)}")
    print()
    print(f"goal: <= {GOAL_SECONDS_PER_HOUR} CPU s/h (0.1 % of a core); for comparison the "
          f"census alone at 60 s: {floors['take_census()'] * 60:.1f} CPU s/h")
    del heap


if __name__ == "__main__":
    main()
