"""Leak suspects and the snapshot log: the detector's rules with exact numbers, then the profiler
thread against the real garbage collector, real threads and the real OpenTelemetry SDK."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_memory.activity.census import HeapCensus, take_census
from otel_memory.base.config import config_from_dict
from otel_memory.guards.leaks import (
    ATTR_COUNT_NOW,
    ATTR_GROWTH,
    ATTR_GROWTH_STREAK,
    ATTR_PYTHON_TYPE,
    LEAK_EVENT_NAME,
    Kind,
    LeakDetector,
    LeakSuspect,
    describe,
    kind_of,
)
from otel_memory.guards.profiler import THREAD_NAME, Profiler, format_snapshot, start_profiler
from otel_memory.kernel.readings import MB

TICK = 0.1  # profiler interval in the thread tests (config allows >= 10 s; tests pass interval=)


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


class Censuses:
    """A profiler listener: every census it hands out, and a way to wait for one."""

    def __init__(self) -> None:
        self.seen: list[HeapCensus] = []
        self._cond = threading.Condition()

    def __call__(self, census: HeapCensus) -> None:
        with self._cond:
            self.seen.append(census)
            self._cond.notify_all()

    def wait_for(self, test: Callable[[HeapCensus], bool], timeout: float = 20) -> HeapCensus:
        deadline = time.monotonic() + timeout
        with self._cond:
            start = len(self.seen)
            while True:
                for found in self.seen[start:]:
                    if test(found):
                        return found
                start = len(self.seen)
                left = deadline - time.monotonic()
                assert left > 0, "no such census arrived"
                self._cond.wait(left)


def wait_until(test: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


@pytest.fixture
def running() -> Iterator[Callable[..., tuple[Profiler, Censuses]]]:
    """Start profiler threads (interval ``TICK``) with a listener; closed after the test."""
    started: list[Profiler] = []

    def start(**keys: object) -> tuple[Profiler, Censuses]:
        provider = keys.pop("logger_provider", None)
        profiler = Profiler(profiling(**keys), interval=TICK, logger_provider=provider)
        seen = Censuses()
        profiler.add_listener(seen)
        profiler.start()
        started.append(profiler)
        return profiler, seen

    yield start
    for profiler in started:
        profiler.close()
        assert not profiler.running


def suspects_reported(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every leak warning the profiler logged during the test (suspects may come and go)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "memory_profiler" and r.levelno == logging.WARNING
    ]


def full_collection_then_trend(profiler: Profiler) -> None:
    """Play the host: a full collection (as the interpreter runs on its own), then wait for the
    profiler's census right after it. The package never calls gc.collect() itself."""
    before = profiler.stats.trend_censuses
    time.sleep(TICK)  # trend censuses are at least 0.9 interval apart
    for _ in range(4):  # a loaded machine may miss one: the host collects again, as hosts do
        gc.collect()
        try:
            wait_until(lambda: profiler.stats.trend_censuses > before, timeout=5)
            return
        except AssertionError:
            continue
    raise AssertionError(f"no trend census after 4 full collections: {profiler.stats}")


# ------------------------------------------------------------------- the rules, exact numbers


def test_a_large_sustained_growth_is_flagged_once_after_k_growths():
    detector = LeakDetector(snapshots=3)
    flagged = [detector.observe(census(app__Message=5_000 * (i + 1))) for i in range(5)]

    assert flagged[:3] == [[], [], []]
    assert flagged[3] == [LeakSuspect("app.Message", streak=3, before=5_000, now=20_000)]
    assert flagged[4] == []  # already a suspect: reported once
    assert detector.suspects() == [LeakSuspect("app.Message", streak=4, before=5_000, now=25_000)]


@pytest.mark.parametrize(
    "counts",
    [
        [1, 2, 5, 7, 9, 12],  # in-flight swing: sustained but tiny
        [100_000, 100_500, 101_000, 102_000, 103_000],  # large steady base drifting: +3 %
        [20_000, 30_000, 30_000, 40_000, 50_000],  # a flat census resets the streak
    ],
)
def test_small_or_unsustained_growth_is_not_flagged(counts):
    detector = LeakDetector(snapshots=3)
    for count in counts:
        assert detector.observe_counts({"app.Cache": count}) == []
    assert detector.suspects() == []


