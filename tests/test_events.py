"""The event pipeline: off the caller's thread, in order, batched, bounded, never silently lost
(flushed at stop, at exit and across fork), and the OTel records export_logs asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

import otel_memory
from otel_memory import api as monitor
from otel_memory import traced_task
from otel_memory.activity.events import _BATCH
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


def _run_burst(threads_n: int, tasks_n: int, prefix: str = "w") -> list[threading.Thread]:
    """Start ``threads_n`` threads, each running ``tasks_n`` empty tasks as fast as it can."""

    def worker(n: int) -> None:
        for i in range(tasks_n):
            with traced_task(f"{prefix}{n} {i}"):
                pass

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for w in workers:
        w.start()
    return workers


def _assert_each_thread_in_order(task_lines, complete: bool = True) -> dict[str, list]:
    """Each thread's lines appear in the order it ran them: START i, END i, START i+1..."""
    seen: dict[str, list[tuple[int, str]]] = {}
    for line in task_lines:
        worker_name, index = line.name.split()
        seen.setdefault(worker_name, []).append((int(index), line.marker.short))
    for order in seen.values():
        if complete:
            assert order == [(i // 2, "START" if i % 2 == 0 else "END") for i in range(len(order))]
            continue
        # stop() ends the task in flight from its own thread: that END may come a line later
        starts = [index for index, marker in order if marker == "START"]
        assert starts == list(range(len(starts)))
        position = {item: k for k, item in enumerate(order)}
        assert all(position[(i, "START")] < k for k, (i, m) in enumerate(order) if m == "END")
    return seen


@pytest.mark.e2e  # a stress run (960,000 lines): once per CI run, not on every Python
def test_eight_threads_slow_disk_every_line_written_in_each_threads_order(tmp_path):
    # GIVEN a disk that stalls 50 ms on each of its first 20 writes, then 1 ms on each
    log_dir = tmp_path / "logs"
    threads_n, tasks_n = 8, 60_000
    backlog: list[int] = []

    otel_memory.start(_config(log_dir, export_logs="none"), tracer_provider=TracerProvider())
    events = get_runtime().events

    def slow_write(fd, data):
        backlog.append(len(events._queue))
        time.sleep(0.05 if len(backlog) <= 20 else 0.001)
        return os.write(fd, data)

    events.set_sinks([DailyLogSink(DailyLogWriter(log_dir, write=slow_write))])
    # WHEN 8 threads run 60,000 tasks each as fast as they can
    for w in _run_burst(threads_n, tasks_n):
        w.join()
    otel_memory.stop()
    # THEN the producers waited for the disk (the queue was full, never much more), nothing
    # was dropped, and every line is in the file, each thread's in its order
    assert max(backlog) >= events.capacity - _BATCH  # the queue filled up: producers waited
    assert max(backlog) <= events.capacity + threads_n  # and it stayed bounded
    assert events.dropped == 0
    lines = [parse_line(line) for line in _lines(log_dir)]
    assert all(lines)
    task_lines = [line for line in lines if line.marker.short != "CHECK"]
    assert len(task_lines) == threads_n * tasks_n * 2
    assert len(_assert_each_thread_in_order(task_lines)) == threads_n


def test_stop_during_a_burst_writes_every_line_queued_before_it_and_returns(tmp_path):
    # GIVEN 8 threads in a burst against a slow disk (the queue full, producers waiting)
    log_dir = tmp_path / "logs"
    otel_memory.start(_config(log_dir, export_logs="none"), tracer_provider=TracerProvider())
    events = get_runtime().events
    # A small queue and a write slower than the producers fill it in: each write takes the whole
    # backlog, so a faster disk keeps up with 8 threads on a loaded machine (once: 60 s, no wait)
    events.capacity = 256

    def slow_write(fd, data):
        time.sleep(0.05)
        return os.write(fd, data)

    events.set_sinks([DailyLogSink(DailyLogWriter(log_dir, write=slow_write))])
    done: dict[int, int] = {}
    stopping = threading.Event()

    def worker(n: int) -> None:
        i = 0
        while not stopping.is_set() or i < 100:
            with traced_task(f"w{n} {i}"):
                pass
            done[n] = i  # task i has ended: its two lines are queued
            i += 1

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    try:
        # back-pressure engaged: the queue full, or producers waiting for room
        _wait_for(
            lambda: len(events._queue) >= events.capacity or events._waiting > 0, timeout=60
        )
        # WHEN stop() is called in the middle of it
        ended_before_stop = dict(done)
        otel_memory.stop()
    finally:
        stopping.set()  # whatever happened, no producer outlives the test
        for w in workers:
            w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)  # none stays blocked on a stopped pipeline
    # THEN every task that ended before stop() has both lines, in order, before "Stopped"
    lines = [parse_line(line) for line in _lines(log_dir)]
    names = [line.name for line in lines]
    stopped_at = names.index(STOPPED)
    before = Counter(names[:stopped_at])  # linear: a burst may end tens of thousands of tasks
    for n, last in ended_before_stop.items():
        for i in range(last + 1):
            assert before[f"w{n} {i}"] == 2
    task_lines = [line for line in lines[:stopped_at] if line.marker.short != "CHECK"]
    _assert_each_thread_in_order(task_lines, complete=False)


def test_a_sinks_own_event_never_waits_on_its_own_writer(tmp_path):
    from otel_memory.activity.events import EventPipeline

    pipeline = EventPipeline(capacity=10, period=0.05)

    class ChattySink(_ListSink):
        def write(self, batch) -> None:
            super().write(batch)
            if len(self.events) == len(batch):  # on the first batch only
                for _ in range(20):  # more than the queue holds, from the writer's own thread
                    pipeline.put(_notice(-1))

    sink = ChattySink()
    pipeline.set_sinks([sink])
    try:
        for i in range(50):
            pipeline.put(_notice(i))
        pipeline.flush()
        pipeline.flush()
        assert [e.body for e in sink.events if e.body != "n-1"] == [f"n{i}" for i in range(50)]
        assert len(sink.events) == 70
    finally:
        pipeline.close()


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


def test_under_overload_only_otel_records_of_task_lines_drop_and_are_counted(tmp_path):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    # GIVEN export_logs: all and a daily file whose disk stalls until released
    reader = InMemoryMetricReader()
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    release = threading.Event()

    def stalled_write(fd, data):
        release.wait(30)
        return os.write(fd, data)

    otel_memory.start(
        _config(tmp_path / "logs", export_logs="all"),
        meter_provider=MeterProvider(metric_readers=[reader]),
        logger_provider=provider,
    )
    events = get_runtime().events
    otel_sink = [s for s in events._sinks if getattr(s, "droppable", False)]
    assert len(otel_sink) == 1
    events.set_sinks([DailyLogSink(DailyLogWriter(tmp_path / "logs", write=stalled_write)), *otel_sink])
    events.capacity = 64
    # WHEN a thread runs 400 tasks: the queue fills and the thread waits for the disk
    (producer,) = _run_burst(1, 400, prefix="t")
    _wait_for(lambda: len(events._queue) >= events.capacity)
    assert producer.is_alive()  # back-pressure: it waits rather than dropping
    release.set()
    producer.join(timeout=30)
    monitor.flush()
    dropped = events.dropped
    points = [
        p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "otel_memory.events.dropped"
        for p in m.data.data_points
    ]
    otel_memory.stop()
    # THEN the file has every line; the OTel records miss only task lines, each one counted
    task_lines = [line for line in _lines(tmp_path / "logs") if "TASK" in line]
    assert len(task_lines) == 800
    records = [r.log_record.attributes["memory.marker"] for r in exporter.get_finished_logs()]
    assert dropped > 0
    assert points == [dropped]
    assert records.count("CHECK") == 2  # Monitor Started and Stopped are never dropped
    assert len(records) - 2 + dropped == 800


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

    def counting_drain(*args):
        drains.append(time.monotonic())
        return real_drain(*args)

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


BURST = """
import json, os, sys, threading, time
import otel_memory
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict
from otel_memory.sinks.dailylog import DailyLogSink, DailyLogWriter
from otel_memory.runtime.runtime import get_runtime

log_dir, mode = sys.argv[1], sys.argv[2]
otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": log_dir, "retention_days": 0, "export_logs": "none"}}}}))
events = get_runtime().events
counts = {}

def run(n, tasks_n=None, until=None):
    i = 0
    while (i < tasks_n) if tasks_n is not None else (time.time() < until):
        with traced_task(f"w{n} {i}"):
            pass
        i += 1
    counts[n] = i

if mode == "fork":
    disk_stalled = True  # a plain flag, no lock: the fork must not copy one of the test's own

    def slow_write(fd, data):
        # The main thread's flush before the fork is not stalled (it would wait for itself).
        while disk_stalled and threading.current_thread() is not threading.main_thread():
            time.sleep(0.001)
        time.sleep(0.002)
        return os.write(fd, data)

    events.capacity = 2048
    events.set_sinks([DailyLogSink(DailyLogWriter(log_dir, write=slow_write))])
    threads = [threading.Thread(target=run, args=(n, 5000)) for n in range(8)]
    for t in threads:
        t.start()
    # The disk stalls for the other threads until the fork, so the queue fills whatever the
    # machine's speed: a writer is inside a write (holding the drain lock) or the producers
    # wait for room, and the fork's flush meets one or the other.
    deadline = time.time() + 60
    while len(events._queue) < events.capacity or not events._waiting:
        assert time.time() < deadline, (len(events._queue), events._waiting)
        time.sleep(0.001)
    pid = os.fork()
    disk_stalled = False
    if pid == 0:
        run("child", 200)
        os._exit(0)  # no stop(), no atexit: its lines were written as its tasks ended
    assert os.waitpid(pid, 0)[1] == 0
elif mode == "exit":
    disk_stalled = True

    def slow_write(fd, data):
        while disk_stalled:
            time.sleep(0.001)
        time.sleep(0.002)
        return os.write(fd, data)

    events.capacity = 2048
    events.set_sinks([DailyLogSink(DailyLogWriter(log_dir, write=slow_write))])
    for n in range(8):
        threading.Thread(target=run, args=(n, 10**9), daemon=True).start()
    deadline = time.time() + 60
    while len(events._queue) < events.capacity or not events._waiting:  # producers wait
        assert time.time() < deadline, (len(events._queue), events._waiting)
        time.sleep(0.001)
    disk_stalled = False  # slow again, no longer stalled
    print(json.dumps({}))
    sys.exit(0)  # the interpreter exits mid-burst: atexit's stop() runs against 8 producers
else:  # midnight: run until a second after the local midnight given
    until = float(sys.argv[3]) + 1.0
    threads = [threading.Thread(target=run, args=(n, None, until)) for n in range(8)]
    for t in threads:
        t.start()
for t in threads:
    t.join()
otel_memory.stop()
print(json.dumps(counts))
"""


def _run_script(script: str, *args: str, env: dict | None = None) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        check=False, capture_output=True, text=True, timeout=180, env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_during_a_burst_keeps_parent_and_child_whole(tmp_path):
    # GIVEN 8 threads in a burst, the queue full, producers waiting for a slow disk
    # WHEN the main thread forks and the child runs 200 tasks, then leaves with os._exit()
    counts = _run_script(BURST, tmp_path, "fork")
    # THEN no deadlock, every line of both processes once, each thread's in its order
    lines = [parse_line(line) for line in _lines(tmp_path)]
    task_lines = [line for line in lines if line.marker.short != "CHECK"]
    assert counts == {str(n): 5000 for n in range(8)}  # the child ran 200 of its own
    assert len(task_lines) == 2 * (8 * 5000 + 200)
    seen = _assert_each_thread_in_order(task_lines)
    assert {name: len(order) for name, order in seen.items()} == {
        **{f"w{n}": 10_000 for n in range(8)}, "wchild": 400
    }


def test_interpreter_exit_during_a_burst_neither_hangs_nor_tears_lines(tmp_path):
    # GIVEN 8 daemon threads in an endless burst, the queue full, producers waiting
    # WHEN the main thread leaves the interpreter
    _run_script(BURST, tmp_path, "exit")
    # THEN it exits (atexit's stop() returned), every line is whole, each thread in order
    lines = [parse_line(line) for line in _lines(tmp_path)]
    assert all(lines)
    assert [line.name for line in lines].count(STOPPED) == 1
    task_lines = [line for line in lines if line.marker.short != "CHECK"]
    assert _assert_each_thread_in_order(task_lines, complete=False)


def _tz_with_midnight_at(timestamp: int) -> str:
    """A POSIX TZ whose local midnight falls at ``timestamp``."""
    offset = -timestamp % 86_400  # local = UTC + offset
    if offset > 43_200:
        offset -= 86_400
    sign = "-" if offset >= 0 else "+"  # POSIX counts west of UTC as positive
    hours, rest = divmod(abs(offset), 3600)
    return f"MID{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX TZ strings")
def test_a_burst_across_midnight_puts_each_line_in_the_file_of_its_own_date(tmp_path):
    # GIVEN a time zone whose midnight comes 2 s from now
    midnight = int(time.time()) + 2
    env = {**os.environ, "TZ": _tz_with_midnight_at(midnight)}
    # WHEN 8 threads run tasks as fast as they can until a second past midnight
    counts = _run_script(BURST, tmp_path, "midnight", midnight, env=env)
    # THEN two files, each holding exactly the lines of its date, none lost, each thread in order
    files = sorted(tmp_path.glob("memory_*.log"))
    assert len(files) == 2
    total = 0
    for path in files:
        day = path.stem.removeprefix("memory_")
        text = path.read_text().splitlines()
        assert text
        assert all(line[:10].replace("-", "") == day for line in text)
        total += sum(1 for line in text if "TASK" in line)
    assert total == 2 * sum(counts.values())
    task_lines = [line for line in map(parse_line, _lines(tmp_path)) if line.marker.short != "CHECK"]
    _assert_each_thread_in_order(task_lines)
