"""Task spans: attributes from readings, nesting, errors, every callable kind, concurrency."""

from __future__ import annotations

import asyncio
import mmap
import threading

import psutil
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_memory import clear_active_task, set_active_task, traced_task
from otel_memory.base import attributes as attr
from otel_memory.kernel.readings import MB
from otel_memory.runtime.runtime import get_runtime
from otel_memory.testing import FakeReadingSource, reading


def spans_by_name(exporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_span_attributes_match_the_readings_exactly(span_exporter, fake_source):
    start = reading(rss_mb=100, vms_mb=300, available_mb=1500, total_mb=2000)
    end = reading(rss_mb=160, vms_mb=290, available_mb=1400, total_mb=2000)
    fake_source.push(start, end)

    set_active_task("Nations Dump Download")
    clear_active_task("Nations Dump Complete")

    (span,) = span_exporter.get_finished_spans()
    assert span.name == "Nations Dump Download"
    assert span.kind is SpanKind.INTERNAL
    assert span.instrumentation_scope.name == "otel_memory"
    assert dict(span.attributes) == {
        attr.RSS_START: start.rss,
        attr.VMS_START: start.vms,
        attr.SYSTEM_AVAILABLE_START: start.system_available,
        attr.SYSTEM_FREE_RATIO_START: 0.75,
        attr.RSS_END: end.rss,
        attr.VMS_END: end.vms,
        attr.SYSTEM_AVAILABLE_END: end.system_available,
        attr.SYSTEM_FREE_RATIO_END: 0.7,
        attr.RSS_DELTA: 60 * MB,
        attr.VMS_DELTA: -10 * MB,
        attr.RSS_PEAK: end.rss,
        attr.TASK_END_LABEL: "Nations Dump Complete",
        attr.LIMIT: start.system_total,
        attr.TASK_OVERLAP: 0,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_peak_comes_from_samples_taken_while_the_task_runs(span_exporter):
    source = FakeReadingSource([reading(rss_mb=100), reading(rss_mb=120)])
    source.rss_samples = [300 * MB, 250 * MB]
    from otel_memory import api as readings

    readings.set_reading_source(source)
    try:
        with traced_task("Nations Dump Processing"):
            get_runtime().sampler.sample_now()
            get_runtime().sampler.sample_now()
    finally:
        readings.set_reading_source(None)

    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[attr.RSS_PEAK] == 300 * MB


def test_peak_is_never_below_start_or_end(span_exporter, fake_source):
    fake_source.push(reading(rss_mb=500), reading(rss_mb=200))
    fake_source.rss_samples = [50 * MB]
    with traced_task("shrinking"):
        get_runtime().sampler.sample_now()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[attr.RSS_PEAK] == 500 * MB


def test_real_psutil_values_are_plausible(span_exporter):
    with traced_task("real"):
        # a fresh anonymous mapping: the allocator cannot hand back pages that are resident
        # already (as a bytearray may, after earlier tests freed large blocks)
        ballast = mmap.mmap(-1, 20 * MB)
        for offset in range(0, 20 * MB, 4096):
            ballast[offset] = 1  # touch every page so it is resident
    (span,) = span_exporter.get_finished_spans()
    a = span.attributes
    own = psutil.Process().memory_info()
    assert 5 * MB < a[attr.RSS_START] < 4 * own.rss
    assert a[attr.RSS_END] - a[attr.RSS_START] == a[attr.RSS_DELTA]
    assert a[attr.RSS_DELTA] >= 15 * MB  # the 20 MB ballast was still alive at the end
    assert a[attr.RSS_PEAK] >= max(a[attr.RSS_START], a[attr.RSS_END])
    assert a[attr.VMS_START] >= a[attr.RSS_START]
    total = psutil.virtual_memory().total
    assert 0 < a[attr.SYSTEM_AVAILABLE_START] <= total
    assert 0.0 < a[attr.SYSTEM_FREE_RATIO_END] <= 1.0
    ballast.close()


def test_nested_tasks_are_child_spans(span_exporter):
    with traced_task("Nations Dump"):
        set_active_task("Nations Dump Download")
        clear_active_task()

        @traced_task("Nations Dump Processing")
        def process() -> int:
            return 7

        assert process() == 7
    spans = spans_by_name(span_exporter)
    parent = spans["Nations Dump"]
    assert parent.parent is None
    for child in ("Nations Dump Download", "Nations Dump Processing"):
        assert spans[child].parent.span_id == parent.context.span_id
        assert spans[child].context.trace_id == parent.context.trace_id


def test_task_span_is_current_so_other_spans_nest_under_it(span_exporter):
    tracer = trace.get_tracer("app")
    with traced_task("outer"), tracer.start_as_current_span("db query"):
        pass
    spans = spans_by_name(span_exporter)
    assert spans["db query"].parent.span_id == spans["outer"].context.span_id


def test_exception_is_recorded_marks_error_and_is_reraised(span_exporter):
    @traced_task("Regions Dump")
    def dump() -> None:
        raise ValueError("bad XML")

    with pytest.raises(ValueError, match="bad XML"):
        dump()
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "ValueError: bad XML" in span.status.description
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"


def test_label_ending_in_error_or_error_argument_marks_error(span_exporter):
    set_active_task("a")
    clear_active_task("Nations Dump Error")
    set_active_task("b")
    clear_active_task("failed", error=RuntimeError("boom"))
    set_active_task("c")
    clear_active_task("Nations Dump Complete")
    spans = spans_by_name(span_exporter)
    assert spans["a"].status.status_code is StatusCode.ERROR
    assert spans["a"].attributes[attr.TASK_END_LABEL] == "Nations Dump Error"
    assert spans["b"].status.status_code is StatusCode.ERROR
    assert spans["b"].events[0].attributes["exception.message"] == "boom"
    assert spans["c"].status.status_code is StatusCode.UNSET


def test_clear_with_nothing_open_is_a_quiet_no_op(span_exporter, caplog):
    caplog.set_level("DEBUG", logger="otel_memory")
    clear_active_task("nothing")
    assert span_exporter.get_finished_spans() == ()
    assert "no task open" in caplog.text


def test_span_keeps_the_true_name_with_newlines_and_brackets(span_exporter):
    with traced_task("weird]\nname"):
        pass
    assert span_exporter.get_finished_spans()[0].name == "weird]\nname"


async def test_coroutine_function_and_async_with(span_exporter):
    @traced_task("fetch")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async with traced_task("batch"):
        assert await fetch(21) == 42
    spans = spans_by_name(span_exporter)
    assert spans["fetch"].parent.span_id == spans["batch"].context.span_id


def test_generator_span_covers_its_life_and_only_its_steps(span_exporter):
    @traced_task("rows")
    def rows():
        for i in range(3):
            with traced_task(f"row {i}"):
                pass
            yield i
        return "done"

    gen = rows()
    assert next(gen) == 0
    with traced_task("consumer step"):  # runs between steps: not a child of "rows"
        pass
    assert list(gen) == [1, 2]
    spans = spans_by_name(span_exporter)
    rows_id = spans["rows"].context.span_id
    assert all(spans[f"row {i}"].parent.span_id == rows_id for i in range(3))
    assert spans["consumer step"].parent is None
    assert spans["rows"].end_time >= spans["row 2"].end_time


def test_generator_closed_early_ends_ok_and_thrown_error_marks_error(span_exporter):
    @traced_task("gen")
    def gen():
        yield 1
        yield 2

    g = gen()
    next(g)
    g.close()
    g2 = gen()
    next(g2)
    with pytest.raises(KeyError):
        g2.throw(KeyError("x"))
    first, second = span_exporter.get_finished_spans()
    assert first.status.status_code is StatusCode.UNSET
    assert second.status.status_code is StatusCode.ERROR


async def test_async_generator(span_exporter):
    @traced_task("stream")
    async def stream():
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    assert [x async for x in stream()] == [0, 1, 2]
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "stream"
    assert attr.RSS_END in span.attributes


async def test_child_asyncio_task_cannot_end_its_parents_task(span_exporter):
    set_active_task("parent")

    async def child() -> None:
        clear_active_task("not mine")  # inherited the parent's stack, but must not end it

    await asyncio.create_task(child())
    assert span_exporter.get_finished_spans() == ()
    clear_active_task("parent done")
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[attr.TASK_END_LABEL] == "parent done"


def test_leaving_a_with_block_ends_legacy_tasks_forgotten_inside(span_exporter):
    with traced_task("outer"):
        set_active_task("forgotten")
    names = [s.name for s in span_exporter.get_finished_spans()]
    assert names == ["forgotten", "outer"]
    assert len(get_runtime().open_tasks) == 0


async def test_a_thousand_concurrent_asyncio_tasks_never_end_each_others_spans(span_exporter):
    async def job(i: int) -> None:
        async with traced_task(f"outer {i}"):
            await asyncio.sleep(0)
            set_active_task(f"inner {i}")
            await asyncio.sleep(0.001 * (i % 5))
            clear_active_task(f"inner {i} done")
            await asyncio.sleep(0)

    await asyncio.gather(*(job(i) for i in range(1000)))
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2000
    assert len({s.context.span_id for s in spans}) == 2000  # each ended exactly once
    by_name = {s.name: s for s in spans}
    for i in range(1000):
        inner, outer = by_name[f"inner {i}"], by_name[f"outer {i}"]
        assert inner.parent.span_id == outer.context.span_id
        assert inner.attributes[attr.TASK_END_LABEL] == f"inner {i} done"
        assert outer.parent is None
    assert len(get_runtime().open_tasks) == 0


def test_sixteen_threads_with_nested_tasks(span_exporter):
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for j in range(20):
                set_active_task(f"t{n}.{j}")

                @traced_task(f"t{n}.{j}.child")
                def child(j: int = j) -> None:
                    with traced_task(f"t{n}.{j}.grandchild"):
                        pass

                child()
                clear_active_task()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 16 * 20 * 3
    assert len({s.context.span_id for s in spans}) == len(spans)
    by_name = {s.name: s for s in spans}
    for n in range(16):
        for j in range(20):
            top = by_name[f"t{n}.{j}"]
            child = by_name[f"t{n}.{j}.child"]
            grandchild = by_name[f"t{n}.{j}.grandchild"]
            assert top.parent is None
            assert child.parent.span_id == top.context.span_id
            assert grandchild.parent.span_id == child.context.span_id


def test_a_failing_reading_source_never_raises_into_the_host(span_exporter):
    from otel_memory import api as readings

    readings.set_reading_source(FakeReadingSource(fail_with=psutil.AccessDenied()))
    try:

        @traced_task("still runs")
        def work() -> str:
            return "ok"

        assert work() == "ok"
    finally:
        readings.set_reading_source(None)
    (span,) = span_exporter.get_finished_spans()
    assert attr.RSS_START not in span.attributes


def test_a_reading_that_fails_only_at_the_end_keeps_the_start_attributes(span_exporter):
    from otel_memory import api as readings
    from otel_memory.testing import reading

    source = FakeReadingSource([reading(rss_mb=100, vms_mb=300, available_mb=500)])
    readings.set_reading_source(source)
    with traced_task("end unreadable"):
        source.fail_with = psutil.AccessDenied()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[attr.RSS_START] == 100 * MB
    assert span.attributes[attr.VMS_START] == 300 * MB
    assert span.attributes[attr.SYSTEM_AVAILABLE_START] == 500 * MB
    assert span.attributes[attr.SYSTEM_FREE_RATIO_START] == 500 / 2048
    assert span.attributes[attr.LIMIT] == 2048 * MB
    assert attr.RSS_END not in span.attributes and attr.RSS_DELTA not in span.attributes


def test_a_reading_that_fails_only_at_the_start_keeps_the_end_attributes(span_exporter):
    from otel_memory import api as readings
    from otel_memory.testing import reading

    source = FakeReadingSource(fail_with=psutil.AccessDenied())
    readings.set_reading_source(source)
    with traced_task("start unreadable"):
        source.fail_with = None
        source.push(reading(rss_mb=120))
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[attr.RSS_END] == 120 * MB
    assert span.attributes[attr.RSS_PEAK] == 120 * MB
    assert attr.RSS_START not in span.attributes and attr.RSS_DELTA not in span.attributes
