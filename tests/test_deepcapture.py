"""Deep capture with real tracemalloc and real allocations: the growing task's top site is the
line that allocated, tracing runs only while a traced task runs, and the host's tracing is left
alone."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Iterator

import psutil
import pytest

from otel_memory.guards.deepcapture import AllocationReport, DeepCapture

MB = 1_048_576
_process = psutil.Process()


def rss() -> int:
    return int(_process.memory_info().rss)


def line_of(marker: str) -> str:
    """``file:line`` of the line of this file that carries ``marker``."""
    with open(__file__, encoding="utf-8") as source:
        for number, text in enumerate(source, 1):
            if text.rstrip().endswith(marker):
                return f"{__file__}:{number}"
    raise AssertionError(marker)


# Each allocator fills its pages (bytes repetition writes every byte), so RSS really grows.
def allocate_a(mb: int) -> list[bytes]:
    return [b"\x01" * MB for _ in range(mb)]  # SITE-A


def allocate_b(mb: int) -> list[bytes]:
    return [b"\x02" * MB for _ in range(mb)]  # SITE-B


def allocate_c(mb: int) -> list[bytes]:
    return [b"\x03" * MB for _ in range(mb)]  # SITE-C


class Sampler:
    """A real background thread feeding real RSS to ``sampled``, as the monitor's sampler does;
    it also records whether tracemalloc was ever on."""

    def __init__(self, capture: DeepCapture, period: float = 0.005) -> None:
        self.capture = capture
        self.period = period
        self.saw_tracing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.capture.sampled(rss())
            self.saw_tracing |= tracemalloc.is_tracing()
            self._stop.wait(self.period)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def grow_until_captured(
    capture: DeepCapture, task: object, allocate, *, sample: bool = True
) -> list[bytes]:
    """Allocate 10 MB at a time until ``task`` is traced. RSS may grow less than what is
    allocated (malloc reuses memory that earlier tests freed), so no fixed amount is assumed."""
    held: list[bytes] = []
    while not capture.is_capturing(task):
        assert len(held) < 3000, "RSS never grew past the threshold"
        held += allocate(10)
        if sample:
            capture.sampled(rss())
        else:
            time.sleep(0.002)  # the Sampler thread's turn
    return held


@pytest.fixture(autouse=True)
def _no_tracing_left() -> Iterator[None]:
    assert not tracemalloc.is_tracing(), "a previous test left tracemalloc on"
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
        pytest.fail("tracemalloc left on")


def test_growing_task_is_traced_from_the_moment_it_outgrows_its_start():
    # GIVEN a 100 MB growth threshold and a real sampler thread
    capture = DeepCapture(rss_growth_bytes=100 * MB, top_n=5)
    task = object()
    with Sampler(capture):
        capture.task_started(task, "Nations Dump Processing", rss())
        # WHEN the task allocates in one line until the sampler sees it grown, then 300 MB
        # in another
        before = grow_until_captured(capture, task, allocate_a, sample=False)
        assert tracemalloc.is_tracing()
        after = allocate_b(300)
        report = capture.task_ended(task)
    # THEN the top site is the second line, with its 300 MB; of the first line, the 100 MB
    # that it allocated before the sampler saw the growth were not traced
    assert report is not None
    assert report.sites[0] == line_of("# SITE-B")
    assert 300 * MB <= report.bytes[0] < 310 * MB
    assert report.counts[0] >= 300
    by_site = dict(zip(report.sites, report.bytes, strict=True))
    assert by_site.get(line_of("# SITE-A"), 0) <= (len(before) - 95) * MB
    assert not tracemalloc.is_tracing()
    assert "Nations Dump Processing" in capture.armed()
    del before, after


def test_the_next_run_of_an_armed_name_is_traced_from_its_start():
    capture = DeepCapture(rss_growth_bytes=50 * MB)
    first = object()
    capture.task_started(first, "import", rss())
    held = grow_until_captured(capture, first, allocate_a)  # traced now, name armed
    assert capture.task_ended(first) is not None
    assert capture.armed() == {"import"}
    del held

    # the next run allocates far less than the threshold, yet it is traced from its start
    second = object()
    capture.task_started(second, "import", rss())
    assert tracemalloc.is_tracing()
    small = allocate_c(20)
    capture.sampled(rss())
    report = capture.task_ended(second)
    assert report is not None
    assert report.sites[0] == line_of("# SITE-C")
    assert 20 * MB <= report.bytes[0] < 21 * MB
    assert not tracemalloc.is_tracing()
    # it did not grow past the threshold, so the run after it is not traced
    assert capture.armed() == frozenset()
    third = object()
    capture.task_started(third, "import", rss())
    assert not tracemalloc.is_tracing()
    assert capture.task_ended(third) is None
    del small


def test_a_task_that_does_not_grow_gets_nothing_and_tracing_is_never_started():
    capture = DeepCapture(rss_growth_bytes=100 * MB)
    task = object()
    with Sampler(capture) as sampler:
        capture.task_started(task, "small", rss())
        held = allocate_a(20)
        time.sleep(0.05)  # several samples
        report = capture.task_ended(task)
    assert report is None
    assert not sampler.saw_tracing
    assert capture.armed() == frozenset()
    del held


def test_the_hosts_tracing_is_used_and_never_started_or_stopped():
    tracemalloc.start(1)
    try:
        host_object = bytearray(10_000)  # traced by the host: stop()+start() would forget it
        capture = DeepCapture(rss_growth_bytes=50 * MB)
        task = object()
        capture.task_started(task, "job", rss())
        held = grow_until_captured(capture, task, allocate_a)
        more = allocate_b(60)
        report = capture.task_ended(task)
        assert tracemalloc.is_tracing()
        assert tracemalloc.get_object_traceback(host_object) is not None
        # the baseline was a snapshot: only what grew after it counts, SITE-A came before
        assert report is not None
        assert report.sites[0] == line_of("# SITE-B")
        assert 60 * MB <= report.bytes[0] < 62 * MB
        assert line_of("# SITE-A") not in report.sites
        capture.close()
        assert tracemalloc.is_tracing()
        del held, more
    finally:
        tracemalloc.stop()


def test_concurrent_tasks_keep_tracing_on_until_the_last_one_ends():
    capture = DeepCapture(rss_growth_bytes=50 * MB)
    start = rss()
    reports: dict[str, AllocationReport | None] = {}
    both_started, a_ended, b_go = threading.Barrier(3), threading.Event(), threading.Event()

    def task_a() -> None:
        key = object()
        capture.task_started(key, "a", start)
        both_started.wait()
        b_go.wait()
        held = allocate_a(40)
        reports["a"] = capture.task_ended(key)
        a_ended.set()
        del held

    def task_b() -> None:
        key = object()
        capture.task_started(key, "b", start)
        both_started.wait()
        a_ended.wait()
        assert tracemalloc.is_tracing()  # b is still traced
        held = allocate_b(70)
        reports["b"] = capture.task_ended(key)
        del held

    threads = [threading.Thread(target=task_a), threading.Thread(target=task_b)]
    for thread in threads:
        thread.start()
    both_started.wait()
    ballast = allocate_c(60)  # both tasks outgrow their start
    capture.sampled(start + 60 * MB)  # the RSS it would be, whatever malloc reuses
    assert tracemalloc.is_tracing()
    b_go.set()
    for thread in threads:
        thread.join()
    assert not tracemalloc.is_tracing()
    a, b = reports["a"], reports["b"]
    assert a is not None and b is not None
    assert a.sites[0] == line_of("# SITE-A")
    assert a.bytes[0] >= 40 * MB
    assert b.sites[0] == line_of("# SITE-B")
    assert b.bytes[0] >= 70 * MB
    # a's 40 MB were freed before b ended: a report counts what is still alive
    assert line_of("# SITE-A") not in b.sites
    assert capture.armed() == {"a", "b"}
    del ballast


def nested_caller(mb: int) -> list[bytes]:
    return allocate_a(mb)  # CALLER


def test_more_frames_name_the_callers():
    capture = DeepCapture(rss_growth_bytes=1, top_n=3, frames=3)
    task = object()
    capture.task_started(task, "deep", 0)
    capture.sampled(10 * MB)
    assert tracemalloc.get_traceback_limit() == 3
    held = nested_caller(5)
    report = capture.task_ended(task)
    assert report is not None
    frames = report.sites[0].split(" < ")
    # Up to 3.11 a list comprehension is a frame of its own (SITE-A twice); 3.12 inlines it.
    assert frames[0] == line_of("# SITE-A")
    assert line_of("# CALLER") in frames
    assert len(frames) == 3
    del held


def test_top_n_and_the_attributes():
    capture = DeepCapture(rss_growth_bytes=1, top_n=2)
    task = object()
    capture.task_started(task, "t", 0)
    capture.sampled(10 * MB)
    held = (allocate_a(3), allocate_b(5), allocate_c(1))
    report = capture.task_ended(task)
    assert report is not None
    assert report.sites == (line_of("# SITE-B"), line_of("# SITE-A"))
    assert report.attributes() == {
        "otel_memory.allocation.sites": report.sites,
        "otel_memory.allocation.bytes": report.bytes,
        "otel_memory.allocation.counts": report.counts,
    }
    assert all(isinstance(n, int) for n in (*report.bytes, *report.counts))
    del held


def test_tracing_stopped_under_us_is_reported_once_and_never_raised(caplog):
    capture = DeepCapture(rss_growth_bytes=1)
    first, second = object(), object()
    capture.task_started(first, "x", 0)
    capture.task_started(second, "y", 0)
    capture.sampled(10 * MB)
    tracemalloc.stop()  # someone else stops it
    assert capture.task_ended(first) is None
    assert capture.task_ended(second) is None
    assert [r.getMessage() for r in caplog.records].count(
        "otel_memory: deep capture failed: RuntimeError('the tracemalloc module must be "
        "tracing memory allocations to take a snapshot')"
    ) == 1


def test_close_stops_the_tracing_it_started():
    capture = DeepCapture(rss_growth_bytes=1)
    task = object()
    capture.task_started(task, "x", 0)
    capture.sampled(10 * MB)
    assert tracemalloc.is_tracing()
    capture.close()
    assert not tracemalloc.is_tracing()
    assert capture.task_ended(task) is None
    assert capture.armed() == frozenset()


def test_many_threads_racing_the_sampler_leave_tracing_off():
    # GIVEN a sampler thread that finds every task grown, and 6 threads running short tasks
    capture = DeepCapture(rss_growth_bytes=1)
    stop = threading.Event()
    reports: list[AllocationReport | None] = []

    def sampler() -> None:
        while not stop.is_set():
            capture.sampled(10 * MB)

    def worker(index: int) -> None:
        for _ in range(40):
            key = object()
            capture.task_started(key, f"task-{index}", 0)
            held = bytearray(1000)
            time.sleep(0.0005)  # let the sampler run while the task is open
            reports.append(capture.task_ended(key))
            del held

    sampling = threading.Thread(target=sampler)
    sampling.start()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    sampling.join()
    # THEN some tasks were traced (armed names, sampler hits), and tracing is off at the end
    assert len(reports) == 240
    assert any(report is not None for report in reports)
    assert not tracemalloc.is_tracing()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=">= 1"):
        DeepCapture(rss_growth_bytes=0)
    with pytest.raises(ValueError, match=">= 1"):
        DeepCapture(rss_growth_bytes=MB, frames=0)
