"""Gauges on meter otel_memory, read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import gc
import itertools
import logging
import sys
import threading

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

from otel_memory.activity import watched as watch
from otel_memory.activity.census import OTHER, HeapCensus, census_of, class_name, take_census
from otel_memory.base.config import config_from_dict
from otel_memory.guards.profiler import Profiler
from otel_memory.kernel.readings import MB, MemoryReading
from otel_memory.sinks import gauges as m
from otel_memory.sinks import histograms as h
from otel_memory.testing import FakeReadingSource, reading


def profiling(enabled=True, top_n=50, leak_snapshots=2):
    return config_from_dict(
        {
            "general": {
                "monitoring": {
                    "memory_profiling": {
                        "enabled": enabled,
                        "top_n_classes": top_n,
                        "leak_snapshots": leak_snapshots,
                    }
                }
            }
        }
    )


class CountingCensus:
    """A census function that counts its calls (the real census unless ``fixed`` is given)."""

    def __init__(self, fixed: HeapCensus | None = None) -> None:
        self.fixed = fixed
        self.calls = 0

    def __call__(self) -> HeapCensus:
        self.calls += 1
        return self.fixed if self.fixed is not None else take_census()


@pytest.fixture
def reader():
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader):
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def collect(reader) -> dict[str, list]:
    """{metric name: data points} of one collection, for scope otel_memory."""
    data = reader.get_metrics_data()
    found: dict[str, list] = {}
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != m.METER_NAME:
                continue
            for metric in scope_metrics.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def by_attribute(points, key) -> dict[str, float]:
    return {p.attributes[key]: p.value for p in points}


def test_memory_gauges_report_one_reading_per_cycle(reader, provider):
    source = FakeReadingSource(
        [reading(rss_mb=100, vms_mb=300, available_mb=512, total_mb=2048), reading(rss_mb=150)]
    )
    m.install_metrics(profiling(enabled=False), meter_provider=provider, reading_source=source)

    first = collect(reader)
    assert source.calls == 1
    second = collect(reader)
    assert source.calls == 2

    assert first[m.PROCESS_MEMORY_USAGE][0].value == 100 * MB
    assert first[m.PROCESS_MEMORY_VIRTUAL][0].value == 300 * MB
    assert first[m.OTEL_MEMORY_AVAILABLE][0].value == 512 * MB
    assert first[m.OTEL_MEMORY_FREE_RATIO][0].value == pytest.approx(0.25)
    assert first[m.OTEL_MEMORY_LIMIT][0].value == 2048 * MB
    assert second[m.PROCESS_MEMORY_USAGE][0].value == 150 * MB


def test_heap_gauges_are_registered_only_with_profiling_enabled(reader, provider):
    m.install_metrics(
        profiling(enabled=False), meter_provider=provider, reading_source=FakeReadingSource()
    )
    names = set(collect(reader))
    assert m.PROCESS_MEMORY_USAGE in names
    assert not names & {m.PYTHON_HEAP_OBJECTS, m.PYTHON_HEAP_SIZE, m.PYTHON_HEAP_LEAK_SUSPECTS}


def test_heap_gauges_count_a_local_class_exactly(reader, provider):
    class Cached:
        pass

    keep = [Cached() for _ in range(1234)]
    m.install_metrics(
        profiling(top_n=1000), meter_provider=provider, reading_source=FakeReadingSource()
    )

    points = collect(reader)

    name = class_name(Cached)
    assert by_attribute(points[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE)[name] == 1234
    sizes = by_attribute(points[m.PYTHON_HEAP_SIZE], m.ATTR_PYTHON_TYPE)
    assert sizes[name] == 1234 * sys.getsizeof(keep[0])


def test_one_census_serves_both_heap_gauges_each_cycle(reader, provider):
    take = CountingCensus()
    m.install_metrics(
        profiling(), meter_provider=provider, reading_source=FakeReadingSource(), take=take
    )

    collect(reader)
    assert take.calls == 1
    collect(reader)
    collect(reader)
    assert take.calls == 3


def test_series_stay_bounded_and_other_makes_the_totals_complete(reader, provider):
    objs = [[] for _ in range(5)] + [{} for _ in range(4)] + [() for _ in range(3)]
    objs += [set() for _ in range(2)] + [frozenset()]
    census = census_of(objs)
    m.install_metrics(
        profiling(top_n=1),
        meter_provider=provider,
        reading_source=FakeReadingSource(),
        take=CountingCensus(census),
    )

    points = collect(reader)

    objects = by_attribute(points[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE)
    sizes = by_attribute(points[m.PYTHON_HEAP_SIZE], m.ATTR_PYTHON_TYPE)
    assert len(objects) <= 3  # top 1 by count, top 1 by size, other
    assert OTHER in objects
    assert sum(objects.values()) == census.total_objects == len(objs)
    assert sum(sizes.values()) == census.total_size
    assert set(sizes) == set(objects)


def test_the_real_heap_stays_within_2n_plus_1_series(reader, provider):
    m.install_metrics(
        profiling(top_n=5), meter_provider=provider, reading_source=FakeReadingSource()
    )
    points = collect(reader)
    assert len(points[m.PYTHON_HEAP_OBJECTS]) <= 11
    assert len(points[m.PYTHON_HEAP_SIZE]) <= 11


def test_a_failing_reading_source_never_escapes_and_is_logged_once(reader, provider, caplog):
    source = FakeReadingSource(fail_with=psutil.Error("denied"))
    m.install_metrics(profiling(enabled=False), meter_provider=provider, reading_source=source)

    with caplog.at_level(logging.WARNING, logger="otel_memory"):
        first = collect(reader)
        collect(reader)

    assert m.PROCESS_MEMORY_USAGE not in first
    assert source.calls == 2  # one attempt per cycle, shared by the four memory gauges
    warnings = [
        r for r in caplog.records if r.name == "otel_memory" and "reading failed" in r.message
    ]
    assert len(warnings) == 1


def test_oserror_from_the_source_is_caught_too(reader, provider):
    source = FakeReadingSource(fail_with=OSError("no /proc"))
    m.install_metrics(profiling(enabled=False), meter_provider=provider, reading_source=source)
    assert m.PROCESS_MEMORY_USAGE not in collect(reader)


def test_callbacks_are_no_ops_after_close(reader, provider):
    source = FakeReadingSource()
    take = CountingCensus()
    handle = m.install_metrics(
        profiling(), meter_provider=provider, reading_source=source, take=take
    )
    assert collect(reader)

    handle.close()
    handle.close()

    assert collect(reader) == {}
    assert source.calls == 1
    assert take.calls == 1


class KeepingExporter(MetricExporter):
    """Keeps every batch the periodic reader's thread exports (the SDK ships no such exporter)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def test_a_collection_under_way_when_the_handle_closes_reports_each_cycle_whole():
    # GIVEN the reader's own thread collecting every 10 ms, a real census each cycle
    exporter = KeepingExporter()
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=10)]
    )
    in_census = threading.Event()

    def take() -> HeapCensus:
        in_census.set()
        return take_census()

    try:
        for _ in range(5):
            in_census.clear()
            handle = m.install_metrics(profiling(), meter_provider=provider, take=take)
            assert in_census.wait(10)
            # WHEN stop() closes the handle while that thread is inside a cycle's census
            handle.close()
        provider.force_flush()
    finally:
        provider.shutdown()

    # THEN every exported cycle has both heap gauges with the same classes, or neither
    reported = 0
    for batch in exporter.batches:
        for resource in batch.resource_metrics:
            for scope in resource.scope_metrics:
                types = {
                    metric.name: {p.attributes[m.ATTR_PYTHON_TYPE] for p in metric.data.data_points}
                    for metric in scope.metrics
                    if metric.name in (m.PYTHON_HEAP_OBJECTS, m.PYTHON_HEAP_SIZE)
                }
                if types:
                    assert types.get(m.PYTHON_HEAP_OBJECTS) == types.get(m.PYTHON_HEAP_SIZE)
                    reported += 1
    assert reported >= 5


