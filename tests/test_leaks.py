"""Leak suspects, the idle trend, and the snapshot log written by the profiler."""

from __future__ import annotations

import logging
import threading

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from otel_memory.census import HeapCensus
from otel_memory.config import config_from_dict
from otel_memory.leaks import (
    ATTR_GROWTH,
    ATTR_GROWTH_STREAK,
    ATTR_PYTHON_TYPE,
    LEAK_EVENT_NAME,
    IdleTrend,
    LeakDetector,
    LeakSuspect,
    describe,
    slope_per_hour,
)
from otel_memory.profiler import Profiler, format_snapshot, start_profiler
from otel_memory.readings import MB


def census(**counts: int) -> HeapCensus:
    """A census with the given counts (dots spelled as double underscores) and 100 B/object."""
    named = {name.replace("__", "."): count for name, count in counts.items()}
    return HeapCensus(counts=named, sizes={k: v * 100 for k, v in named.items()})


def profiling(**keys):
    keys.setdefault("enabled", True)
    return config_from_dict({"general": {"monitoring": {"memory_profiling": keys}}})


@pytest.fixture
def log_exporter():
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


# ------------------------------------------------------------------- leak detector


def test_a_class_growing_every_snapshot_is_flagged_after_k_growths_and_a_stable_one_is_not():
    detector = LeakDetector(snapshots=3)
    flagged = [detector.observe(census(app__Message=100 + 10 * i, dict=500)) for i in range(5)]

    assert flagged[:3] == [[], [], []]
    assert flagged[3] == [LeakSuspect("app.Message", streak=3, before=100, now=130)]
    assert flagged[4] == []  # already a suspect: reported once
    assert detector.suspects() == [LeakSuspect("app.Message", streak=4, before=100, now=140)]


def test_a_drop_or_a_flat_snapshot_resets_the_streak():
    detector = LeakDetector(snapshots=2)
    for count in (10, 11, 11, 12, 9, 10):
        assert detector.observe_counts({"app.Cache": count}) == []
    assert detector.suspects() == []
    assert detector.observe_counts({"app.Cache": 11}) == [
        LeakSuspect("app.Cache", streak=2, before=9, now=11)
    ]


def test_a_class_that_disappears_is_forgotten():
    detector = LeakDetector(snapshots=2)
    detector.observe_counts({"a": 1})
    detector.observe_counts({"a": 2})
    detector.observe_counts({})
    assert detector.observe_counts({"a": 3}) == []


def test_suspect_wording():
    suspect = LeakSuspect("app.Message", streak=3, before=1_000, now=1_450)
    assert describe(suspect) == (
        "Leak suspect: app.Message grew in 3 consecutive snapshots: 1,000 -> 1,450 objects (+450)"
    )


# ------------------------------------------------------------------- idle trend


def test_slope_per_hour_is_the_least_squares_slope():
    assert slope_per_hour([(0, 100.0), (1800, 101.0), (3600, 102.0)]) == pytest.approx(2.0)
    # noisy points around 3 per hour
    points = [(0, 10.0), (3600, 13.5), (7200, 15.5), (10800, 19.0)]
    assert slope_per_hour(points) == pytest.approx(2.9)


def test_slope_needs_two_distinct_times():
    assert slope_per_hour([]) is None
    assert slope_per_hour([(5, 1.0)]) is None
    assert slope_per_hour([(5, 1.0), (5, 2.0)]) is None


def test_idle_trend_keeps_the_newest_samples():
    trend = IdleTrend(max_samples=2)
    trend.add(0, 999 * MB)  # dropped: only the last two count
    trend.add(0, 100 * MB)
    trend.add(3600, 90 * MB)
    assert len(trend) == 2
    assert trend.bytes_per_hour() == pytest.approx(-10 * MB)


# ------------------------------------------------------------------- snapshot log


