"""A real OTLP receiver for tests: gRPC and HTTP/protobuf servers on ephemeral loopback ports.

    with OTLPReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("grpc"), ...}
        ...                                    # run something that exports over OTLP
        receiver.wait_for(lambda: receiver.spans_named("Nations Dump Download"))
        receiver.data_points("process.memory.usage")

Both servers decode the collector service requests (``Export{Trace,Metrics,Logs,Profiles}ServiceRequest``)
and store them under a lock; the helpers flatten them into spans, data points and log records
that carry their resource attributes and the protocol they arrived on.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2,
    profiles_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

Protocol = Literal["grpc", "http/protobuf"]
Signal = Literal["traces", "metrics", "logs", "profiles"]
_T = TypeVar("_T")

# What each HTTP path accepts and answers, as the OTLP/HTTP specification lays it out.
_HTTP_ROUTES: dict[str, tuple[Signal, type[Message], type[Message]]] = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
    "/v1development/profiles": (
        "profiles",
        profiles_service_pb2.ExportProfilesServiceRequest,
        profiles_service_pb2.ExportProfilesServiceResponse,
    ),
}


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as the Python value it holds."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP key/value pairs as a dict."""
    return {pair.key: any_value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received, with the resource and scope it came under."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    protocol: Protocol


@dataclass(frozen=True)
class ReceivedDataPoint:
    """One number data point (gauge or sum) of a named metric."""

    metric: str
    unit: str
    kind: str
    value: float
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    protocol: Protocol


@dataclass(frozen=True)
class ReceivedLogRecord:
    """One log record as received; ids are hex, empty when the record has no span context."""

    body: Any
    severity_text: str
    severity_number: int
    event_name: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    protocol: Protocol
    time_unix_nano: int = 0


@dataclass(frozen=True)
class ReceivedProfileSample:
    """One sample of a received profile, its dictionary references resolved.

    ``stack`` is ``(function, file, line)`` per frame, the leaf first; ``trace_id`` and
    ``span_id`` come from the sample's link (hex, empty without one).
    """

    sample_type: tuple[str, str]
    value: int
    stack: tuple[tuple[str, str, int], ...]
    trace_id: str
    span_id: str
    profile_attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    protocol: Protocol


@dataclass
class _Store:
    """Decoded requests per signal, in arrival order, with the protocol each came on."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: dict[Signal, list[tuple[Protocol, Any]]] = field(
        default_factory=lambda: {"traces": [], "metrics": [], "logs": [], "profiles": []}
    )

    def add(self, signal: Signal, protocol: Protocol, request: Message) -> None:
        with self.lock:
            self.requests[signal].append((protocol, request))

    def snapshot(self, signal: Signal) -> list[tuple[Protocol, Any]]:
        with self.lock:
            return list(self.requests[signal])

    def clear(self) -> None:
        with self.lock:
            for stored in self.requests.values():
                stored.clear()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        self._store.add("traces", "grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        self._store.add("metrics", "grpc", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        self._store.add("logs", "grpc", request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _ProfilesService(profiles_service_pb2_grpc.ProfilesServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        self._store.add("profiles", "grpc", request)
        return profiles_service_pb2.ExportProfilesServiceResponse()


def _decompress(body: bytes, encoding: str) -> bytes:
    """The request body without its ``Content-Encoding``; raises ValueError when unsupported."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _http_handler(store: _Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect

        def do_POST(self) -> None:
            route = _HTTP_ROUTES.get(self.path.split("?", 1)[0])
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if route is None:
                self._reply(404, b"unknown path", "text/plain")
                return
            signal, request_type, response_type = route
            try:
                request = request_type.FromString(
                    _decompress(body, self.headers.get("Content-Encoding", ""))
                )
            except (DecodeError, ValueError, OSError, zlib.error) as exc:
                self._reply(400, str(exc).encode(), "text/plain")
                return
            store.add(signal, "http/protobuf", request)
            self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

        def _reply(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


class OTLPReceiver:
    """gRPC (TraceService, MetricsService, LogsService, ProfilesService) and HTTP/protobuf OTLP
    endpoints."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._store = _Store()
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> OTLPReceiver:
        """Bind both servers to ephemeral ports and start serving."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(self._store), server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self._store), server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self._store), server)
        profiles_service_pb2_grpc.add_ProfilesServiceServicer_to_server(
            _ProfilesService(self._store), server
        )
        self.grpc_port = server.add_insecure_port(f"{self._host}:0")
        server.start()
        self._grpc_server = server

        self._http_server = ThreadingHTTPServer((self._host, 0), _http_handler(self._store))
        self._http_server.daemon_threads = True
        self.http_port = self._http_server.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers (idempotent)."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def endpoint(self, protocol: Protocol) -> str:
        """The base URL to put in ``OTEL_EXPORTER_OTLP_ENDPOINT`` for ``protocol``."""
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return f"http://{self._host}:{port}"

    def clear(self) -> None:
        """Forget everything received so far."""
        self._store.clear()

    # ------------------------------------------------------------------ queries

    def request_count(self, signal: Signal) -> int:
        """How many export requests of ``signal`` arrived."""
        return len(self._store.snapshot(signal))

    def spans(self) -> list[ReceivedSpan]:
        """Every span received, in arrival order."""
        found: list[ReceivedSpan] = []
        for protocol, request in self._store.snapshot("traces"):
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                kind=span.kind,
                                status_code=span.status.code,
                                attributes=attributes(span.attributes),
                                resource=resource,
                                scope=scope_spans.scope.name,
                                protocol=protocol,
                            )
                        )
        return found

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        """The spans called ``name``."""
        return [span for span in self.spans() if span.name == name]

    def data_points(self, name: str | None = None) -> list[ReceivedDataPoint]:
        """Gauge and sum data points, of metric ``name`` or of every metric."""
        found: list[ReceivedDataPoint] = []
        for protocol, request in self._store.snapshot("metrics"):
            for resource_metrics in request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if name is not None and metric.name != name:
                            continue
                        kind = metric.WhichOneof("data")
                        if kind not in ("gauge", "sum"):
                            continue
                        for point in getattr(metric, kind).data_points:
                            number = point.WhichOneof("value")
                            found.append(
                                ReceivedDataPoint(
                                    metric=metric.name,
                                    unit=metric.unit,
                                    kind=kind,
                                    value=getattr(point, number) if number else 0,
                                    attributes=attributes(point.attributes),
                                    resource=resource,
                                    scope=scope_metrics.scope.name,
                                    protocol=protocol,
                                )
                            )
        return found

    def histogram_exemplars(self, name: str) -> list[tuple[dict[str, object], str, str]]:
        """``(point attributes, exemplar trace id hex, span id hex)`` of histogram ``name``."""
        found: list[tuple[dict[str, object], str, str]] = []
        for _, request in self._store.snapshot("metrics"):
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != name or metric.WhichOneof("data") != "histogram":
                            continue
                        for point in metric.histogram.data_points:
                            for exemplar in point.exemplars:
                                found.append(
                                    (
                                        attributes(point.attributes),
                                        exemplar.trace_id.hex(),
                                        exemplar.span_id.hex(),
                                    )
                                )
        return found

    def metric_names(self, scope: str | None = None) -> set[str]:
        """Names of every metric received (of instrumentation ``scope`` only, when given)."""
        names: set[str] = set()
        for _, request in self._store.snapshot("metrics"):
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    if scope is None or scope_metrics.scope.name == scope:
                        names.update(metric.name for metric in scope_metrics.metrics)
        return names

    def metrics(self, scope: str | None = None) -> dict[str, tuple[str, str, bool]]:
        """``name -> (unit, data kind, is_monotonic)`` of every metric received."""
        found: dict[str, tuple[str, str, bool]] = {}
        for _, request in self._store.snapshot("metrics"):
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    if scope is not None and scope_metrics.scope.name != scope:
                        continue
                    for metric in scope_metrics.metrics:
                        kind = metric.WhichOneof("data") or ""
                        monotonic = kind == "sum" and metric.sum.is_monotonic
                        found[metric.name] = (metric.unit, kind, monotonic)
        return found

    def log_records(self) -> list[ReceivedLogRecord]:
        """Every log record received, in arrival order."""
        found: list[ReceivedLogRecord] = []
        for protocol, request in self._store.snapshot("logs"):
            for resource_logs in request.resource_logs:
                resource = attributes(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        found.append(
                            ReceivedLogRecord(
                                body=any_value(record.body),
                                severity_text=record.severity_text,
                                severity_number=record.severity_number,
                                event_name=record.event_name,
                                trace_id=record.trace_id.hex(),
                                span_id=record.span_id.hex(),
                                attributes=attributes(record.attributes),
                                resource=resource,
                                scope=scope_logs.scope.name,
                                protocol=protocol,
                                time_unix_nano=record.time_unix_nano,
                            )
                        )
        return found

    def profile_requests(self) -> list[tuple[Protocol, Any]]:
        """The raw ``ExportProfilesServiceRequest`` s, with the protocol each came on."""
        return self._store.snapshot("profiles")

    def profile_samples(self) -> list[ReceivedProfileSample]:
        """Every profile sample received, resolved through its request's dictionary."""
        found: list[ReceivedProfileSample] = []
        for protocol, request in self._store.snapshot("profiles"):
            table = request.dictionary
            strings = table.string_table

            def frames(
                stack_index: int, table: Any = table, strings: Any = strings
            ) -> tuple[tuple[str, str, int], ...]:
                resolved = []
                for location_index in table.stack_table[stack_index].location_indices:
                    for line in table.location_table[location_index].lines:
                        function = table.function_table[line.function_index]
                        resolved.append(
                            (
                                strings[function.name_strindex],
                                strings[function.filename_strindex],
                                line.line,
                            )
                        )
                return tuple(resolved)

            for resource_profiles in request.resource_profiles:
                resource = attributes(resource_profiles.resource.attributes)
                for scope_profiles in resource_profiles.scope_profiles:
                    for profile in scope_profiles.profiles:
                        kind = (
                            strings[profile.sample_type.type_strindex],
                            strings[profile.sample_type.unit_strindex],
                        )
                        profile_attributes = {
                            strings[table.attribute_table[i].key_strindex]: any_value(
                                table.attribute_table[i].value
                            )
                            for i in profile.attribute_indices
                        }
                        for sample in profile.samples:
                            link = table.link_table[sample.link_index]
                            found.append(
                                ReceivedProfileSample(
                                    sample_type=kind,
                                    value=sum(sample.values),
                                    stack=frames(sample.stack_index),
                                    trace_id=link.trace_id.hex(),
                                    span_id=link.span_id.hex(),
                                    profile_attributes=profile_attributes,
                                    resource=resource,
                                    scope=scope_profiles.scope.name,
                                    protocol=protocol,
                                )
                            )
        return found

    def wait_for(
        self, predicate: Callable[[], _T], timeout: float = 10.0, interval: float = 0.05
    ) -> _T:
        """Poll ``predicate`` until its result is truthy or ``timeout`` passes; return the result.

        The last falsy result comes back on time-out, so ``assert receiver.wait_for(...)`` reads
        as the test's expectation.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result or time.monotonic() >= deadline:
                return result
            time.sleep(interval)
