"""examples/async_service.py under ``opentelemetry-instrument``, over gRPC and HTTP/protobuf, into a
real OTLP receiver: task spans, gauges, log records and the daily file; then with no receiver."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest
from example_runs import run_instrumented
from otlp_receiver import OTLPReceiver, ReceivedSpan
from test_collector_config import prometheus_name, prometheus_names_used

from otel_memory.base.logline import Marker, parse_line

pytestmark = pytest.mark.e2e

BATCHES, HANDLERS = 3, 20
ARGS = ["--batches", str(BATCHES), "--handlers", str(HANDLERS), "--pause", "0.3"]
ARGS += ["--dump-every", "0.4", "--seconds", "30"]
SERVICE = "async-service-e2e"
BYTE_ATTRIBUTES = [
    "memory.rss.start",
    "memory.rss.end",
    "memory.rss.delta",
    "memory.rss.peak",
    "memory.vms.start",
    "memory.vms.end",
    "memory.vms.delta",
    "memory.system.available.start",
    "memory.system.available.end",
]
RATIO_ATTRIBUTES = ["memory.system.free_ratio.start", "memory.system.free_ratio.end"]
SERVED = re.compile(r"served (\d+) batches of \d+ messages, \d+ cache dumps in ([\d.]+) s")


@pytest.fixture(scope="module", params=["grpc", "http/protobuf"])
def run(request, tmp_path_factory) -> Iterator[tuple[OTLPReceiver, object]]:
    """One instrumented run of the example per protocol, into a fresh receiver."""
    protocol = request.param
    with OTLPReceiver() as receiver:
        example = run_instrumented(
            "async_service.py",
            ARGS,
            endpoint=receiver.endpoint(protocol),
            protocol=protocol,
            log_dir=tmp_path_factory.mktemp("logs"),
            service_name=SERVICE,
            # every START/END as a record too, to check their trace context (default: events)
            extra_env={"OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS": "all"},
        )
        assert example.result.returncode == 0, example.result.stderr
        print(f"{protocol}: wall {example.wall_seconds:.2f} s; {example.result.stdout.strip()}")
        yield receiver, example


def _task_spans(receiver: OTLPReceiver) -> list[ReceivedSpan]:
    return [span for span in receiver.spans() if span.scope == "otel_memory"]


def test_task_spans_carry_every_memory_attribute(run):
    receiver, _ = run
    spans = _task_spans(receiver)
    counts = Counter(span.name for span in spans)

    assert counts["Message Batch"] == BATCHES
    for name in ("Handle Message", "Parse Message", "Store Message"):
        assert counts[name] == BATCHES * HANDLERS
    assert set(counts) <= {
        "Message Batch",
        "Handle Message",
        "Parse Message",
        "Store Message",
        "Cache Dump",
    }
    for span in spans:
        for key in BYTE_ATTRIBUTES:
            assert isinstance(span.attributes[key], int), (span.name, key)
        for key in RATIO_ATTRIBUTES:
            assert 0.0 < span.attributes[key] <= 1.0, (span.name, key)
        a = span.attributes
        assert a["memory.rss.delta"] == a["memory.rss.end"] - a["memory.rss.start"]
        assert a["memory.vms.delta"] == a["memory.vms.end"] - a["memory.vms.start"]
        assert a["memory.rss.peak"] >= max(a["memory.rss.start"], a["memory.rss.end"])
        assert span.kind == 1  # SPAN_KIND_INTERNAL
        assert span.resource["service.name"] == SERVICE


def test_concurrent_handlers_keep_their_own_parents(run):
    receiver, _ = run
    spans = _task_spans(receiver)
    by_id = {span.span_id: span for span in spans}

    def parent_name(span: ReceivedSpan) -> str:
        parent = by_id[span.parent_span_id]
        assert parent.trace_id == span.trace_id
        return parent.name

    for span in spans:
        if span.name in ("Message Batch", "Cache Dump"):
            assert span.parent_span_id == ""
        elif span.name == "Handle Message":
            assert parent_name(span) == "Message Batch"
        else:
            assert parent_name(span) == "Handle Message"
    # every handler has exactly one parse and one store child of its own
    children = Counter(
        (by_id[span.parent_span_id].span_id, span.name)
        for span in spans
        if span.name in ("Parse Message", "Store Message")
    )
    assert set(children.values()) == {1}
    assert len(children) == 2 * BATCHES * HANDLERS


def test_log_records_carry_the_task_spans_trace_context(run):
    receiver, _ = run
    records = [r for r in receiver.log_records() if r.scope == "otel_memory"]
    by_marker = Counter(record.attributes.get("memory.marker") for record in records)
    spans = _task_spans(receiver)

    assert by_marker["START"] == by_marker["END"] == len(spans)
    assert by_marker["CHECK"] >= 2  # "Monitor Started" and "Monitor Stopped" at least
    expected = Counter((span.trace_id, span.span_id, span.name) for span in spans)
    for marker in ("START", "END"):
        seen = Counter(
            (r.trace_id, r.span_id, r.attributes["memory.task.name"])
            for r in records
            if r.attributes.get("memory.marker") == marker
        )
        assert seen == expected, marker
    for record in records:
        assert parse_line(record.body) is not None
        assert record.resource["service.name"] == SERVICE


def test_memory_gauges_are_exported(run):
    receiver, _ = run
    rss = receiver.data_points("process.memory.usage")
    objects = receiver.data_points("python.heap.objects")
    sizes = receiver.data_points("python.heap.size")

    assert rss and all(point.value > 0 for point in rss)
    assert all(point.resource["service.name"] == SERVICE for point in rss)
    assert objects and sizes
    types = {point.attributes["python.type"] for point in objects}
    assert "dict" in types and "other" in types
    assert {point.attributes["python.type"] for point in sizes} == types


def test_daily_file_matches_the_spans(run):
    receiver, example = run
    [path] = example.log_dir.glob("memory_*.log")
    lines = [parse_line(line) for line in path.read_text().splitlines()]

    assert None not in lines
    markers = Counter(line.marker for line in lines)
    assert markers[Marker.START] == markers[Marker.END] == len(_task_spans(receiver))
    assert [line.name for line in lines if line.marker is Marker.START].count(
        "Handle Message"
    ) == BATCHES * HANDLERS


# The idle trend needs two collections while no task is open, which a 2 s run may not have;
# tests/test_collector_config.py checks it against the package's instruments.
NEEDS_A_LONGER_RUN = {"otel_memory_idle_trend_bytes_per_hour"}


def test_metrics_queried_by_alerts_and_dashboard_arrive(run):
    receiver, _ = run
    # Every scope: with opentelemetry-instrumentation-system-metrics loaded (as
    # opentelemetry-bootstrap installs it), process.memory.* come from it, not from us.
    received = {
        prometheus_name(name, unit, kind, monotonic)
        for name, (unit, kind, monotonic) in receiver.metrics().items()
    }
    print(f"received (Prometheus form): {sorted(received)}")
    for source, names in prometheus_names_used().items():
        missing = names - received - NEEDS_A_LONGER_RUN
        assert not missing, f"{source} queries metrics the run did not export: {missing}"


def test_task_histograms_carry_exemplars_that_link_to_the_task_spans(run):
    receiver, _ = run
    spans = {(s.trace_id, s.span_id): s for s in _task_spans(receiver)}
    for histogram in ("otel_memory.task.rss.growth", "otel_memory.task.rss.retained"):
        exemplars = receiver.histogram_exemplars(histogram)
        assert exemplars, f"{histogram}: no exemplar reached the receiver"
        for point_attributes, trace_id, span_id in exemplars:
            span = spans.get((trace_id, span_id))
            assert span is not None, (histogram, trace_id, span_id)  # links to a real task span
            assert point_attributes["otel_memory.task.name"] == span.name
