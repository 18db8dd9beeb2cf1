"""SPEC v0.2 task life rules, driven through the real sampler thread and real threads/tasks:
sampled peaks, the seed's legacy sequence, owners that finish, exact context restore, any input."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import otel_memory
from otel_memory import api as monitor
from otel_memory import clear_active_task, set_active_task, traced_task
from otel_memory.base import attributes as attr
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import parse_line
from otel_memory.kernel.readings import MB
from otel_memory.runtime.monitor import STARTED, STOPPED
from otel_memory.runtime.runtime import get_runtime

SPIKE = 200 * MB


def _touch(size: int) -> bytearray:
    block = bytearray(size)
    block[::4096] = b"x" * len(block[::4096])  # every page resident
    return block


def _spike(hold: float = 0.5) -> None:
    """200 MB resident for ``hold`` seconds (several sample periods), then freed."""
    block = _touch(SPIKE)
    time.sleep(hold)
    del block
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def _high_water_above_the_spikes():
    """The process's lifetime high is already higher than any spike: getrusage cannot help."""
    block = _touch(SPIKE + 150 * MB)
    del block
    gc.collect()


def _peak_gain(span) -> int:
    return span.attributes[attr.RSS_PEAK] - span.attributes[attr.RSS_START]


def _only_span(exporter, name):
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_the_sampler_thread_runs_while_a_task_is_open_and_sleeps_after(span_exporter):
    sampler = get_runtime().sampler
    with traced_task("sampled"):
        time.sleep(0.35)
        assert sampler.running
        assert any(t.name == "otel-memory-sampler" and t.daemon for t in threading.enumerate())
    ticks = sampler.ticks
    assert ticks >= 2  # the real thread sampled, nobody called sample_now
    time.sleep(0.3)
    assert sampler.ticks == ticks  # idle: no task open, no sampling


def test_a_freed_spike_is_caught_with_a_plain_function(span_exporter):
    @traced_task("function")
    def work() -> None:
        _spike()

    work()
    assert _peak_gain(_only_span(span_exporter, "function")) >= SPIKE - 20 * MB


def test_a_freed_spike_is_caught_with_a_context_manager(span_exporter):
    with traced_task("context manager"):
        _spike()
    assert _peak_gain(_only_span(span_exporter, "context manager")) >= SPIKE - 20 * MB


async def test_a_freed_spike_is_caught_in_a_coroutine(span_exporter):
    @traced_task("coroutine")
    async def work() -> None:
        block = _touch(SPIKE)
        await asyncio.sleep(0.5)
        del block

    await work()
    assert _peak_gain(_only_span(span_exporter, "coroutine")) >= SPIKE - 20 * MB


def test_a_freed_spike_is_caught_in_a_generator(span_exporter):
    @traced_task("generator")
    def rows():
        yield 1
        _spike()
        yield 2

    assert list(rows()) == [1, 2]
    assert _peak_gain(_only_span(span_exporter, "generator")) >= SPIKE - 20 * MB


async def test_a_freed_spike_is_caught_in_an_async_generator(span_exporter):
    @traced_task("async generator")
    async def rows():
        yield 1
        block = _touch(SPIKE)
        await asyncio.sleep(0.5)
        del block
        yield 2

    assert [row async for row in rows()] == [1, 2]
    assert _peak_gain(_only_span(span_exporter, "async generator")) >= SPIKE - 20 * MB


def test_a_freed_spike_is_caught_between_set_and_clear(span_exporter):
    set_active_task("Nations Dump Processing")
    _spike()
    clear_active_task("Nations Dump Complete")
    assert _peak_gain(_only_span(span_exporter, "Nations Dump Processing")) >= SPIKE - 20 * MB


def _seed_003_run() -> None:
    set_active_task("Nations Dump Download")
    set_active_task("Nations Dump Processing")
    clear_active_task("Nations Dump Complete")


