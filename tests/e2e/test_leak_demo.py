"""examples/leak_demo.py under ``opentelemetry-instrument``: the growing global dict is flagged,
and the flag travels over OTLP as a log record next to the task spans."""

from __future__ import annotations

import pytest
from example_runs import run_instrumented

pytestmark = pytest.mark.e2e

ITERATIONS = 5
LEAKING_CLASS = "__main__.Message"


def test_leak_is_flagged_and_exported(otlp_receiver, tmp_path):
    example = run_instrumented(
        "leak_demo.py",
        ["--iterations", str(ITERATIONS), "--per-iteration", "5000"],
        endpoint=otlp_receiver.endpoint("grpc"),
        protocol="grpc",
        log_dir=tmp_path,
        service_name="leak-demo-e2e",
    )
    print(f"leak demo: wall {example.wall_seconds:.2f} s\n{example.result.stdout}")

    assert example.result.returncode == 0, example.result.stderr
    assert f"LEAK SUSPECT {LEAKING_CLASS}: grew in {ITERATIONS - 1} consecutive snapshots" in (
        example.result.stdout
    )
    assert f"Leak suspect: {LEAKING_CLASS} grew in 3 consecutive snapshots" in example.result.stderr

    suspects = [
        record
        for record in otlp_receiver.log_records()
        if record.event_name == "otel_memory.leak_suspect"
    ]
    flagged = {record.attributes["python.type"]: record for record in suspects}
    assert LEAKING_CLASS in flagged
    record = flagged[LEAKING_CLASS]
    assert record.severity_text == "WARNING"
    assert record.attributes["python.heap.objects.growth"] == 3 * 5000
    assert record.resource["service.name"] == "leak-demo-e2e"

    spans = otlp_receiver.spans_named("Handle Messages")
    assert len(spans) == ITERATIONS
    assert all(
        span.attributes["memory.rss.peak"] >= span.attributes["memory.rss.end"] for span in spans
    )


def test_bounded_cache_is_not_flagged(otlp_receiver, tmp_path):
    example = run_instrumented(
        "leak_demo.py",
        ["--iterations", str(ITERATIONS), "--per-iteration", "5000", "--fixed"],
        endpoint=otlp_receiver.endpoint("http/protobuf"),
        protocol="http/protobuf",
        log_dir=tmp_path,
        service_name="leak-demo-e2e",
    )

    assert example.result.returncode == 0, example.result.stderr
    # Other classes may drift (spans queued for export, for one), the bounded cache must not.
    assert "Message objects on the heap" in example.result.stdout
    assert f"LEAK SUSPECT {LEAKING_CLASS}" not in example.result.stdout
    assert not [
        record
        for record in otlp_receiver.log_records()
        if record.event_name == "otel_memory.leak_suspect"
        and record.attributes.get("python.type") == LEAKING_CLASS
    ]
    assert len(otlp_receiver.spans_named("Handle Messages")) == ITERATIONS
