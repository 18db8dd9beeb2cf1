"""Request and job spans (SERVER/CONSUMER spans other libraries make) carry memory, and
``memory.task.overlap`` on tasks and requests (SPEC: Request and job spans, Task span)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_memory import api as monitor
from otel_memory import traced_task
from otel_memory.activity.opentask import REQUEST, OpenTask, request_stack
from otel_memory.base import attributes as attr
from otel_memory.base.config import ConfigError, config_from_dict, load_config
from otel_memory.kernel.readings import MB
from otel_memory.runtime.runtime import get_runtime
from otel_memory.sinks import histograms as h
from otel_memory.testing import reading

MEMORY_KEYS = {
    attr.RSS_START, attr.RSS_END, attr.RSS_DELTA, attr.RSS_PEAK, attr.TASK_OVERLAP,
}  # fmt: skip


def _config(tmp_path: Path | None = None, **keys: object):
    monitor_keys = {"log_dir": str(tmp_path) if tmp_path else "", **keys}
    return config_from_dict({"general": {"monitoring": {"memory_monitor": monitor_keys}}})


@pytest.fixture
def started(tmp_path):
    """The monitor started on the global provider (the conftest's in-memory exporter)."""
    monitor.start(_config(tmp_path))
    yield tmp_path
    monitor.stop()


def _by_name(exporter) -> dict[str, object]:
    return {span.name: span for span in exporter.get_finished_spans()}


# --------------------------------------------------------------------------- request spans


def test_server_and_consumer_spans_carry_exact_memory_however_they_end(
    started, span_exporter, fake_source
):
    tracer = trace.get_tracer("some.instrumentation")
    start, end = reading(rss_mb=100), reading(rss_mb=130)

    fake_source.push(start, end)
    with tracer.start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER):
        pass
    fake_source.push(start, end)
    span = tracer.start_span("orders process", kind=SpanKind.CONSUMER)
    span.end()
    fake_source.push(start, end)
    with tracer.start_span("POST /a", kind=SpanKind.SERVER):  # Span.__exit__
        pass
    fake_source.push(start, end)
    with trace.use_span(tracer.start_span("PUT /b", kind=SpanKind.SERVER), end_on_exit=True):
        pass

    spans = _by_name(span_exporter)
    for name in ("GET /items/{id}", "orders process", "POST /a", "PUT /b"):
        # If this fails after an SDK upgrade, the SDK no longer ends spans through span.end
        # (or refuses instance attributes): requests.py's mechanism needs another hook.
        assert dict(spans[name].attributes) == {
            attr.RSS_START: 100 * MB,
            attr.RSS_END: 130 * MB,
            attr.RSS_DELTA: 30 * MB,
            attr.RSS_PEAK: 130 * MB,
            attr.TASK_OVERLAP: 0,
        }, name
    assert not get_runtime().open_tasks


def _has_dict(span: object) -> bool:
    """Whether the span's attributes live in a ``__dict__`` rather than inline (3.11+)."""
    return any(type(ref) is dict and "_context" in ref for ref in gc.get_referents(span))


def test_a_request_span_keeps_its_attributes_inline(started):
    # CPython 3.11+ keeps an instance's attributes inline until something asks for its
    # __dict__; from then on every attribute access of the SDK and its exporters is slower.
    tracer = trace.get_tracer("some.instrumentation")
    control = tracer.start_span("control")
    inline = not _has_dict(control)
    vars(control)
    if not inline or not _has_dict(control):
        pytest.skip("this Python keeps instance attributes in a dict anyway")
    control.end()

    with tracer.start_as_current_span("GET /inline", kind=SpanKind.SERVER) as span:
        pass

    assert span.end.__func__ is type(span).end  # the SDK's own end is back
    assert not _has_dict(span)


def test_other_kinds_and_a_stopped_monitor_get_nothing(started, span_exporter):
    tracer = trace.get_tracer("some.instrumentation")
    for kind in (SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER):
        with tracer.start_as_current_span(kind.name, kind=kind):
            pass
    monitor.stop()
    with tracer.start_as_current_span("GET /after-stop", kind=SpanKind.SERVER):
        pass
    for span in span_exporter.get_finished_spans():
        assert not MEMORY_KEYS & set(span.attributes), span.name


def test_request_spans_false_turns_it_off(tmp_path, span_exporter):
    monitor.start(_config(tmp_path, request_spans=False))
    with trace.get_tracer("x").start_as_current_span("GET /", kind=SpanKind.SERVER):
        pass
    (span,) = span_exporter.get_finished_spans()
    assert not MEMORY_KEYS & set(span.attributes)


