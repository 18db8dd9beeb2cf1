"""Cost of :meth:`ThresholdGuard.check` per reading, against its peers measured in the same run.

    .venv/bin/python benchmarks/thresholds.py [--repeat 5] [--seconds 0.2]

``check`` runs on every reading the monitor takes, task start and end included, so its usual
path (no threshold changes state) must cost next to nothing against the reading itself. Cases,
best of ``--repeat`` rounds (each round runs every case once, so machine load hits all alike):

* a bare call of an empty function taking three arguments;
* ``check`` with no threshold changing state (the path every reading takes);
* ``check`` with every reading changing state (alternating breach and re-arm: two thresholds
  fire or re-arm per call, the lock is taken, events are built);
* the same state machines stepped under the lock on every call, with no fast path: what the
  band saves;
* one memory reading, ``PsutilReadingSource().read()`` (which ``check`` follows).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import timeit
from collections.abc import Callable

from otel_memory.base.config import Thresholds
from otel_memory.guards.thresholds import MB, ThresholdGuard
from otel_memory.kernel.readings import PsutilReadingSource

RSS, AVAILABLE, FREE = 300 * MB, 4096 * MB, 0.8


def bare(rss: int, available: int, free_ratio: float) -> None:
    pass


def cases() -> dict[str, Callable[[], object]]:
    quiet = ThresholdGuard(Thresholds())
    flapping = ThresholdGuard(Thresholds())
    values = itertools.cycle([1200 * MB, 100 * MB])  # warning fires, then re-arms
    no_band = ThresholdGuard(Thresholds())
    source = PsutilReadingSource()
    return {
        "bare call, 3 arguments": lambda: bare(RSS, AVAILABLE, FREE),
        "check, nothing changes": lambda: quiet.check(RSS, AVAILABLE, FREE),
        "check, every call changes state": lambda: flapping.check(next(values), AVAILABLE, FREE),
        "locked state machines, no fast path": lambda: no_band._step(RSS, AVAILABLE, FREE),
        "PsutilReadingSource().read()": source.read,
    }


def ns_per_call(func: Callable[[], object], seconds: float) -> float:
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    number = max(1, int(number * seconds / 0.2))
    return timer.timeit(number) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    table = cases()
    best = dict.fromkeys(table, float("inf"))
    for _ in range(args.repeat):
        for name, func in table.items():
            best[name] = min(best[name], ns_per_call(func, args.seconds))
    print(f"Python {platform.python_version()} on {platform.machine()}, best of {args.repeat}")
    print(f"{'case':40} {'ns/call':>10}")
    for name, ns in best.items():
        print(f"{name:40} {ns:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