def test_a_reading_cycle_under_way_when_the_handle_closes_reports_every_memory_gauge(
    reader, provider
):
    # GIVEN a reading that the handle's close() interrupts (stop() on another thread)
    handle = None

    class ClosingSource(FakeReadingSource):
        def read(self):
            handle.close()
            return super().read()

    handle = m.install_metrics(
        profiling(enabled=False), meter_provider=provider, reading_source=ClosingSource()
    )
    # WHEN collected: that cycle reports every memory gauge, the next one nothing
    first = collect(reader)
    assert {m.PROCESS_MEMORY_USAGE, m.PROCESS_MEMORY_VIRTUAL, m.OTEL_MEMORY_LIMIT} <= set(first)
    assert m.OTEL_MEMORY_AVAILABLE in first and m.OTEL_MEMORY_FREE_RATIO in first
    assert collect(reader) == {}


def test_idle_trend_is_the_rss_slope_while_no_task_is_open(reader, provider):
    t0 = 1_763_281_800.0
    source = FakeReadingSource(
        [
            reading(rss_mb=100, timestamp=t0),
            reading(rss_mb=105, timestamp=t0 + 1800),
            reading(rss_mb=110, timestamp=t0 + 3600),
        ]
    )
    m.install_metrics(
        profiling(enabled=False),
        meter_provider=provider,
        reading_source=source,
        is_idle=lambda: True,
    )

    first = collect(reader)
    assert m.OTEL_MEMORY_IDLE_TREND not in first  # one sample is no trend
    collect(reader)
    third = collect(reader)

    assert third[m.OTEL_MEMORY_IDLE_TREND][0].value == pytest.approx(10 * MB)


