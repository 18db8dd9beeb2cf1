"""Per-call cost of a task, against a bare SDK span and a bare call, measured in the same run.

    .venv/bin/python benchmarks/overhead.py [--repeat 5] [--seconds 0.2]

Times, best of ``--repeat`` rounds (in a round every case runs once, as many calls as fill about
``--seconds``, so a change in machine load hits all cases alike):

* a bare call of an empty function, and a bare SDK span (``tracer.start_as_current_span``);
* a bare SDK span plus two ``PsutilReadingSource().read()``: what any task must pay at least;
* ``@traced_task`` on an empty function, ``with traced_task(...)``, and
  ``set_active_task``/``clear_active_task``;

with the monitor stopped (no log handler: START/END records are dropped by level) and with
``otel_memory.start()`` (daily log handler writing to a temp dir, periodic lines every hour
so they stay out of the way, no LoggerProvider so the OTel log bridge hands records to the no-op
provider). All spans go through one SDK ``TracerProvider`` whose only processor is the SDK's
base ``SpanProcessor``, which does nothing: span creation is measured, export is not.

Then the cost of one memory reading: ``PsutilReadingSource().read()`` and ``.read_rss()``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import timeit
from collections.abc import Callable, Sequence

import psutil
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import otel_memory
from otel_memory import clear_active_task, set_active_task, traced_task
from otel_memory.config import config_from_dict
from otel_memory.readings import PsutilReadingSource

_provider = TracerProvider()
_provider.add_span_processor(SpanProcessor())  # the no-op base class: export cost excluded
trace.set_tracer_provider(_provider)
_tracer = _provider.get_tracer("benchmark")
_source = PsutilReadingSource()


def bare_call() -> None:
    pass


def bare_span() -> None:
    with _tracer.start_as_current_span("bench"):
        pass


def span_and_two_readings() -> None:
    _source.read()
    with _tracer.start_as_current_span("bench"):
        pass
    _source.read()


@traced_task("bench")
def decorated() -> None:
    pass


def with_block() -> None:
    with traced_task("bench"):
        pass


def legacy() -> None:
    set_active_task("bench")
    clear_active_task("bench Complete")


CASES: list[tuple[str, Callable[[], None]]] = [
    ("bare function call", bare_call),
    ("bare SDK span", bare_span),
    ("SDK span + 2 x read()", span_and_two_readings),
    ("@traced_task function", decorated),
    ("with traced_task(...)", with_block),
    ("set/clear_active_task", legacy),
]
READINGS: list[tuple[str, Callable[[], object]]] = [
    ("PsutilReadingSource().read()", _source.read),
    ("PsutilReadingSource().read_rss()", _source.read_rss),
]


def calibrate(fn: Callable[[], object], seconds: float) -> int:
    """How many calls take about ``seconds``."""
    number, elapsed = timeit.Timer(fn).autorange()
    return max(1, int(number * seconds / max(elapsed, 1e-9)))


class Best:
    """Best per-call time per case; cases are timed round-robin so load changes hit all alike."""

    def __init__(self, cases: Sequence[tuple[str, Callable[[], object]]], seconds: float) -> None:
        self._cases = [(name, fn, calibrate(fn, seconds)) for name, fn in cases]
        self.micros = {name: float("inf") for name, _ in cases}

    def run_once(self) -> None:
        """Time every case once, keeping the best."""
        for name, fn, number in self._cases:
            gc.collect()
            elapsed = timeit.Timer(fn).timeit(number)
            self.micros[name] = min(self.micros[name], elapsed / number * 1e6)

    def rows(self) -> list[tuple[str, float]]:
        return list(self.micros.items())


def print_table(title: str, rows: list[tuple[str, float]], reference: float | None) -> None:
    print(f"\n{title}")
    header = f"{'case':<34} {'µs/call':>10}"
    if reference is not None:
        header += f" {'x SDK span':>11}"
    print(header)
    print("-" * len(header))
    for name, micros in rows:
        line = f"{name:<34} {micros:10.2f}"
        if reference is not None:
            line += f" {micros / reference:11.1f}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one run")
    args = parser.parse_args(argv)

    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{psutil.cpu_count()} CPUs, load average {psutil.getloadavg()[0]:.2f}; "
        f"best of {args.repeat} x ~{args.seconds} s"
    )
    stopped, started = Best(CASES, args.seconds), Best(CASES, args.seconds)
    readings = Best(READINGS, args.seconds)
    with tempfile.TemporaryDirectory(prefix="otel-memory-bench-") as log_dir:
        monitor = {"log_dir": log_dir, "interval_seconds": 3600}
        config = config_from_dict({"general": {"monitoring": {"memory_monitor": monitor}}})
        for _ in range(args.repeat):
            stopped.run_once()
            otel_memory.start(config)
            try:
                started.run_once()
            finally:
                otel_memory.stop()
            readings.run_once()
    print_table(
        "Monitor stopped (tasks still take readings and make spans)",
        stopped.rows(),
        stopped.micros["bare SDK span"],
    )
    print_table(
        "Monitor started (daily log file written on every START/END)",
        started.rows(),
        started.micros["bare SDK span"],
    )
    print_table("One memory reading", readings.rows(), None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
