"""The event pipeline: off the caller's thread, in order, batched, bounded, never silently lost
(flushed at stop, at exit and across fork), and the OTel records export_logs asks for."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

import otel_memory
from otel_memory import api as monitor
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import parse_line
from otel_memory.runtime.monitor import STARTED, STOPPED
from otel_memory.runtime.runtime import get_runtime
from otel_memory.sinks.dailylog import DailyLogSink, DailyLogWriter
from otel_memory.testing import reading


def _config(log_dir, **keys):
    keys = {"log_dir": str(log_dir), "retention_days": 0, **keys}
    return config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}})


def _lines(log_dir):
    return [line for p in sorted(log_dir.glob("memory_*.log")) for line in p.read_text().splitlines()]


def test_lines_are_written_by_the_pipeline_thread_not_the_caller(tmp_path):
    writers = []
    real_write = os.write

    def spy(fd, data):
        writers.append(threading.current_thread().name)
        return real_write(fd, data)

    otel_memory.start(_config(tmp_path / "logs", export_logs="none"))
    sink = DailyLogSink(DailyLogWriter(tmp_path / "logs", write=spy))
    get_runtime().events.set_sinks([sink])
    for i in range(200):
        with traced_task(f"t{i}"):
            pass
    deadline = time.monotonic() + 5
    while len([line for line in _lines(tmp_path / "logs") if "TASK" in line]) < 400:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert set(writers) == {"otel-memory-events"}
    assert len(writers) < 200  # batched: far fewer writes than lines


@pytest.mark.e2e  # a stress run (800,000 lines): once per CI run, not on every Python
def test_eight_threads_slow_disk_every_line_in_order_or_counted_as_dropped(tmp_path):
    log_dir = tmp_path / "logs"
    threads_n, tasks_n = 8, 50_000
    producers_done = threading.Event()

    def slow_write(fd, data):
        producers_done.wait(120)  # a disk that stalls until the burst is over: the queue fills
        time.sleep(0.001)
        return os.write(fd, data)

    otel_memory.start(_config(log_dir, export_logs="none"))
    events = get_runtime().events
    events.set_sinks([DailyLogSink(DailyLogWriter(log_dir, write=slow_write))])
    events.capacity = 20_000

    def worker(n: int) -> None:
        for i in range(tasks_n):
            with traced_task(f"w{n} {i}"):
                pass

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    producers_done.set()
    dropped = events.dropped
    otel_memory.stop()
    lines = [parse_line(line) for line in _lines(log_dir)]
    assert all(lines)
    task_lines = [line for line in lines if line.marker.short != "CHECK"]
    assert dropped > 0  # the stalled disk really made the queue overflow
    assert len(task_lines) + dropped == threads_n * tasks_n * 2  # nothing silently lost
    seen: dict[str, list[tuple[int, str]]] = {}
    for line in task_lines:
        worker_name, index = line.name.split()
        seen.setdefault(worker_name, []).append((int(index), line.marker.short))
    for order in seen.values():  # each thread's lines in its own order
        assert order == sorted(order, key=lambda item: (item[0], item[1] != "START"))


def test_export_logs_events_sends_checks_and_events_not_start_end(tmp_path, span_exporter):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    otel_memory.start(_config(tmp_path / "logs"), logger_provider=provider)  # default: events
    with traced_task("quiet"):
        pass
    otel_memory.stop()
    markers = [r.log_record.attributes.get("memory.marker") for r in exporter.get_finished_logs()]
    assert markers == ["CHECK", "CHECK"]  # Monitor Started, Monitor Stopped


def test_export_logs_all_sends_every_line_in_order(tmp_path, span_exporter):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    otel_memory.start(_config(tmp_path / "logs", export_logs=True), logger_provider=provider)
    for i in range(3):
        with traced_task(f"t{i}"):
            pass
    otel_memory.stop()
    bodies = [parse_line(r.log_record.body) for r in exporter.get_finished_logs()]
    assert [(b.marker.short, b.name) for b in bodies] == [
        ("CHECK", STARTED),
        ("START", "t0"), ("END", "t0"), ("START", "t1"), ("END", "t1"),
        ("START", "t2"), ("END", "t2"),
        ("CHECK", STOPPED),
    ]


def test_export_logs_all_records_are_the_files_lines_with_their_readings(
    tmp_path, span_exporter, fake_source
):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    otel_memory.start(_config(tmp_path / "logs", export_logs="all"), logger_provider=provider)
    monitor.flush()
    start, check, end = (
        reading(245.3, 512.1, 1024.5, 2040.8, timestamp=1_763_281_800.25),
        reading(267.8, 534.2, 1001.2, 2039.1, timestamp=1_763_281_920.5),
        reading(289.1, 545.8, 989.7, 2036.4, timestamp=1_763_282_205.75),
    )
    fake_source.push(start, check, end)
    with traced_task("Nations Dump] \n"):
        monitor.write_check_line()  # a --- line naming the open task
    otel_memory.stop()

    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [r.body for r in records] == _lines(tmp_path / "logs")  # the same text, byte for byte
    (span,) = span_exporter.get_finished_spans()
    for record, marker, used in zip(
        records[1:4], ("START", "CHECK", "END"), (start, check, end), strict=True
    ):
        assert dict(record.attributes) == {
            "memory.marker": marker,
            "memory.task.name": "Nations Dump] \n",  # the true name; the body's is sanitised
            "memory.rss": used.rss,
            "memory.vms": used.vms,
            "memory.system.available": used.system_available,
            "memory.system.free_ratio": used.free_ratio,
        }
        assert record.timestamp == int(used.timestamp * 1e9)
        linked = marker != "CHECK"
        assert (record.trace_id == span.context.trace_id) is linked
        assert (record.span_id == span.context.span_id) is linked


def test_export_logs_none_sends_nothing(tmp_path):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    otel_memory.start(_config(tmp_path / "logs", export_logs="none"), logger_provider=provider)
    with traced_task("t"):
        pass
    otel_memory.stop()
    assert exporter.get_finished_logs() == ()
    assert len(_lines(tmp_path / "logs")) == 4


FORKER = """
import os, sys
import otel_memory
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict
otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": sys.argv[1], "retention_days": 0}}}}))
for i in range(100):
    with traced_task(f"parent {i}"):
        pass