def test_thresholds_are_absolute_and_relative_to_the_start_of_the_streak():
    detector = LeakDetector(snapshots=2)
    # +999 over the streak: below 1,000 objects; then the streak goes on and passes both bars.
    for count in (10_000, 10_400, 10_999):
        assert detector.observe_counts({"app.Row": count}) == []
    assert detector.observe_counts({"app.Row": 11_999}) == []  # +1,999 but only 20 % is 2,000
    assert detector.observe_counts({"app.Row": 12_000}) == [
        LeakSuspect("app.Row", streak=4, before=10_000, now=12_000)
    ]


def test_a_suspect_that_stops_growing_is_no_longer_one_and_is_reported_again_if_it_resumes():
    detector = LeakDetector(snapshots=2)
    for count in (1_000, 5_000, 9_000):
        detector.observe_counts({"app.A": count})
    assert [s.name for s in detector.suspects()] == ["app.A"]
    detector.observe_counts({"app.A": 9_000})
    assert detector.suspects() == []
    detector.observe_counts({"app.A": 13_000})
    assert [s.name for s in detector.observe_counts({"app.A": 17_000})] == ["app.A"]


def test_a_class_that_disappears_is_forgotten():
    detector = LeakDetector(snapshots=2)
    detector.observe_counts({"a.A": 1_000})
    detector.observe_counts({"a.A": 5_000})
    detector.observe_counts({})
    assert detector.observe_counts({"a.A": 9_000}) == []


def test_own_and_sdk_classes_are_never_suspects():
    detector = LeakDetector(snapshots=2)
    names = [
        "otel_memory.activity.tasks._Task",
        "opentelemetry.sdk.metrics._internal.aggregation._LastValueAggregation",
        "opentelemetry.sdk.trace._Span",
    ]
    for i in range(6):
        assert detector.observe_counts({name: 10_000 * 2**i for name in names}) == []
    assert {kind_of(name) for name in names} == {Kind.OWN}


def test_generic_types_need_unexplained_growth_ten_times_the_bar():
    # A leaking class that owns a list: list grows exactly as much and is not named.
    detector = LeakDetector(snapshots=3)
    found = []
    for i in range(6):
        counts = {"app.Message": 20_000 * (i + 1), "list": 50_000 + 20_000 * i}
        found += detector.observe_counts(counts)
    assert [s.name for s in found] == ["app.Message"]

    # Plain dicts piling up in a module-level dict, nothing specific growing: flagged.
    detector = LeakDetector(snapshots=3)
    found = [s for i in range(4) for s in detector.observe_counts({"dict": 30_000 + 12_000 * i})]
    assert [s.name for s in found] == ["dict"]

    # The same growth below 10,000 unexplained objects, or below 50 %, is not enough.
    for series in ([30_000, 33_000, 36_000, 39_000], [100_000, 115_000, 130_000, 145_000]):
        detector = LeakDetector(snapshots=3)
        assert [s for c in series for s in detector.observe_counts({"dict": c})] == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("dict", Kind.GENERIC),
        ("collections.defaultdict", Kind.GENERIC),
        ("collections.deque", Kind.GENERIC),
        ("threading.Condition", Kind.GENERIC),
        ("_asyncio.Task", Kind.GENERIC),
        ("weakref.ReferenceType", Kind.GENERIC),
        ("opentelemetry.sdk.metrics._internal.exemplar.SimpleFixedSizeExemplarReservoir", Kind.OWN),
        ("otel_memory.activity.census.HeapCensus", Kind.OWN),
        ("app.Message", Kind.SPECIFIC),
        ("opentelemetry_extra.Thing", Kind.SPECIFIC),  # a prefix is a module, not a string
        ("typesetter.Page", Kind.SPECIFIC),
    ],
)
def test_kind_of(name, kind):
    assert kind_of(name) is kind


def test_suspect_wording():
    suspect = LeakSuspect("app.Message", streak=3, before=1_000, now=1_450)
    assert describe(suspect) == (
        "Leak suspect: app.Message grew in 3 consecutive snapshots: 1,000 -> 1,450 objects (+450)"
    )


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