def test_busy_readings_do_not_feed_the_idle_trend(reader, provider):
    source = FakeReadingSource(
        [reading(rss_mb=100, timestamp=0), reading(rss_mb=900, timestamp=60)]
    )
    handle = m.install_metrics(
        profiling(enabled=False),
        meter_provider=provider,
        reading_source=source,
        is_idle=lambda: False,
    )
    collect(reader)
    collect(reader)
    assert len(handle.idle_trend) == 0


def test_heap_gauges_reuse_the_profilers_census_and_export_leak_suspects(reader, provider):
    config = profiling(leak_snapshots=2)
    script = iter(
        [
            HeapCensus(
                counts={"app.Message": n, "dict": 10}, sizes={"app.Message": n * 10, "dict": 100}
            )
            for n in (10_000, 20_000, 30_000)
        ]
    )
    profiler = Profiler(config, take=lambda: next(script))
    take = CountingCensus()
    m.install_metrics(
        config,
        meter_provider=provider,
        reading_source=FakeReadingSource(),
        profiler=profiler,
        take=take,
    )
    for _ in range(3):
        gc.collect()  # the leak trend only takes censuses made after a full collection
        profiler.snapshot()

    points = collect(reader)

    assert take.calls == 0  # the profiler's latest census served the heap gauges
    assert by_attribute(points[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE)["app.Message"] == 30_000
    assert points[m.PYTHON_HEAP_LEAK_SUSPECTS][0].value == 1
    assert by_attribute(points[m.PYTHON_HEAP_GROWTH_STREAK], m.ATTR_PYTHON_TYPE) == {
        "app.Message": 2
    }
    collect(reader)
    assert take.calls == 1  # no new snapshot since: the next cycle takes its own


def test_watched_collections_are_exported(reader, provider):
    failures = {1: "x", 2: "y"}
    watch.watch("message_fetch_failures", lambda: failures)
    try:
        m.install_metrics(
            profiling(enabled=False), meter_provider=provider, reading_source=FakeReadingSource()
        )
        points = collect(reader)
    finally:
        watch.unwatch("message_fetch_failures")
    assert by_attribute(points[m.PYTHON_COLLECTION_SIZE], m.ATTR_COLLECTION_NAME) == {
        "message_fetch_failures": 2
    }


def test_metric_names_are_unique_and_complete():
    assert len(set(m.METRIC_NAMES)) == len(m.METRIC_NAMES)
    constants = {
        value
        for key, value in vars(m).items()
        if key.startswith(("PROCESS_", "SYSTEM_MEMORY_", "OTEL_MEMORY_", "PYTHON_"))
        and isinstance(value, str)
    }
    assert constants == set(m.METRIC_NAMES)


def test_a_second_install_on_the_same_provider_reports_after_the_first_is_closed(reader, provider):
    # GIVEN start(); stop(); start() on one meter provider
    first = m.install_metrics(
        profiling(enabled=False),
        meter_provider=provider,
        reading_source=FakeReadingSource([reading(rss_mb=100)]),
    )
    first.close()
    # WHEN installed again, now with profiling on
    m.install_metrics(
        profiling(top_n=5),
        meter_provider=provider,
        reading_source=FakeReadingSource([reading(rss_mb=200)]),
        take=CountingCensus(census_of([[], {}])),
    )

    points = collect(reader)

    # THEN the new handle's values arrive, heap gauges included
    assert points[m.PROCESS_MEMORY_USAGE][0].value == 200 * MB
    assert by_attribute(points[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE) == {"list": 1, "dict": 1}


def test_installing_again_replaces_the_previous_handle(reader, provider):
    old = FakeReadingSource([reading(rss_mb=100)])
    new = FakeReadingSource([reading(rss_mb=300)])
    m.install_metrics(profiling(enabled=False), meter_provider=provider, reading_source=old)
    m.install_metrics(profiling(enabled=False), meter_provider=provider, reading_source=new)

    points = collect(reader)

    assert [p.value for p in points[m.PROCESS_MEMORY_USAGE]] == [300 * MB]
    assert old.calls == 0


def test_a_failing_census_never_escapes_and_is_logged_once(reader, provider, caplog):
    def broken() -> HeapCensus:
        raise RuntimeError("census broke")

    m.install_metrics(
        profiling(), meter_provider=provider, reading_source=FakeReadingSource(), take=broken
    )
    with caplog.at_level(logging.WARNING, logger="otel_memory"):
        first = collect(reader)
        collect(reader)

    assert m.PYTHON_HEAP_OBJECTS not in first
    assert m.PROCESS_MEMORY_USAGE in first
    assert len([r for r in caplog.records if "heap gauges skipped" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- SPEC v0.2


def metric_objects(reader) -> dict[str, list]:
    """{metric name: [Metric, ...]} of one collection, every scope (to count duplicates)."""
    data = reader.get_metrics_data()
    found: dict[str, list] = {}
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.setdefault(metric.name, []).append(metric)
    return found


def test_semconv_names_are_up_down_counters_and_ours_have_their_types(reader, provider):
    m.install_metrics(
        profiling(enabled=False), meter_provider=provider, reading_source=FakeReadingSource()
    )
    [only] = [metric_objects(reader)]
    kinds = {name: (type(ms[0].data).__name__, getattr(ms[0].data, "is_monotonic", None), ms[0].unit)
             for name, ms in only.items()}  # fmt: skip

    for name in (m.PROCESS_MEMORY_USAGE, m.PROCESS_MEMORY_VIRTUAL, m.SYSTEM_MEMORY_LINUX_AVAILABLE,
                 m.OTEL_MEMORY_LIMIT, m.OTEL_MEMORY_AVAILABLE):  # fmt: skip
        assert kinds[name] == ("Sum", False, "By"), name
    assert kinds[m.OTEL_MEMORY_FREE_RATIO] == ("Gauge", None, "1")
    assert "system.memory.free_ratio" not in kinds
    assert "process.memory.idle_trend" not in kinds


def test_limit_carries_its_source_and_linux_available_reports_the_host(reader, provider):
    capped = MemoryReading(
        timestamp=0.0, rss=100 * MB, vms=200 * MB, system_available=300 * MB,
        system_total=512 * MB, host_available=6000 * MB, limit_source="cgroup_v2",
    )  # fmt: skip
    m.install_metrics(
        profiling(enabled=False), meter_provider=provider, reading_source=FakeReadingSource([capped])
    )

    points = collect(reader)

    [limit] = points[m.OTEL_MEMORY_LIMIT]
    assert (limit.value, dict(limit.attributes)) == (512 * MB, {m.ATTR_LIMIT_SOURCE: "cgroup_v2"})
    assert points[m.OTEL_MEMORY_AVAILABLE][0].value == 300 * MB
    assert points[m.OTEL_MEMORY_FREE_RATIO][0].value == pytest.approx(300 / 512)
    assert points[m.SYSTEM_MEMORY_LINUX_AVAILABLE][0].value == 6000 * MB


def test_linux_available_is_the_effective_one_when_the_host_value_is_unknown(reader, provider):
    m.install_metrics(
        profiling(enabled=False),
        meter_provider=provider,
        reading_source=FakeReadingSource([reading(available_mb=700)]),
    )
    points = collect(reader)
    assert points[m.SYSTEM_MEMORY_LINUX_AVAILABLE][0].value == 700 * MB
    assert by_attribute(points[m.OTEL_MEMORY_LIMIT], m.ATTR_LIMIT_SOURCE) == {"host": 2048 * MB}


@pytest.fixture
def system_metrics():
    """opentelemetry-instrumentation-system-metrics (a process-wide singleton), undone after."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    started = []

    def instrument(provider, config=None):
        instrumentor = SystemMetricsInstrumentor(config=config)
        if config is not None:
            instrumentor._config = config  # the singleton keeps its first __init__'s config
        instrumentor.instrument(meter_provider=provider)
        started.append(instrumentor)

    yield instrument
    for instrumentor in started:
        instrumentor.uninstrument()
    SystemMetricsInstrumentor._instance = None


@pytest.mark.parametrize("system_metrics_first", [True, False])
def test_each_semconv_name_arrives_once_next_to_system_metrics(
    reader, provider, system_metrics, system_metrics_first
):
    if system_metrics_first:
        system_metrics(provider)
    m.install_metrics(
        profiling(enabled=False), meter_provider=provider, reading_source=FakeReadingSource()
    )
    if not system_metrics_first:
        system_metrics(provider)

    found = metric_objects(reader)

    for name in (m.PROCESS_MEMORY_USAGE, m.PROCESS_MEMORY_VIRTUAL):
        [metric] = found[name]  # exactly one
        assert type(metric.data).__name__ == "Sum"
        assert len(metric.data.data_points) == 1
    # the names system-metrics does not export are still ours
    assert len(found[m.SYSTEM_MEMORY_LINUX_AVAILABLE]) == 1
    assert len(found[m.OTEL_MEMORY_LIMIT]) == 1


def test_ours_report_when_system_metrics_leaves_the_name_out(reader, provider, system_metrics):
    system_metrics(provider, config={"system.memory.usage": ["used"]})
    m.install_metrics(
        profiling(enabled=False),
        meter_provider=provider,
        reading_source=FakeReadingSource([reading(rss_mb=123)]),
    )
    points = collect(reader)
    assert points[m.PROCESS_MEMORY_USAGE][0].value == 123 * MB


def test_system_metrics_detection_follows_instrument_and_uninstrument(provider, system_metrics):
    assert not m.system_metrics_exports(m.PROCESS_MEMORY_USAGE)
    system_metrics(provider)
    assert m.system_metrics_exports(m.PROCESS_MEMORY_USAGE)
    assert not m.system_metrics_exports(m.SYSTEM_MEMORY_LINUX_AVAILABLE)


# --------------------------------------------------------------------------- stable classes


def churning_censuses(cycles: int, classes: int = 40):
    """Censuses whose top class changes every time: class i leads in census i."""
    for i in range(cycles):
        counts = {f"app.C{k}": 10 + (1000 if k == i % classes else k % 3) for k in range(classes)}
        yield HeapCensus(counts=counts, sizes={name: n * 8 for name, n in counts.items()})


def test_heap_classes_do_not_churn_when_the_ranking_does(reader, provider):
    censuses = churning_censuses(30)
    m.install_metrics(
        profiling(top_n=2),
        meter_provider=provider,
        reading_source=FakeReadingSource(),
        take=lambda: next(censuses),
    )

    seen: list[set[str]] = []
    for _ in range(30):
        seen.append(set(by_attribute(collect(reader)[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE)))

    everything = set().union(*seen)
    # bounded: at most 2 * top_n classes, plus other, over the whole run
    assert len(everything - {OTHER}) <= 4 + 30 // m.STABLE_CLASS_HOLD * 4
    # stable: a class reported once is reported in every later cycle until it may be replaced
    for before, after in itertools.pairwise(seen[: m.STABLE_CLASS_HOLD + 1]):
        assert before <= after


def test_heap_series_still_add_up_to_the_census_totals(reader, provider):
    censuses = list(churning_censuses(5))
    script = iter(censuses)
    m.install_metrics(
        profiling(top_n=1),
        meter_provider=provider,
        reading_source=FakeReadingSource(),
        take=lambda: next(script),
    )
    for census in censuses:
        points = collect(reader)
        objects = by_attribute(points[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE)
        sizes = by_attribute(points[m.PYTHON_HEAP_SIZE], m.ATTR_PYTHON_TYPE)
        assert sum(objects.values()) == census.total_objects
        assert sum(sizes.values()) == census.total_size


def test_a_class_that_leaves_the_heap_leaves_the_set_and_a_stale_one_makes_room():
    classes = m.StableClasses(top_n=1, capacity=2, hold=2)

    def census(**counts):
        return HeapCensus(counts=counts, sizes=counts)

    classes.rows(census(a=10, b=1, c=1))
    classes.rows(census(a=1, b=10, c=1))
    assert classes.reported == {"a", "b"}
    classes.rows(census(a=1, b=1, c=10))  # full, a was top one census ago: c waits in other
    assert classes.reported == {"a", "b"}
    classes.rows(census(a=1, b=1, c=10))
    classes.rows(census(a=1, b=1, c=10))  # a has been out of the top for 3 > hold censuses
    assert classes.reported == {"b", "c"}
    classes.rows(census(c=5, d=10))  # b is gone from the heap: its place is free at once
    assert classes.reported == {"c", "d"}


def test_one_census_update_per_census_whatever_the_number_of_gauges():
    classes = m.StableClasses(top_n=1, capacity=1, hold=1)
    first = HeapCensus(counts={"a": 10, "b": 1}, sizes={"a": 1, "b": 1})
    assert classes.rows(first) is classes.rows(first)


# --------------------------------------------------------------------------- task histograms


def histogram_points(reader) -> dict[str, list]:
    return {
        name: points
        for name, points in collect(reader).items()
        if name in (h.OTEL_MEMORY_TASK_RSS_GROWTH, h.OTEL_MEMORY_TASK_RSS_RETAINED)
    }


def test_task_histograms_link_to_the_task_span_from_another_thread(reader, provider):
    from opentelemetry import trace

    histograms = h.TaskHistograms(provider)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("Nations Dump") as span:
        task_context = trace.set_span_in_context(span)
    # WHEN the monitor records after the span ended, from its own thread
    worker = threading.Thread(
        target=histograms.record, args=("Nations Dump", 300 * MB, 12 * MB, task_context)
    )
    worker.start()
    worker.join()

    points = histogram_points(reader)

    for name, value in ((h.OTEL_MEMORY_TASK_RSS_GROWTH, 300 * MB),
                        (h.OTEL_MEMORY_TASK_RSS_RETAINED, 12 * MB)):  # fmt: skip
        [point] = points[name]
        assert dict(point.attributes) == {h.ATTR_TASK_NAME: "Nations Dump"}
        assert point.sum == value
        [exemplar] = point.exemplars
        assert exemplar.trace_id == span.get_span_context().trace_id
        assert exemplar.span_id == span.get_span_context().span_id
        assert list(point.explicit_bounds) == list(h.TASK_RSS_BUCKETS)
    assert h.TASK_RSS_BUCKETS[0] == MB and h.TASK_RSS_BUCKETS[-1] == 4096 * MB


def test_without_a_span_context_there_is_no_exemplar(reader, provider):
    h.TaskHistograms(provider).record("job", 5 * MB, 0, None)
    [point] = histogram_points(reader)[h.OTEL_MEMORY_TASK_RSS_GROWTH]
    assert point.exemplars == []


def test_task_names_are_bounded_then_other_and_values_never_negative(reader, provider):
    histograms = h.TaskHistograms(provider)
    for i in range(h.MAX_TASK_NAMES + 5):
        histograms.record(f"task {i}", -5, -1, None)
    histograms.record("task 0", MB, MB, None)

    points = histogram_points(reader)[h.OTEL_MEMORY_TASK_RSS_GROWTH]

    names = {p.attributes[h.ATTR_TASK_NAME]: p for p in points}
    assert len(names) == h.MAX_TASK_NAMES + 1
    assert names[OTHER].count == 5
    assert names["task 0"].count == 2 and names["task 0"].sum == MB
    assert names["task 1"].min == 0


@pytest.mark.parametrize("name", ["import \udcff.csv", b"bytes", None, "x" * 10_000, "a\x00b"])
def test_hostile_task_names_are_recorded_and_exportable(reader, provider, name):
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    h.TaskHistograms(provider).record(name, MB, MB, None)
    data = reader.get_metrics_data()

    encode_metrics(data).SerializeToString()  # one bad string would fail the whole batch
    [point] = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == h.OTEL_MEMORY_TASK_RSS_GROWTH
        for p in metric.data.data_points
    ]
    assert len(point.attributes[h.ATTR_TASK_NAME]) <= h.MAX_TASK_NAME_LENGTH


def test_a_broken_histogram_never_raises_and_is_logged_once(provider, caplog):
    histograms = h.TaskHistograms(provider)

    class Broken:
        def record(self, *args, **kwargs):
            raise RuntimeError("exporter broke")

    histograms.growth = Broken()
    with caplog.at_level(logging.WARNING, logger="otel_memory"):
        histograms.record("job", MB, MB, None)
        histograms.record("job", MB, MB, None)
    assert len([r for r in caplog.records if "task histograms" in r.getMessage()]) == 1


def test_names_equal_once_cleaned_share_one_series_and_one_slot(reader, provider):
    histograms = h.TaskHistograms(provider, max_names=2)
    long = "x" * h.MAX_TASK_NAME_LENGTH
    for tail in ("a", "b", "c"):  # differ only past the length kept
        histograms.record(long + tail, MB, MB, None)
    for name in ("short", "short", "third", long + "d"):
        histograms.record(name, MB, MB, None)

    points = histogram_points(reader)[h.OTEL_MEMORY_TASK_RSS_RETAINED]

    assert {p.attributes[h.ATTR_TASK_NAME]: p.count for p in points} == {
        long: 4, "short": 2, OTHER: 1
    }
