"""The monitor's life: start/stop idempotent and thread-safe, periodic lines, the final line,
and the log bridge exporting the same lines as OTel log records tied to the task spans."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import otel_memory
from otel_memory import api as monitor
from otel_memory.base import attributes as attr
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import parse_line
from otel_memory.kernel.readings import MB
from otel_memory.runtime.monitor import STARTED, STOPPED
from otel_memory.sinks.histograms import OTEL_MEMORY_TASK_RSS_GROWTH, OTEL_MEMORY_TASK_RSS_RETAINED
from otel_memory.testing import reading


def config_for(tmp_path, **monitor_keys):
    # retention 0: the fake readings are dated 2025, which retention would archive at once
    keys = {"log_dir": str(tmp_path / "logs"), "export_logs": False, "retention_days": 0}
    keys.update(monitor_keys)
    return config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}})


@pytest.fixture(autouse=True)
def _always_stop():
    yield
    otel_memory.stop()


def log_lines(tmp_path) -> list[str]:
    return [
        line for path in sorted((tmp_path / "logs").glob("memory_*.log"))
        for line in path.read_text().splitlines()
    ]


def test_start_and_stop_are_idempotent_and_write_first_and_final_lines(tmp_path, fake_source):
    otel_memory.start(config_for(tmp_path))
    otel_memory.start(config_for(tmp_path))  # ignored: already running
    with otel_memory.traced_task("work"):
        pass
    otel_memory.stop()
    otel_memory.stop()
    lines = log_lines(tmp_path)
    assert [parse_line(line).name for line in lines] == [
        STARTED, "work", "work", STOPPED,
    ]
    assert not logging.getLogger("otel_memory").handlers  # the file needs no logging handler


def test_concurrent_starts_start_once(tmp_path, fake_source):
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        otel_memory.start(config_for(tmp_path))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    otel_memory.stop()
    names = [parse_line(line).name for line in log_lines(tmp_path)]
    assert names.count(STARTED) == 1
    assert names.count(STOPPED) == 1


def test_check_line_names_the_most_recently_started_open_task_anywhere(tmp_path, fake_source):
    otel_memory.start(config_for(tmp_path))
    started = threading.Event()
    release = threading.Event()

    def other_thread() -> None:
        with otel_memory.traced_task("Regions Dump Processing"):
            started.set()
            release.wait(5)

    monitor.write_check_line()  # nothing open
    otel_memory.set_active_task("Nations Dump Download")
    monitor.write_check_line()
    t = threading.Thread(target=other_thread)
    t.start()
    started.wait(5)
    monitor.write_check_line()  # the other thread's task started last
    release.set()
    t.join()
    monitor.write_check_line()
    otel_memory.clear_active_task()
    monitor.write_check_line()
    monitor.flush()
    checks = [p.name for p in map(parse_line, log_lines(tmp_path)) if p.marker.short == "CHECK"]
    assert checks[1:] == [  # after "Monitor Started"
        "Idle", "Nations Dump Download", "Regions Dump Processing", "Nations Dump Download", "Idle",
    ]


def test_periodic_lines_come_every_interval(tmp_path, fake_source):
    otel_memory.start(config_for(tmp_path, interval_seconds=1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sum("--- [Idle]" in line for line in log_lines(tmp_path)) >= 2:
            break
        time.sleep(0.05)
    otel_memory.stop()
    assert sum("--- [Idle]" in line for line in log_lines(tmp_path)) >= 2


def test_bad_config_raises_before_anything_starts(tmp_path):
    with pytest.raises(otel_memory.ConfigError):
        otel_memory.start(str(tmp_path / "missing.yaml"))
    assert not monitor.is_running()


def test_disabled_monitor_writes_no_file(tmp_path, fake_source):
    otel_memory.start(config_for(tmp_path, enabled=False))
    with otel_memory.traced_task("work"):
        pass
    otel_memory.stop()
    assert not (tmp_path / "logs").exists()


def test_log_bridge_sends_the_same_lines_with_trace_context(tmp_path, span_exporter, fake_source):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    otel_memory.start(config_for(tmp_path, export_logs="all"), logger_provider=provider)
    monitor.flush()
    exporter.clear()
    fake_source.push(reading(rss_mb=245.3), reading(rss_mb=289.1))

    otel_memory.set_active_task("Nations Dump Download")
    otel_memory.clear_active_task("Nations Dump Complete")
    monitor.flush()

    (span,) = span_exporter.get_finished_spans()
    start, end = (r.log_record for r in exporter.get_finished_logs())
    for record, marker in ((start, "START"), (end, "END")):
        assert record.trace_id == span.context.trace_id
        assert record.span_id == span.context.span_id
        assert record.attributes[attr.LOG_MARKER] == marker
        assert parse_line(record.body) is not None
        assert record.timestamp == int(1_763_281_800.0 * 1e9)
    assert start.attributes[attr.LOG_TASK_NAME] == "Nations Dump Download"
    assert end.attributes[attr.LOG_TASK_NAME] == "Nations Dump Complete"
    assert start.attributes[attr.LOG_RSS] == reading(rss_mb=245.3).rss
    assert "RSS:  289.1 MB" in end.body


def test_task_histograms_link_each_run_to_its_own_span(tmp_path, span_exporter, fake_source):
    # GIVEN the monitor with an in-memory metric reader (the SDK's default, trace-based
    # exemplar filter) and the tests' tracer, which samples every span
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel_memory.start(config_for(tmp_path), meter_provider=provider)
    monitor.flush()
    fake_source.push(reading(rss_mb=100), reading(rss_mb=105), reading(rss_mb=105))
    # WHEN one task name runs twice: the first grows and keeps 5 MB, the second nothing
    for _ in range(2):
        with otel_memory.traced_task("job"):
            pass
    monitor.flush()  # the events thread records the histograms, after the spans ended

    spans = {s.context.span_id: s for s in span_exporter.get_finished_spans()}
    assert len(spans) == 2
    first, second = sorted(spans.values(), key=lambda s: s.start_time)
    points = {
        metric.name: metric.data.data_points
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    for name in (OTEL_MEMORY_TASK_RSS_GROWTH, OTEL_MEMORY_TASK_RSS_RETAINED):
        [point] = points[name]
        assert dict(point.attributes) == {"otel_memory.task.name": "job"}
        assert point.count == 2 and point.sum == 5 * MB
        # THEN each exemplar carries the trace and span of the run it came from
        linked = {e.value: (e.trace_id, e.span_id) for e in point.exemplars}
        assert linked == {
            5 * MB: (first.context.trace_id, first.context.span_id),
            0: (second.context.trace_id, second.context.span_id),
        }
    provider.shutdown()


def test_task_histograms_false_records_no_task_histograms(tmp_path, span_exporter, fake_source):
    # GIVEN task_histograms: false (a service of many tiny tasks saving the SDK's records)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel_memory.start(config_for(tmp_path, task_histograms=False), meter_provider=provider)
    fake_source.push(reading(rss_mb=100), reading(rss_mb=105))
    with otel_memory.traced_task("job"):
        pass
    monitor.flush()
    # THEN the span and the daily lines are there, the task histograms are not
    assert [s.name for s in span_exporter.get_finished_spans()] == ["job"]
    assert [parse_line(line).name for line in log_lines(tmp_path)][-2:] == ["job", "job"]
    names = {
        metric.name
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert OTEL_MEMORY_TASK_RSS_GROWTH not in names
    assert OTEL_MEMORY_TASK_RSS_RETAINED not in names
    provider.shutdown()


def test_interpreter_exit_flushes_and_writes_the_final_line(tmp_path):
    script = (
        "import otel_memory\n"
        "from otel_memory.base.config import config_from_dict\n"
        f"otel_memory.start(config_from_dict({{'general': {{'monitoring': {{'memory_monitor': "
        f"{{'log_dir': {str(tmp_path / 'logs')!r}}}}}}}}}))\n"
        "otel_memory.set_active_task('never cleared')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    names = [parse_line(line).name for line in log_lines(tmp_path)]
    # stop() at exit ends the forgotten task (end_reason monitor_stopped): its END line is there
    assert names == [STARTED, "never cleared", "never cleared", STOPPED]
