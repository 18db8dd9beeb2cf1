"""Request and job spans from the real contrib instrumentations: Flask (werkzeug's client),
FastAPI under a real uvicorn on 127.0.0.1, a real Celery worker on an in-memory broker. Every
SERVER/CONSUMER span carries the memory attributes; a 150 MB allocation inside a request is
its peak; the growth histogram's exemplar links to the request span."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from http_helpers import free_port
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind

from otel_memory import api as monitor
from otel_memory.base import attributes as attr
from otel_memory.base.config import config_from_dict
from otel_memory.kernel.readings import MB
from otel_memory.sinks import histograms as h

MEMORY_KEYS = {attr.RSS_START, attr.RSS_END, attr.RSS_DELTA, attr.RSS_PEAK, attr.TASK_OVERLAP}
SPIKE = 150 * MB


def spike() -> int:
    """Allocate and touch 150 MB for a few sampler periods, then free it."""
    block = bytearray(SPIKE)
    block[::4096] = b"x" * len(range(0, SPIKE, 4096))
    time.sleep(0.35)
    size = len(block)
    del block
    return size


@pytest.fixture
def metrics_reader(tmp_path) -> Iterator[InMemoryMetricReader]:
    """The monitor started on the global tracer provider and an in-memory meter provider."""
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    config = config_from_dict({"general": {"monitoring": {"memory_monitor": {"log_dir": ""}}}})
    monitor.start(config, meter_provider=meters)
    yield reader
    monitor.stop()
    meters.shutdown()


def growth_points(reader: InMemoryMetricReader) -> dict[str, object]:
    monitor.flush()  # the events thread records the histogram, after the spans ended
    return {
        point.attributes[h.ATTR_SPAN_NAME]: point
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == h.OTEL_MEMORY_REQUEST_RSS_GROWTH
        for point in metric.data.data_points
    }


def request_spans(exporter) -> list:
    return [
        s for s in exporter.get_finished_spans() if s.kind in (SpanKind.SERVER, SpanKind.CONSUMER)
    ]


def assert_spike_is_peak_and_linked(span, reader: InMemoryMetricReader) -> None:
    growth = span.attributes[attr.RSS_PEAK] - span.attributes[attr.RSS_START]
    assert growth >= SPIKE - 10 * MB, span.name
    point = growth_points(reader)[span.name]
    assert point.max >= SPIKE - 10 * MB
    context = span.get_span_context()
    assert any(
        (e.trace_id, e.span_id) == (context.trace_id, context.span_id) for e in point.exemplars
    )


# --------------------------------------------------------------------------- Flask


def test_flask_request_spans(span_exporter, metrics_reader):
    flask = pytest.importorskip("flask")
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = flask.Flask("shop")

    @app.route("/items/<int:item>")
    def item(item: int) -> str:
        return str(item)

    @app.route("/dump")
    def dump() -> str:
        return str(spike())

    FlaskInstrumentor().instrument_app(app)
    try:
        client = app.test_client()
        for i in range(50):
            assert client.get(f"/items/{i}").status_code == 200
        assert client.get("/dump").status_code == 200
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    spans = request_spans(span_exporter)
    assert len(spans) == 51
    assert all(set(s.attributes) >= MEMORY_KEYS for s in spans)
    assert all(s.attributes[attr.TASK_OVERLAP] == 0 for s in spans)  # one at a time
    (dump_span,) = [s for s in spans if s.name == "GET /dump"]
    assert_spike_is_peak_and_linked(dump_span, metrics_reader)
    assert set(growth_points(metrics_reader)) == {"GET /items/<int:item>", "GET /dump"}


# --------------------------------------------------------------------------- FastAPI / uvicorn



def test_fastapi_under_uvicorn_request_spans(span_exporter, metrics_reader):
    fastapi = pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = fastapi.FastAPI()

    @app.get("/items/{item}")
    async def item(item: int) -> dict[str, int]:
        return {"item": item}

    @app.get("/dump")
    def dump() -> dict[str, int]:  # a sync route: runs in the threadpool, as users write it
        return {"size": spike()}

    FastAPIInstrumentor.instrument_app(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        for i in range(30):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/items/{i}", timeout=5) as r:
                assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dump", timeout=10) as r:
            assert r.status == 200
    finally:
        server.should_exit = True
        thread.join(10)
        FastAPIInstrumentor.uninstrument_app(app)

    spans = request_spans(span_exporter)
    assert len(spans) == 31
    assert all(set(s.attributes) >= MEMORY_KEYS for s in spans), [
        s.name for s in spans if not set(s.attributes) >= MEMORY_KEYS
    ]
    (dump_span,) = [s for s in spans if s.name == "GET /dump"]
    assert_spike_is_peak_and_linked(dump_span, metrics_reader)


# --------------------------------------------------------------------------- Celery


def test_celery_worker_job_spans(span_exporter, metrics_reader):
    celery = pytest.importorskip("celery")
    from celery.contrib.testing.worker import start_worker
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    app = celery.Celery("jobs", broker="memory://", backend="cache+memory://")
    app.conf.task_default_queue = "otel-memory-test"

    @app.task(name="jobs.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="jobs.dump")
    def dump() -> int:
        return spike()

    CeleryInstrumentor().instrument()
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            results = [add.delay(i, i) for i in range(20)]
            assert [r.get(timeout=10) for r in results] == [2 * i for i in range(20)]
            assert dump.delay().get(timeout=20) == SPIKE
    finally:
        CeleryInstrumentor().uninstrument()

    spans = [s for s in request_spans(span_exporter) if s.name.startswith("run/")]
    assert len(spans) == 21
    assert all(s.kind is SpanKind.CONSUMER for s in spans)
    assert all(set(s.attributes) >= MEMORY_KEYS for s in spans)
    (dump_span,) = [s for s in spans if s.name == "run/jobs.dump"]
    assert_spike_is_peak_and_linked(dump_span, metrics_reader)
