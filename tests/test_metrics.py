"""Gauges on meter otel_memory, read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import logging
import sys

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_memory import metrics as m
from otel_memory import watched as watch
from otel_memory.census import OTHER, HeapCensus, census_of, class_name, take_census
from otel_memory.config import config_from_dict
from otel_memory.profiler import Profiler
from otel_memory.readings import MB
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
    assert first[m.SYSTEM_MEMORY_AVAILABLE][0].value == 512 * MB
    assert first[m.SYSTEM_MEMORY_FREE_RATIO][0].value == pytest.approx(0.25)
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
        profiling(top_n=100_000), meter_provider=provider, reading_source=FakeReadingSource()
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
    assert m.PROCESS_MEMORY_IDLE_TREND not in first  # one sample is no trend
    collect(reader)
    third = collect(reader)

    assert third[m.PROCESS_MEMORY_IDLE_TREND][0].value == pytest.approx(10 * MB)


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
            for n in (1, 2, 3)
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
        profiler.snapshot()

    points = collect(reader)

    assert take.calls == 0  # the profiler's latest census served the heap gauges
    assert by_attribute(points[m.PYTHON_HEAP_OBJECTS], m.ATTR_PYTHON_TYPE)["app.Message"] == 3
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
        if key.isupper() and isinstance(value, str) and value.count(".") >= 2
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