def test_seed_003_sequence_three_times_leaves_nothing_open(span_exporter, tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": str(log_dir), "retention_days": 0, "export_logs": "none"}}}}))
    tracer = trace.get_tracer("app")
    for _ in range(3):
        _seed_003_run()
    assert len(get_runtime().open_tasks) == 0
    monitor.write_check_line()
    with tracer.start_as_current_span("unrelated http request"):
        pass
    otel_memory.stop()

    spans = span_exporter.get_finished_spans()
    downloads = [s for s in spans if s.name == "Nations Dump Download"]
    processing = [s for s in spans if s.name == "Nations Dump Processing"]
    assert len(downloads) == len(processing) == 3
    assert len({s.context.span_id for s in spans}) == len(spans)  # each ended exactly once
    for download, process in zip(downloads, processing, strict=True):
        assert download.parent is None and process.parent is None  # siblings, not nested
        assert download.attributes[attr.TASK_END_REASON] == "replaced"
        assert attr.TASK_END_REASON not in process.attributes
        assert process.attributes[attr.TASK_END_LABEL] == "Nations Dump Complete"
    (http,) = [s for s in spans if s.name == "unrelated http request"]
    assert http.parent is None
    lines = [parse_line(line) for p in log_dir.glob("memory_*.log") for line in p.open()]
    assert all(lines)
    checks = [line.name for line in lines if line.marker.short == "CHECK"]
    assert checks == [STARTED, "Idle", STOPPED]
    ends = [line.name for line in lines if line.marker.short == "END"]
    assert ends == ["Nations Dump Complete"] * 3  # replaced tasks write no END line


def _wait_until_ended(exporter, timeout: float = 3.0) -> None:
    """Until the sampler has ended every open task and their spans are exported."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        get_runtime().open_tasks or not exporter.get_finished_spans()
    ):
        time.sleep(0.02)


def test_a_thread_that_finished_with_its_task_open_gets_it_ended(span_exporter):
    thread = threading.Thread(target=set_active_task, args=("forgotten in a thread",))
    thread.start()
    thread.join()
    _wait_until_ended(span_exporter)
    span = _only_span(span_exporter, "forgotten in a thread")
    assert span.attributes[attr.TASK_END_REASON] == "owner_finished"
    assert len(get_runtime().open_tasks) == 0


async def test_an_asyncio_task_that_finished_with_its_task_open_gets_it_ended(span_exporter):
    async def handler() -> None:
        set_active_task("forgotten in a coroutine")

    await asyncio.create_task(handler())
    clear_active_task("not mine")  # another asyncio task's legacy task: a no-op here
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (
        get_runtime().open_tasks or not span_exporter.get_finished_spans()
    ):
        await asyncio.sleep(0.02)
    span = _only_span(span_exporter, "forgotten in a coroutine")
    assert span.attributes[attr.TASK_END_REASON] == "owner_finished"
    assert attr.TASK_END_LABEL not in span.attributes


def test_set_in_one_thread_and_cleared_in_another_ends_once(span_exporter):
    opened = threading.Event()
    done = threading.Event()

    def opener() -> None:
        set_active_task("cross-thread")
        opened.set()
        done.wait(5)

    thread = threading.Thread(target=opener)
    thread.start()
    opened.wait(5)
    clear_active_task("from elsewhere")  # not this thread's task: a no-op
    assert len(get_runtime().open_tasks) == 1
    done.set()
    thread.join()
    _wait_until_ended(span_exporter)
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[attr.TASK_END_REASON] == "owner_finished"


def test_clear_inside_another_span_restores_the_context_exactly(span_exporter):
    tracer = trace.get_tracer("app")
    before = trace.get_current_span()
    set_active_task("Nations Dump Download")
    with tracer.start_as_current_span("http get") as http:
        clear_active_task("Nations Dump Complete")
        assert trace.get_current_span() is http
    assert trace.get_current_span() is before
    with tracer.start_as_current_span("next request"):
        pass
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    assert spans["next request"].parent is None
    assert spans["http get"].parent.span_id == spans["Nations Dump Download"].context.span_id
    assert len(get_runtime().open_tasks) == 0


def test_traced_task_nesting_restores_the_outer_span(span_exporter):
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        with traced_task("outer"), traced_task("inner"):
            pass
        assert trace.get_current_span() is request
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["outer"].parent.span_id == spans["request"].context.span_id


def test_stop_ends_tasks_still_open_with_monitor_stopped(span_exporter, tmp_path):
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": str(tmp_path / "logs"), "retention_days": 0}}}}))
    set_active_task("still running at stop")
    otel_memory.stop()
    span = _only_span(span_exporter, "still running at stop")
    assert span.attributes[attr.TASK_END_REASON] == "monitor_stopped"
    assert trace.get_current_span() is trace.INVALID_SPAN
    clear_active_task("late")  # the owner clears afterwards: nothing left, nothing raised
    assert len(span_exporter.get_finished_spans()) == 1


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


HOSTILE_NAMES = [
    None, b"bytes name", b"\xff\xfe not utf-8", "import \udcff.csv", "nul\x00inside",
    "x" * 10_000, "", "]]]", "line\nbreak\r\nand\u2028more", "tab\tname", 42, 3.5,
    ["a", "list"], {"a": "dict"}, _Unprintable(), object(), "🙂 emoji", "\ud800", "[bracket]",
    "a" * 3 + "\x85" + "b",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_any_name_ends_exactly_once_with_well_formed_lines(name, span_exporter, tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": str(log_dir), "retention_days": 0}}}}))
    set_active_task(name)
    clear_active_task()
    with traced_task(name):
        pass
    otel_memory.stop()
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        span.name.encode("utf-8")  # exportable: valid UTF-8
    assert len(get_runtime().open_tasks) == 0
    raw = b"".join(p.read_bytes() for p in log_dir.glob("memory_*.log"))
    lines = raw.decode("utf-8").splitlines()
    assert len(lines) == 6
    assert all(parse_line(line) for line in lines), lines


HOSTILE_CLEARS = [
    {"label": 123}, {"label": None, "error": "str"}, {"error": ValueError},
    {"error": 42}, {"label": b"bytes label"}, {"label": "\udcff Error"},
    {"label": "x" * 10_000}, {"label": _Unprintable()}, {"label": "ok", "error": ValueError("boom")},
]


@pytest.mark.parametrize("kwargs", HOSTILE_CLEARS, ids=range(len(HOSTILE_CLEARS)))
def test_any_clear_argument_still_ends_the_task_and_writes_end(kwargs, span_exporter, tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": str(log_dir), "retention_days": 0}}}}))
    set_active_task("Nations Dump Processing")
    clear_active_task(**kwargs)
    otel_memory.stop()
    (span,) = span_exporter.get_finished_spans()
    assert len(get_runtime().open_tasks) == 0
    if "error" in kwargs:
        assert span.status.status_code is StatusCode.ERROR
    lines = [parse_line(line) for p in log_dir.glob("memory_*.log") for line in p.open()]
    assert all(lines)
    assert [line.marker.short for line in lines] == ["CHECK", "START", "END", "CHECK"]


def test_the_sampler_blocks_when_idle_and_ticks_at_its_interval_after_waking(monkeypatch):
    from otel_memory.activity import sampler as sampler_module

    monkeypatch.setattr(sampler_module, "IDLE_GRACE_SECONDS", 0.2)
    sampler = get_runtime().sampler
    with traced_task("first"):
        time.sleep(0.15)
    time.sleep(0.6)  # past the grace: the thread blocks until the next task
    assert sampler._blocked
    ticks = sampler.ticks
    with traced_task("after waking"):
        time.sleep(1.0)
    assert 5 <= sampler.ticks - ticks <= 15  # about one tick per 100 ms, never a busy loop


# --------------------------------------------------------------------------- high-water mark


class _SamplesMissEverything:
    """The real source, except that RSS samples never see a spike (they repeat ``rss``):
    only the real ``getrusage`` high-water mark, read by the real sampler thread, can."""

    def __init__(self, rss: int) -> None:
        from otel_memory.kernel.readings import PsutilReadingSource

        self._real = PsutilReadingSource()
        self.rss = rss

    def read(self):
        return self._real.read()

    def read_rss(self) -> int:
        return self.rss

    def read_high_water(self):
        return self._real.read_high_water()


def test_a_new_process_high_between_samples_is_the_peak_of_the_task_open_across_it(
    span_exporter,
):
    rt = get_runtime()
    real = _SamplesMissEverything(0)
    high_water = real.read_high_water()
    real.rss = real.read().rss
    rt.set_reading_source(real)
    rt.sampler.interval = 0.05
    size = high_water - real.rss + 150 * MB  # a new lifetime high by about 150 MB
    with traced_task("new high"):
        ticks = rt.sampler.ticks
        while rt.sampler.ticks < ticks + 2:
            time.sleep(0.01)
        block = _touch(size)
        del block
        gc.collect()
        ticks = rt.sampler.ticks
        while rt.sampler.ticks < ticks + 2:  # the real thread reads getrusage
            time.sleep(0.01)
    span = _only_span(span_exporter, "new high")
    assert span.attributes[attr.RSS_PEAK] >= high_water + 140 * MB


def test_a_high_reached_before_a_task_opened_is_not_its_peak(span_exporter, fake_source):
    from otel_memory.testing import reading

    rt = get_runtime()
    rt.sampler.interval = 3600  # the thread ticks once when it starts; the test ticks by hand
    fake_source.push(reading(rss_mb=100))
    fake_source.high_water = 500 * MB
    with traced_task("open across the high"):
        while rt.sampler.ticks < 1:
            time.sleep(0.01)
        rt.sampler.sample_now()
        fake_source.high_water = 800 * MB  # reached now, after the tick above read 500
        with traced_task("opened after the high"):
            rt.sampler.sample_now()  # sees 800 > 500
    across = _only_span(span_exporter, "open across the high")
    after = _only_span(span_exporter, "opened after the high")
    assert across.attributes[attr.RSS_PEAK] == 800 * MB
    assert after.attributes[attr.RSS_PEAK] == 100 * MB


def test_a_source_whose_high_water_mark_fails_never_stops_the_sampler(span_exporter, fake_source):
    rt = get_runtime()

    def broken() -> int:
        raise OSError("no getrusage here")

    fake_source.read_high_water = broken
    rt.sampler.interval = 0.02
    with traced_task("still sampled"):
        ticks = rt.sampler.ticks
        time.sleep(0.2)
        assert rt.sampler.running and rt.sampler.ticks >= ticks + 3
    assert [s.name for s in span_exporter.get_finished_spans()] == ["still sampled"]
