"""The live guard through the running monitor: threshold crossings as events (once per crossing,
re-armed after hysteresis) on the real sampler thread, and deep capture naming the line."""

from __future__ import annotations

import gc
import time

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

import otel_memory
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict
from otel_memory.guards.notices import ALLOCATIONS_EVENT, THRESHOLD_EVENT
from otel_memory.kernel.readings import MB, PsutilReadingSource


def _start(tmp_path, **monitor_keys):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    keys = {"log_dir": str(tmp_path / "logs"), "retention_days": 0, "sample_interval_ms": 20}
    keys.update(monitor_keys)
    otel_memory.start(
        config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}}),
        logger_provider=provider,
    )
    return exporter


def _events(exporter, name):
    return [r.log_record for r in exporter.get_finished_logs() if r.log_record.event_name == name]


def _hold(mb: int, seconds: float) -> None:
    block = bytearray(mb * MB)
    block[:: 4096] = b"x" * len(block[:: 4096])
    time.sleep(seconds)
    del block
    gc.collect()


def test_one_event_per_crossing_rearmed_after_hysteresis(tmp_path, span_exporter):
    rss_mb = PsutilReadingSource().read().rss / MB
    warning = round(rss_mb + 60)
    exporter = _start(tmp_path, thresholds={
        "rss_warning_mb": warning, "rss_critical_mb": warning + 10_000,
        "system_available_min_mb": 0, "system_free_min_percent": 0,
    })
    with traced_task("Nations Dump Processing"):
        _hold(150, 0.4)  # ~20 samples above the threshold: still one crossing
        time.sleep(0.1)  # back below 95 % of it: re-armed
        _hold(150, 0.4)  # the second crossing
    otel_memory.stop()

    records = _events(exporter, THRESHOLD_EVENT)
    assert [r.attributes["otel_memory.threshold.name"] for r in records] == ["rss_warning"] * 2
    for record in records:
        assert record.attributes["otel_memory.threshold.value"] == warning * MB
        assert record.attributes["otel_memory.value"] > warning * MB
        assert record.attributes["otel_memory.task.name"] == "Nations Dump Processing"
    (span,) = span_exporter.get_finished_spans()
    assert [e.name for e in span.events] == [THRESHOLD_EVENT] * 2


def test_deep_capture_names_the_allocating_line_and_leaves_tracemalloc_off(
    tmp_path, span_exporter
):
    import tracemalloc

    exporter = _start(tmp_path, deep_capture={"enabled": True, "rss_growth_mb": 50})

    with traced_task("Nations Dump Processing"):
        held = [bytearray(MB) for _ in range(150)]  # ALLOCATING LINE
        for block in held:
            block[::4096] = b"x" * len(block[::4096])
        time.sleep(0.3)  # the sampler sees the growth and starts tracing
        held += [bytearray(MB) for _ in range(150)]  # ALLOCATING LINE
        time.sleep(0.1)
    with traced_task("Small Task"):
        pass
    otel_memory.stop()

    assert not tracemalloc.is_tracing()
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    (event,) = [e for e in spans["Nations Dump Processing"].events if e.name == ALLOCATIONS_EVENT]
    top_site = event.attributes["otel_memory.allocation.sites"][0]
    assert top_site.split(" < ")[0].endswith(f"test_guard.py:{_line_of('held += [')}")
    assert event.attributes["otel_memory.allocation.bytes"][0] >= 140 * MB
    assert not spans["Small Task"].events
    assert len(_events(exporter, ALLOCATIONS_EVENT)) == 1
    del held


def _line_of(text: str) -> int:
    with open(__file__) as source:
        for number, line in enumerate(source, 1):
            if text in line and "ALLOCATING LINE" in line:
                return number
    raise AssertionError(text)


def test_threshold_events_reach_the_otel_memory_logger(tmp_path, caplog):
    # Users route events with logging: the pipeline's thread hands them to the logger too.
    import logging

    caplog.set_level(logging.WARNING, logger="otel_memory")
    rss_mb = PsutilReadingSource().read().rss / MB
    _start(tmp_path, thresholds={"rss_warning_mb": round(rss_mb + 60),
                                 "rss_critical_mb": round(rss_mb + 10_000)})
    with traced_task("Nations Dump Processing"):
        _hold(150, 0.3)
    otel_memory.stop()
    records = [r for r in caplog.records if getattr(r, "event_name", None) == THRESHOLD_EVENT]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert getattr(records[0], "otel_memory.threshold.name") == "rss_warning"
