"""Leaks in a large heap are named without a full collection, with their path; garbage never is.

``large_heap_service.py`` under ``opentelemetry-instrument``, profiling at the minimum interval
(10 s) and ``leak_snapshots`` at its default (3), exporting over OTLP into a real receiver:

- an 800,000-object long-lived heap leaking 2,000 objects a second into a module-level dict: the
  interpreter runs at most one full collection before the leak is named (the censuses taken
  after one, the only ones the v0.2 trend used, need four), yet it is named within 45 s, with
  its path;
- the same heap without the leak, with workers piling up cyclic garbage through 40 s
  ``gc.disable()`` periods (and holding their in-flight requests in a local meanwhile) for 90 s:
  the garbage class grows census after census and is checked, and nothing is ever named.

The two processes run at the same time to keep the wall time near the longer one (~95 s).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from example_runs import ExampleRun, run_instrumented
from otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.e2e

DRIVER = "../tests/e2e/large_heap_service.py"  # run_instrumented runs scripts from examples/
STARTED_PREFIX = "leak started at:"
STATS_PREFIX = "stats:"
LEAKING_CLASS = "__main__.Leaked"
GARBAGE_CLASS = "__main__.Request"
ENV = {
    "OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS": "10",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
}
LEAKY_ARGS = ["--heap", "800000", "--leak-per-second", "2000", "--seconds", "50"]
STOCK_ARGS = [
    "--heap", "800000", "--garbage-per-second", "3000",
    "--gc-off", "40", "--gc-on", "5", "--seconds", "90",
]


def _run(args: list[str], tmp: Path) -> tuple[ExampleRun, OTLPReceiver]:
    with OTLPReceiver() as receiver:
        run = run_instrumented(
            DRIVER,
            args,
            endpoint=receiver.endpoint("grpc"),
            protocol="grpc",
            log_dir=tmp,
            service_name="large-heap",
            extra_env=ENV,
            timeout=180,
        )
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    return run, receiver


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[ExampleRun, OTLPReceiver]]:
    with ThreadPoolExecutor(2) as pool:
        leaky = pool.submit(_run, LEAKY_ARGS, tmp_path_factory.mktemp("leaky"))
        stock = pool.submit(_run, STOCK_ARGS, tmp_path_factory.mktemp("stock"))
        found = {"leaky": leaky.result(), "stock": stock.result()}
    for name, (run, _) in found.items():
        print(f"{name}: wall {run.wall_seconds:.1f} s; {_line(run, STATS_PREFIX)}")
    return found


def _line(run: ExampleRun, prefix: str) -> str:
    [line] = [line for line in run.result.stdout.splitlines() if line.startswith(prefix)]
    return line.removeprefix(prefix).strip()


def _suspects(receiver: OTLPReceiver) -> list:
    return [r for r in receiver.log_records() if r.event_name == "otel_memory.leak_suspect"]


def test_a_leak_in_a_large_heap_is_named_within_45_s_with_its_path(runs):
    run, receiver = runs["leaky"]
    started = float(_line(run, STARTED_PREFIX))
    stats = json.loads(_line(run, STATS_PREFIX))

    [record] = _suspects(receiver)
    named_after = record.time_unix_nano / 1e9 - started
    print(f"named after {named_after:.1f} s: {record.attributes}")
    assert record.attributes["python.type"] == LEAKING_CLASS
    assert named_after <= 45
    assert list(record.attributes["otel_memory.leak.path"]) == [
        "module __main__",
        "dict __main__._kept",
        LEAKING_CLASS,
    ]
    # At most one full collection before it was named (the heap's own build may bring one):
    # the trend of censuses taken after full collections needs leak_snapshots + 1 of them.
    assert len([at for at in stats["full_collections"] if at < named_after]) <= 1, stats
    warnings = [line for line in run.result.stderr.splitlines() if "Leak suspect" in line]
    assert len(warnings) == 1
    assert "held by: module __main__ -> dict __main__._kept -> __main__.Leaked" in warnings[0]


def test_cyclic_garbage_in_a_large_heap_is_never_named(runs):
    run, receiver = runs["stock"]
    stats = json.loads(_line(run, STATS_PREFIX))

    assert _suspects(receiver) == []
    assert "Leak suspect" not in run.result.stderr
    # the garbage did pile up census after census and was checked (and found unreachable)
    assert stats["profiler"]["checks"] >= 1, stats
    gauge = receiver.data_points("python.heap.leak_suspects")
    assert gauge and {point.value for point in gauge} == {0}