def test_on_demand_snapshots_join_the_trend_only_after_a_full_collection(caplog, log_exporter):
    exporter, provider = log_exporter
    counts = iter(range(10_000, 100_000, 10_000))
    profiler = Profiler(
        profiling(leak_snapshots=2),
        take=lambda: census(app__Message=next(counts), dict=7),
        logger_provider=provider,
    )

    with caplog.at_level(logging.INFO, logger="memory_profiler"):
        gc.disable()  # no automatic full collection may sneak in
        try:
            for _ in range(3):
                profiler.snapshot()  # no full collection in between: the trend gets no point
        finally:
            gc.enable()
        assert profiler.stats.trend_censuses == 0
        for _ in range(4):
            gc.collect()  # the host's full collection
            profiler.snapshot()

    assert profiler.stats.trend_censuses == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [describe(LeakSuspect("app.Message", streak=2, before=40_000, now=60_000))]
    [exported] = exporter.get_finished_logs()
    record = exported.log_record
    assert record.event_name == LEAK_EVENT_NAME
    assert record.severity_text == "WARNING"
    assert record.attributes[ATTR_PYTHON_TYPE] == "app.Message"
    assert record.attributes[ATTR_GROWTH_STREAK] == 2
    assert record.attributes[ATTR_GROWTH] == 20_000
    assert record.attributes[ATTR_COUNT_NOW] == 60_000


# ------------------------------------------------------------------- the thread, real gc


class Msg:
    """A chat message in a reference cycle with itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


MSG = f"{__name__}.Msg"


def test_cyclic_garbage_is_not_flagged(running, caplog):
    # GIVEN a host whose automatic collector is off between its own full collections, piling
    # up unreachable Msg cycles: 5,000 -> 20,000 between collections, 0 after each.
    caplog.set_level(logging.WARNING, logger="memory_profiler")
    profiler, seen = running(leak_snapshots=3)
    gc.disable()
    try:
        for _ in range(5):
            for pile in range(1, 5):
                for _ in range(5_000):
                    Msg()
                seen.wait_for(lambda c, n=pile: c.counts.get(MSG, 0) >= 5_000 * n)
            full_collection_then_trend(profiler)
    finally:
        gc.enable()

    # THEN the profiler's ticks saw the pile grow, yet nothing is a suspect: the trend only
    # uses the censuses right after the full collections, where the pile is gone.
    assert profiler.stats.trend_censuses >= 5
    assert suspects_reported(caplog) == []
    witness = LeakDetector(snapshots=3)  # fed every census, as v0.1 did
    flagged = {s.name for c in seen.seen for s in witness.observe(c)}
    assert MSG in flagged


def test_the_sdks_own_growth_is_not_flagged(running, caplog):
    # GIVEN a real SDK meter gaining a gauge with 1,500 attribute sets every cycle (each stream
    # is capped at 2,000 sets): the SDK keeps an aggregation, a reservoir, dicts... per set.
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("churn")

    def churn(options: CallbackOptions) -> list[Observation]:
        return [Observation(1, {"python.type": f"class-{i}"}) for i in range(1_500)]

    caplog.set_level(logging.WARNING, logger="memory_profiler")
    profiler, seen = running(leak_snapshots=3)
    try:
        for cycle in range(6):
            meter.create_observable_gauge(f"churn.{cycle}", [churn])
            # No census meanwhile: the SDK builds tuples from generators, and on CPython < 3.13
            # a census holding a half-built tuple makes it raise SystemError (gh-59313).
            with profiler._census_lock:
                reader.get_metrics_data()
            full_collection_then_trend(profiler)
    finally:
        provider.shutdown()

    grown = {
        name
        for name, count in seen.seen[-1].counts.items()
        if count - seen.seen[0].counts.get(name, 0) >= 5_000
    }
    assert any(kind_of(name) is Kind.OWN for name in grown), grown  # the SDK really grew
    assert suspects_reported(caplog) == []


class Swing:
    """An object of in-flight work."""


def test_small_swings_are_not_flagged(running, caplog):
    caplog.set_level(logging.WARNING, logger="memory_profiler")
    profiler, _ = running(leak_snapshots=3)
    in_flight: list[Swing] = []
    for count in (1, 2, 5, 7, 9, 12, 3, 8):
        in_flight[:] = [Swing() for _ in range(count)]
        full_collection_then_trend(profiler)
    assert profiler.stats.trend_censuses >= 8
    assert suspects_reported(caplog) == []


class Leaked:
    """What the leak keeps."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tags: list[str] = []


