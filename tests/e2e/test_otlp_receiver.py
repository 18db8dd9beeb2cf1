"""The test receiver itself: real SDK exporters send to it over gRPC and HTTP/protobuf."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from otlp_receiver import OTLPReceiver

RESOURCE = Resource.create({"service.name": "receiver-test"})


def _exporters(receiver: OTLPReceiver, protocol: str, gzip_body: bool = False):
    base = receiver.endpoint(protocol)  # type: ignore[arg-type]
    if protocol == "grpc":
        return (
            GrpcSpans(endpoint=base, insecure=True),
            GrpcMetrics(endpoint=base, insecure=True),
            GrpcLogs(endpoint=base, insecure=True),
        )
    compression = Compression.Gzip if gzip_body else Compression.NoCompression
    return (
        HttpSpans(endpoint=f"{base}/v1/traces", compression=compression),
        HttpMetrics(endpoint=f"{base}/v1/metrics", compression=compression),
        HttpLogs(endpoint=f"{base}/v1/logs", compression=compression),
    )


@pytest.mark.parametrize(
    ("protocol", "gzip_body"), [("grpc", False), ("http/protobuf", False), ("http/protobuf", True)]
)
def test_receives_spans_metrics_and_logs(otlp_receiver: OTLPReceiver, protocol, gzip_body):
    span_exporter, metric_exporter, log_exporter = _exporters(otlp_receiver, protocol, gzip_body)
    tracer_provider = TracerProvider(resource=RESOURCE)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    try:
        tracer = tracer_provider.get_tracer("receiver-test")
        with (
            tracer.start_as_current_span("outer") as outer,
            tracer.start_as_current_span("inner", attributes={"memory.rss.start": 7}),
        ):
            logger_provider.get_logger("receiver-test").emit(
                body="hello from inner", severity_number=SeverityNumber.INFO
            )
        counter = meter_provider.get_meter("receiver-test").create_counter("things", unit="1")
        counter.add(3, {"kind": "a"})
        reader.force_flush()
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()

    spans = {span.name: span for span in otlp_receiver.spans()}
    assert set(spans) == {"outer", "inner"}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert (
        spans["inner"].trace_id
        == spans["outer"].trace_id
        == f"{outer.get_span_context().trace_id:032x}"
    )
    assert spans["inner"].attributes == {"memory.rss.start": 7}
    assert spans["inner"].resource["service.name"] == "receiver-test"
    assert {span.protocol for span in spans.values()} == {protocol}

    points = otlp_receiver.data_points("things")
    # force_flush and shutdown each export the cumulative sum
    assert {(p.value, tuple(p.attributes.items()), p.kind) for p in points} == {
        (3, (("kind", "a"),), "sum")
    }
    assert otlp_receiver.metrics()["things"] == ("1", "sum", True)

    [record] = otlp_receiver.log_records()
    assert record.body == "hello from inner"
    assert record.trace_id == spans["inner"].trace_id
    assert record.span_id == spans["inner"].span_id
    assert record.resource["service.name"] == "receiver-test"


def _post(receiver: OTLPReceiver, path: str, body: bytes, headers: dict[str, str]):
    request = urllib.request.Request(
        receiver.endpoint("http/protobuf") + path, data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_http_replies_with_the_protobuf_response_and_rejects_garbage(otlp_receiver: OTLPReceiver):
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="raw", trace_id=b"\x01" * 16)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}

    status, content_type, body = _post(
        otlp_receiver, "/v1/traces", gzip.compress(request.SerializeToString()), headers
    )
    assert (status, content_type) == (200, "application/x-protobuf")
    assert (
        trace_service_pb2.ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
        == 0
    )
    assert [span.name for span in otlp_receiver.spans()] == ["raw"]

    assert _post(otlp_receiver, "/v1/unknown", b"", {})[0] == 404
    assert _post(otlp_receiver, "/v1/traces", b"\xff\xff\xff", {})[0] == 400
    assert otlp_receiver.request_count("traces") == 1


def test_wait_for_returns_the_last_result_when_time_runs_out(otlp_receiver: OTLPReceiver):
    assert otlp_receiver.wait_for(otlp_receiver.spans, timeout=0.1) == []
    otlp_receiver.clear()
    assert otlp_receiver.request_count("logs") == 0