def test_request_spans_variable_is_validated(monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_MEMORY_MONITOR_REQUEST_SPANS", "false")
    assert load_config().monitor.request_spans is False
    monkeypatch.setenv("OTEL_PYTHON_MEMORY_MONITOR_REQUEST_SPANS", "sometimes")
    with pytest.raises(ConfigError, match=r"memory_monitor\.request_spans") as caught:
        load_config()
    assert "sometimes" in str(caught.value) and "boolean" in str(caught.value)
    with pytest.raises(ConfigError, match=r"memory_monitor\.request_spans"):
        _config(request_spans="yes please")


def test_an_explicit_tracer_provider_gets_it(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monitor.start(_config(tmp_path), tracer_provider=provider)
    with provider.get_tracer("x").start_as_current_span("GET /", kind=SpanKind.SERVER):
        pass
    (span,) = exporter.get_finished_spans()
    assert set(span.attributes) >= MEMORY_KEYS


def test_a_spike_inside_a_request_is_its_peak_and_it_is_open_meanwhile(started, span_exporter):
    tracer = trace.get_tracer("x")
    runtime = get_runtime()
    with tracer.start_as_current_span("GET /dump", kind=SpanKind.SERVER):
        # Open: the sampler, the run state and --- lines see it.
        assert runtime.open_tasks.most_recent().name == "GET /dump"
        monitor.write_check_line()
        block = bytearray(150 * MB)
        block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
        time.sleep(0.4)  # a few sampler periods (100 ms)
        del block
    monitor.stop()
    (span,) = span_exporter.get_finished_spans()
    growth = span.attributes[attr.RSS_PEAK] - span.attributes[attr.RSS_START]
    assert growth >= 140 * MB
    assert span.attributes[attr.RSS_END] < span.attributes[attr.RSS_PEAK] - 100 * MB
    # No START/END lines for requests; the --- line named it.
    log = "".join(p.read_text() for p in started.glob("memory_*.log"))
    assert "--- [GET /dump]" in log
    assert "TASK START" not in log and "TASK END" not in log


def test_growth_histogram_links_to_the_request_span(tmp_path, span_exporter, fake_source):
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    monitor.start(_config(tmp_path), meter_provider=meters)
    fake_source.push(reading(rss_mb=100), reading(rss_mb=112))
    with trace.get_tracer("x").start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER):
        pass
    fake_source.push(reading(rss_mb=100), reading(rss_mb=90))
    with trace.get_tracer("x").start_as_current_span("jobs run", kind=SpanKind.CONSUMER):
        pass
    monitor.flush()  # the events thread records the histogram, after the spans ended
    spans = _by_name(span_exporter)
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == h.OTEL_MEMORY_REQUEST_RSS_GROWTH:
                    assert metric.unit == "By"
                    for point in metric.data.data_points:
                        points[point.attributes[h.ATTR_SPAN_NAME]] = point
    assert points["GET /items/{id}"].sum == 12 * MB
    assert points["jobs run"].sum == 0  # max(0, peak - start): it shrank
    for name, point in points.items():
        [exemplar] = point.exemplars
        context = spans[name].get_span_context()
        assert (exemplar.trace_id, exemplar.span_id) == (context.trace_id, context.span_id)
    meters.shutdown()


def test_every_request_from_many_threads_is_recorded_and_linked(tmp_path, span_exporter):
    # GIVEN the monitor with real readings, 8 threads serving 50 requests each
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    monitor.start(_config(tmp_path), meter_provider=meters)
    tracer = trace.get_tracer("some.instrumentation")
    start = threading.Barrier(8)

    def serve() -> None:
        start.wait()
        for _ in range(50):
            with tracer.start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER):
                bytearray(64 * 1024)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # WHEN the events thread has recorded what was queued
    monitor.flush()
    # THEN the histogram counts every request, and each exemplar is one of the request spans
    [point] = [
        point
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == h.OTEL_MEMORY_REQUEST_RSS_GROWTH
        for point in metric.data.data_points
    ]
    spans = [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert point.count == len(spans) == 400
    growths = [s.attributes[attr.RSS_PEAK] - s.attributes[attr.RSS_START] for s in spans]
    assert point.sum == sum(max(0, g) for g in growths)
    ids = {(s.context.trace_id, s.context.span_id) for s in spans}
    assert point.exemplars
    assert all((e.trace_id, e.span_id) in ids for e in point.exemplars)
    monitor.stop()
    meters.shutdown()


def test_request_histogram_names_are_bounded():
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    histogram = h.RequestHistogram(meters, max_names=3)
    tracer = TracerProvider().get_tracer("x")
    runtime = get_runtime()
    for i in range(6):
        span = tracer.start_span(f"GET /{i}", kind=SpanKind.SERVER)
        histogram.record(OpenTask(span.name, span, None, None, REQUEST), MB)
        span.end()
    names = {
        point.attributes[h.ATTR_SPAN_NAME]
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    }
    assert names == {"GET /0", "GET /1", "GET /2", "other"}
    assert not runtime.open_tasks
    meters.shutdown()


# --------------------------------------------------------------------------- overlap


def test_a_task_alone_has_overlap_zero_and_nested_tasks_do_not_count(span_exporter):
    with traced_task("outer"), traced_task("inner"):
        pass
    with traced_task("after"):
        pass
    spans = _by_name(span_exporter)
    assert [spans[n].attributes[attr.TASK_OVERLAP] for n in ("outer", "inner", "after")] == [
        0, 0, 0,
    ]  # fmt: skip


def test_concurrent_threads_overlap(span_exporter):
    barrier = threading.Barrier(3)
    done = threading.Barrier(3)

    def work(i: int) -> None:
        # The step is a descendant: never counted by its parent.
        with traced_task(f"job {i}"), traced_task(f"job {i} step"):
            barrier.wait()
            done.wait()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = _by_name(span_exporter)
    # Each job saw the two other jobs and their two steps open at once: 4, never its own step.
    for i in range(3):
        assert spans[f"job {i}"].attributes[attr.TASK_OVERLAP] == 4
        assert spans[f"job {i} step"].attributes[attr.TASK_OVERLAP] == 4


def test_asyncio_tasks_overlap_most_seen_at_once(span_exporter):
    async def job(name: str, hold: asyncio.Event, opened: asyncio.Event | None) -> None:
        with traced_task(name):
            if opened is not None:
                opened.set()
            await hold.wait()

    async def main() -> None:
        release_a, release_b = asyncio.Event(), asyncio.Event()
        a_open = asyncio.Event()
        a = asyncio.create_task(job("a", release_a, a_open))
        await a_open.wait()
        b = asyncio.create_task(job("b", release_b, None))
        c = asyncio.create_task(job("c", release_b, None))
        await asyncio.sleep(0.01)
        release_b.set()  # b and c end; a stays open alone
        await asyncio.gather(b, c)
        release_a.set()
        await a
        with traced_task("d"):  # after all of them
            pass

    asyncio.run(main())
    spans = _by_name(span_exporter)
    overlaps = {name: spans[name].attributes[attr.TASK_OVERLAP] for name in "abcd"}
    assert overlaps == {"a": 2, "b": 2, "c": 2, "d": 0}


def test_requests_overlap_each_other_not_their_own_tasks(started, span_exporter):
    tracer = trace.get_tracer("x")
    both_open = threading.Barrier(2)

    def serve(route: str) -> None:
        with tracer.start_as_current_span(route, kind=SpanKind.SERVER), traced_task(route + " work"):
            both_open.wait()

    with tracer.start_as_current_span("GET /alone", kind=SpanKind.SERVER), traced_task("alone work"):
        pass
    threads = [threading.Thread(target=serve, args=(r,)) for r in ("GET /a", "GET /b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = _by_name(span_exporter)
    assert spans["GET /alone"].attributes[attr.TASK_OVERLAP] == 0
    assert spans["alone work"].attributes[attr.TASK_OVERLAP] == 0
    for route in ("GET /a", "GET /b"):  # the other request and its task
        assert spans[route].attributes[attr.TASK_OVERLAP] == 2
        assert spans[f"{route} work"].attributes[attr.TASK_OVERLAP] == 2


def test_a_request_ended_in_another_context_leaves_no_trace_in_the_next(started, span_exporter):
    tracer = trace.get_tracer("x")
    for _ in range(5):  # each ended from another thread, as a streamed response may be
        span = tracer.start_span("GET /stream", kind=SpanKind.SERVER)
        ender = threading.Thread(target=span.end)
        ender.start()
        ender.join()
    with tracer.start_as_current_span("GET /next", kind=SpanKind.SERVER):
        assert [t.name for t in request_stack.get()] == ["GET /next"]
    assert len(span_exporter.get_finished_spans()) == 6
    assert not get_runtime().open_tasks
