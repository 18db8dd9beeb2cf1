"""examples/async_service.py, unmodified, optionally with a real leak beside it (e2e driver).

    opentelemetry-instrument python tests/e2e/leaky_service.py --leak-per-second 3000 -- --seconds 75

``--leak-per-second N`` starts a thread that keeps ``N`` new ``Leaked`` objects (each owning a
list) per second in a module-level dict and never drops them. At exit the driver prints, on one
line, the monotonic times (seconds since start) at which the interpreter's own full collections
finished: the opportunities the profiler had for its leak censuses. The driver never collects.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import async_service  # the stock example, found through the path above

FULL_COLLECTIONS_PREFIX = "full collections at:"


class Leaked:
    """What the leak keeps: one object and its list per entry."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tags: list[str] = []


_kept: dict[int, Leaked] = {}


def _leak(per_second: int, stop: threading.Event) -> None:
    n, batch = 0, max(1, per_second // 10)
    while not stop.wait(0.1):
        for _ in range(batch):
            _kept[n] = Leaked(n)
            n += 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leak-per-second", type=int, default=0)
    parser.add_argument("service_args", nargs="*")
    args = parser.parse_args()
    started = time.monotonic()
    full: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(round(time.monotonic() - started, 2))

    gc.callbacks.append(on_gc)
    stop = threading.Event()
    if args.leak_per_second:
        threading.Thread(target=_leak, args=(args.leak_per_second, stop), daemon=True).start()
    try:
        return async_service.main(args.service_args)
    finally:
        stop.set()
        print(FULL_COLLECTIONS_PREFIX, json.dumps(full), flush=True)


if __name__ == "__main__":
    sys.exit(main())
