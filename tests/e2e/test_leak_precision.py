"""Leak suspects are real leaks, end to end: examples/async_service.py under
``opentelemetry-instrument`` with profiling on (interval 10 s, the minimum) for over a minute,
exporting over OTLP into a real receiver; once as it ships, once with a real leak beside it.

Both runs go through ``leaky_service.py``, which runs the example's own ``main()`` unmodified
(with ``--leak-per-second 0`` nothing is added) and reports when the interpreter's own full
collections finished, so the test can tell the profiler had its chances. The two processes run
at the same time to keep the wall time near one run.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from example_runs import ExampleRun, run_instrumented
from otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.e2e

INTERVAL = 10
LEAK_SNAPSHOTS = 3
SECONDS = 75
SERVICE_ARGS = ["--seconds", str(SECONDS), "--handlers", "200", "--pause", "0.25"]
LEAKING_CLASS = "__main__.Leaked"
DRIVER = "../tests/e2e/leaky_service.py"  # run_instrumented runs scripts from examples/
FULL_COLLECTIONS_PREFIX = "full collections at:"  # the driver's last line


def _run(leak_per_second: int, tmp: Path) -> tuple[ExampleRun, OTLPReceiver]:
    with OTLPReceiver() as receiver:
        run = run_instrumented(
            DRIVER,
            ["--leak-per-second", str(leak_per_second), "--", *SERVICE_ARGS],
            endpoint=receiver.endpoint("grpc"),
            protocol="grpc",
            log_dir=tmp,
            service_name="leak-precision",
            extra_env={
                "OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS": str(INTERVAL),
                "OTEL_PYTHON_MEMORY_PROFILING_LEAK_SNAPSHOTS": str(LEAK_SNAPSHOTS),
                "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            },
            timeout=SECONDS + 90,
        )
    return run, receiver


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[ExampleRun, OTLPReceiver]]:
    """The stock service and the leaky one, run side by side."""
    with ThreadPoolExecutor(2) as pool:
        stock = pool.submit(_run, 0, tmp_path_factory.mktemp("stock"))
        leaky = pool.submit(_run, 3_000, tmp_path_factory.mktemp("leaky"))
        found = {"stock": stock.result(), "leaky": leaky.result()}
    for name, (run, _) in found.items():
        assert run.result.returncode == 0, run.result.stderr
        print(f"{name}: wall {run.wall_seconds:.1f} s; {run.result.stdout.strip()[-400:]}")
    return found


def _full_collections(run: ExampleRun) -> list[float]:
    [line] = [
        line
        for line in run.result.stdout.splitlines()
        if line.startswith(FULL_COLLECTIONS_PREFIX)
    ]
    return list(json.loads(line.removeprefix(FULL_COLLECTIONS_PREFIX)))


def _trend_chances(times: list[float]) -> int:
    """Full collections at least 0.9 interval apart: censuses the leak trend could take."""
    chances, last = 0, -INTERVAL * 1.0
    for at in times:
        if at - last >= 0.9 * INTERVAL:
            chances, last = chances + 1, at
    return chances


def _suspect_records(receiver: OTLPReceiver) -> list[dict[str, object]]:
    return [
        record.attributes
        for record in receiver.log_records()
        if record.event_name == "otel_memory.leak_suspect"
    ]


def test_the_stock_service_has_no_leak_suspects(runs):
    run, receiver = runs["stock"]

    chances = _trend_chances(_full_collections(run))
    assert chances >= LEAK_SNAPSHOTS + 1, chances  # the trend had enough points to flag
    assert _suspect_records(receiver) == []
    assert "Leak suspect" not in run.result.stderr
    gauge = receiver.data_points("python.heap.leak_suspects")
    assert gauge and {point.value for point in gauge} == {0}


def test_a_real_leak_is_flagged_and_only_it(runs):
    run, receiver = runs["leaky"]

    records = _suspect_records(receiver)
    assert [record["python.type"] for record in records] == [LEAKING_CLASS], records
    [record] = records
    # reported at the first census that met the bar: leak_snapshots growths in a row
    assert record["python.heap.growth_streak"] == LEAK_SNAPSHOTS
    assert record["python.heap.objects.growth"] >= 1_000
    stderr_suspects = [line for line in run.result.stderr.splitlines() if "Leak suspect" in line]
    assert len(stderr_suspects) == 1 and LEAKING_CLASS in stderr_suspects[0]
    gauge = receiver.data_points("python.heap.leak_suspects")
    assert {point.value for point in gauge} <= {0, 1} and gauge[-1].value == 1