def test_snapshot_block_is_the_spec_format():
    snapshot = HeapCensus(
        counts={"discord.message.Message": 1_234, "dict": 5_678, "list": 3_456},
        sizes={
            "discord.message.Message": round(45.2 * MB),
            "dict": round(18.7 * MB),
            "list": round(23.1 * MB),
        },
    )

    assert format_snapshot(snapshot, top_n=10) == (
        "Memory Snapshot\n"
        "\n"
        "Top 3 by object count:\n"
        "  dict: 5,678 objects\n"
        "  list: 3,456 objects\n"
        "  discord.message.Message: 1,234 objects\n"
        "\n"
        "Top 3 by memory usage:\n"
        "  discord.message.Message: 45.2 MB\n"
        "  list: 23.1 MB\n"
        "  dict: 18.7 MB"
    )


def test_snapshot_block_lists_top_n_and_uses_thousands_separators():
    big = HeapCensus(
        counts={f"c{i}": 1_000_000 + i for i in range(20)},
        sizes={f"c{i}": (2_000 + i) * MB for i in range(20)},
    )
    text = format_snapshot(big, top_n=10)
    assert "Top 10 by object count:\n  c19: 1,000,019 objects\n" in text
    assert "Top 10 by memory usage:\n  c19: 2,019.0 MB\n" in text
    assert text.count(" objects") == 10
    assert text.count(" MB") == 10


def test_a_snapshot_is_logged_at_info_on_memory_profiler(caplog):
    profiler = Profiler(profiling(top_n_classes=2), take=lambda: census(a=3, b=2, c=1))

    with caplog.at_level(logging.INFO, logger="memory_profiler"):
        result = profiler.snapshot()

    [record] = [r for r in caplog.records if r.name == "memory_profiler"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == format_snapshot(result, 2)
    assert record.getMessage().startswith("Memory Snapshot\n\nTop 2 by object count:\n  a: 3")


def test_the_profiler_warns_and_emits_an_otel_record_for_a_new_suspect(caplog, log_exporter):
    exporter, provider = log_exporter
    counts = iter([1, 2, 3, 4])
    profiler = Profiler(
        profiling(leak_snapshots=2),
        take=lambda: census(app__Message=next(counts), dict=7),
        logger_provider=provider,
    )

    with caplog.at_level(logging.INFO, logger="memory_profiler"):
        for _ in range(4):
            profiler.snapshot()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [describe(LeakSuspect("app.Message", streak=2, before=1, now=3))]
    [exported] = exporter.get_finished_logs()
    record = exported.log_record
    assert record.event_name == LEAK_EVENT_NAME
    assert record.severity_text == "WARNING"
    assert record.attributes[ATTR_PYTHON_TYPE] == "app.Message"
    assert record.attributes[ATTR_GROWTH_STREAK] == 2
    assert record.attributes[ATTR_GROWTH] == 2


def test_the_profiler_thread_takes_snapshots_and_close_joins_it():
    taken = threading.Event()

    def take() -> HeapCensus:
        taken.set()
        return census(a=1)

    profiler = start_profiler(profiling(), interval=0.001, take=take)
    try:
        assert taken.wait(timeout=10)
    finally:
        profiler.close()
    assert not profiler.running


def test_no_thread_when_profiling_is_disabled():
    profiler = start_profiler(profiling(enabled=False), take=lambda: census(a=1))
    assert not profiler.running
    assert profiler.snapshot().counts == {"a": 1}  # still usable on demand
    profiler.close()


def test_a_failing_snapshot_does_not_kill_the_thread(caplog):
    calls = []
    done = threading.Event()

    def take() -> HeapCensus:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        done.set()
        return census(a=1)

    with caplog.at_level(logging.WARNING, logger="otel_memory"):
        profiler = start_profiler(profiling(), interval=0.001, take=take)
        try:
            assert done.wait(timeout=10)
        finally:
            profiler.close()
    assert any("memory snapshot failed" in r.getMessage() for r in caplog.records)