_leak: dict[int, Leaked] = {}


def test_a_real_leak_is_flagged_alone_within_leak_snapshots(running, log_exporter, caplog):
    # GIVEN a module-level dict gaining 3,000 objects a second on a thread of its own
    exporter, logger_provider = log_exporter
    stop = threading.Event()

    def leak() -> None:
        n = 0
        while not stop.is_set():
            for _ in range(300):
                _leak[n] = Leaked(n)
                n += 1
            time.sleep(0.1)

    leaker = threading.Thread(target=leak, name="leaker", daemon=True)
    with caplog.at_level(logging.WARNING, logger="memory_profiler"):
        profiler, _ = running(leak_snapshots=3, logger_provider=logger_provider)
        leaker.start()
        try:
            # WHEN the host runs a full collection now and then: the baseline plus 3 growths
            for _ in range(4):
                time.sleep(0.5)
                full_collection_then_trend(profiler)
        finally:
            stop.set()
            leaker.join()
            _leak.clear()

    # THEN Leaked, and only it, is a suspect: its list is its payload
    name = f"{__name__}.Leaked"
    assert [s.name for s in profiler.detector.suspects()] == [name]
    assert [w.split(" grew")[0] for w in suspects_reported(caplog)] == [f"Leak suspect: {name}"]
    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [(r.event_name, r.attributes[ATTR_PYTHON_TYPE]) for r in records] == [
        (LEAK_EVENT_NAME, name)
    ]


# ------------------------------------------------------------------- the thread's economy


def test_ticks_reuse_the_census_while_nothing_changed(running):
    profiler, seen = running()
    wait_until(lambda: profiler.stats.ticks >= 15)

    # An idle process: no generation-1/2 collection between ticks, so no new census.
    assert profiler.stats.reused >= 10, profiler.stats
    assert profiler.stats.censuses <= profiler.stats.ticks - 10
    assert all(c is seen.seen[-1] for c in seen.seen[-5:])  # the same census offered again

    # A change that survives (objects promoted by generation-1 collections) brings a new one.
    kept = [[i] for i in range(50_000)]
    first = seen.seen[-1]
    found = seen.wait_for(lambda c: c is not first)
    assert found.counts["list"] >= first.counts["list"] + 40_000
    del kept


def test_the_thread_logs_a_block_every_interval_and_hooks_gc_only_while_running(caplog):
    with caplog.at_level(logging.INFO, logger="memory_profiler"):
        profiler = start_profiler(profiling(), interval=TICK)
        try:
            wait_until(lambda: profiler.stats.ticks >= 3)
            assert profiler._on_gc in gc.callbacks
            [thread] = [t for t in threading.enumerate() if t.name == THREAD_NAME]
            assert thread.daemon
        finally:
            profiler.close()
    assert not profiler.running
    assert profiler._on_gc not in gc.callbacks
    blocks = [r for r in caplog.records if r.getMessage().startswith("Memory Snapshot\n")]
    assert len(blocks) >= 3


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
        return take_census()

    with caplog.at_level(logging.WARNING, logger="otel_memory"):
        profiler = start_profiler(profiling(), interval=0.01, take=take)
        try:
            assert done.wait(timeout=10)
        finally:
            profiler.close()
    assert any("memory snapshot failed" in r.getMessage() for r in caplog.records)


def test_the_snapshot_reaches_the_hosts_handlers_with_the_root_logger_at_warning():
    # GIVEN a host that configured logging the usual way and left the root level at WARNING
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        # WHEN profiling (switched on in the config) takes a snapshot
        from otel_memory.base.config import config_from_dict
        from otel_memory.guards.profiler import Profiler

        config = config_from_dict({"general": {"monitoring": {"memory_profiling": {"enabled": True}}}})
        Profiler(config).snapshot()
    finally:
        root.removeHandler(handler)
    # THEN the block reached the host's handler, and the host's levels are as they were
    assert "Memory Snapshot" in stream.getvalue()
    assert root.level == logging.WARNING
    assert logging.getLogger("memory_profiler").level == logging.NOTSET