pid = os.fork()
if pid == 0:
    for i in range(50):
        with traced_task(f"child {i}"):
            pass
    otel_memory.stop()
    os._exit(0)
os.waitpid(pid, 0)
with traced_task("parent after fork"):
    pass
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_loses_nothing_and_duplicates_nothing(tmp_path):
    subprocess.run([sys.executable, "-c", FORKER, str(tmp_path)], check=True, timeout=60)
    names = [parse_line(line).name for line in _lines(tmp_path)]
    for i in range(100):
        assert names.count(f"parent {i}") == 2  # START and END, not repeated by the child
    for i in range(50):
        assert names.count(f"child {i}") == 2
    assert names.count("parent after fork") == 2
    assert names.count(STARTED) == 1
    assert names.count(STOPPED) == 2  # the child's stop() and the parent's exit


def test_dropped_lines_are_counted_and_exported(tmp_path):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    release = threading.Event()

    def stalled_write(fd, data):
        release.wait(10)
        return os.write(fd, data)

    otel_memory.start(
        _config(tmp_path / "logs", export_logs="none"),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    events = get_runtime().events
    events.set_sinks([DailyLogSink(DailyLogWriter(tmp_path / "logs", write=stalled_write))])
    events.capacity = 50
    for i in range(200):
        with traced_task(f"t{i}"):
            pass
    dropped = events.dropped
    points = [
        p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "otel_memory.events.dropped"
        for p in m.data.data_points
    ]
    release.set()
    otel_memory.stop()
    assert dropped > 0
    assert points == [dropped]
    task_lines = [line for line in _lines(tmp_path / "logs") if "TASK" in line]
    assert len(task_lines) + dropped == 400


class _ListSink:
    """Keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list = []

    def write(self, batch) -> None:
        self.events.extend(batch)

    def close(self) -> None:
        pass


def _notice(i: int):
    from otel_memory.activity.events import Notice

    return Notice("test", 20, f"n{i}", {}, time.time())


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_an_idle_pipeline_sleeps_until_the_next_event_and_then_drains_at_once():
    from otel_memory.activity.events import EventPipeline

    pipeline = EventPipeline(period=0.02)
    drains = []
    real_drain = pipeline._drain

    def counting_drain():
        drains.append(time.monotonic())
        return real_drain()

    pipeline._drain = counting_drain  # the thread calls it through the instance
    sink = _ListSink()
    pipeline.set_sinks([sink])
    try:
        pipeline.put(_notice(1))
        _wait_for(lambda: sink.events and pipeline._idle)
        # WHEN nothing happens for 25 periods, THEN the thread does not wake at all
        before = len(drains)
        time.sleep(0.5)
        assert len(drains) == before
        # WHEN an event comes with a long period, THEN put() wakes the thread: no 30 s wait
        pipeline.period = 30
        pipeline.put(_notice(2))
        _wait_for(lambda: len(sink.events) == 2)
        assert [event.body for event in sink.events] == ["n1", "n2"]
    finally:
        pipeline.close()


def test_a_steady_stream_never_makes_put_wake_the_thread():
    from otel_memory.activity.events import EventPipeline

    class CountingEvent(threading.Event):
        sets = 0

        def set(self):
            CountingEvent.sets += 1
            super().set()

    pipeline = EventPipeline(period=0.05)
    pipeline._wakeup = CountingEvent()  # before the thread starts: it waits on this one
    sink = _ListSink()
    pipeline.set_sinks([sink])
    try:
        for i in range(100):  # an event every 10 ms: a period never passes empty
            pipeline.put(_notice(i))
            time.sleep(0.01)
        assert CountingEvent.sets == 0
        _wait_for(lambda: len(sink.events) == 100)
    finally:
        pipeline.close()
