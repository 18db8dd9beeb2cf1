"""The reachability check: real objects, real threads, the real collector (never collected by us).

Each leak kind is held the way services hold them (a module global, a class attribute, a closure
cell, an ``lru_cache``, a thread's local variable, an instance attribute) and must come back with
the path a user would write down; garbage must come back unreachable, and the search must not be
fooled by its own containers, its own thread or the monitor's own objects.
"""

from __future__ import annotations

import functools
import gc
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import otel_memory.activity.census as census_module
from otel_memory.activity.census import ACCELERATED, newest_instances, referrers_of
from otel_memory.base.config import config_from_dict
from otel_memory.guards.leaks import (
    ATTR_LEAK_PATH,
    LEAK_EVENT_NAME,
    LeakDetector,
    LeakSuspect,
    describe,
)
from otel_memory.guards.profiler import CHECKS_PER_CENSUS, Profiler
from otel_memory.guards.reachability import Limits, ReachabilityCheck, resolve

HERE = __name__


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """The host's collector off: garbage stays until a collection the test never runs."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def check(name: str, per_census: int = 2_000, limits: Limits | None = None):
    return ReachabilityCheck(limits).check(f"{HERE}.{name}", per_census)


# ------------------------------------------------------------------- the newest instances


class Thing:
    pass


PASSES = [  # the pure-Python pass and its compiled twin
    False,
    pytest.param(True, marks=pytest.mark.skipif(not ACCELERATED, reason="not compiled")),
]


@pytest.mark.parametrize("accelerated", PASSES)
def test_newest_instances_come_newest_first_by_exact_type(accelerated, no_automatic_collection):
    class Sub(Thing):
        pass

    things = [Thing() for _ in range(50)]
    subs = [Sub() for _ in range(5)]
    found = newest_instances([Thing], 10, accelerated=accelerated)
    assert found == things[::-1][:10]  # exact type: no Sub
    assert newest_instances([Thing, Sub], 100, accelerated=accelerated)[:5] == subs[::-1]
    assert newest_instances([tuple], 5, accelerated=accelerated) == []  # never a tuple
    del found


@pytest.mark.skipif(not ACCELERATED, reason="compiled census not built")
def test_the_compiled_and_python_scans_agree(no_automatic_collection):
    # (a collection between the two scans would move objects between generations)
    keep = [Thing() for _ in range(3_000)]
    assert newest_instances([Thing], 2_000, accelerated=True) == newest_instances(
        [Thing], 2_000, accelerated=False
    )
    del keep


@pytest.mark.parametrize("accelerated", PASSES)
def test_a_tuple_another_thread_is_building_is_never_held(accelerated):
    # GIVEN a thread inside tuple(genexpr) over our object, paused half-way: the tuple exists,
    # refers to the object, and will be resized when the thread goes on (gh-59313)
    target = Thing()
    inside, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def items() -> Iterator[Thing]:
        for i in range(100):
            if i == 50:
                inside.set()
                go_on.wait(10)
            yield target

    def build() -> None:
        try:
            tuple(items())
        except SystemError as exc:  # what gc.get_referrers' result makes it raise
            errors.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    assert inside.wait(10)
    # WHEN the search asks for the object's referrers and holds them while the thread finishes
    found, calls = referrers_of((target,), accelerated=accelerated)
    go_on.set()
    builder.join()
    # THEN the half-built tuple was not among them, and the host's tuple() succeeded
    assert errors == []
    assert [o for o in found if type(o) is tuple] == [] and calls == 2
    del found


@pytest.mark.parametrize("accelerated", PASSES)
def test_referrers_keep_the_tuples_something_holds(accelerated):
    target = Thing()
    Registry.pair = (target, 1)  # type: ignore[attr-defined]
    alone = (target, 2)  # held by this running frame only: invisible to the collector
    box = [target]
    try:
        targets = (target,)
        found, calls = referrers_of(targets, accelerated=accelerated)
        assert calls == 2
        assert any(o is Registry.pair for o in found)  # type: ignore[attr-defined]
        assert any(o is box for o in found)
        kept = {id(o) for o in found}  # (a comprehension naming `alone` would hold it in a cell)
        assert id(alone) not in kept and id(targets) not in kept
    finally:
        del Registry.pair  # type: ignore[attr-defined]


def test_class_names_resolve_without_running_module_code():
    assert resolve("dict") == [dict]
    assert resolve(f"{HERE}.Thing") == [Thing]
    assert resolve("collections.OrderedDict") == [__import__("collections").OrderedDict]
    assert resolve("no.such.Class") == []

    def factory() -> type:
        class Local:
            pass

        return Local

    local = factory()
    assert resolve(class_name_of(local)) == [local]  # <locals>: found among live classes


def class_name_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ------------------------------------------------------------------- each kind of root


class InGlobal:
    pass


_cache: dict[int, list[InGlobal]] = {}


def test_a_module_global_is_a_root():
    _cache.update((i, [InGlobal()]) for i in range(2_000))
    try:
        verdict = check("InGlobal")
    finally:
        _cache.clear()
    assert verdict.reachable_enough and verdict.sampled == Limits().sample
    assert verdict.path == (f"module {HERE}", f"dict {HERE}._cache", "list", f"{HERE}.InGlobal")


class InClassAttribute:
    pass


class Registry:
    items: ClassVar[list[InClassAttribute]] = []


def test_a_class_attribute_is_a_root():
    Registry.items.extend(InClassAttribute() for _ in range(2_000))
    try:
        verdict = check("InClassAttribute")
    finally:
        Registry.items.clear()
    assert verdict.reachable_enough
    assert verdict.path == (
        f"class {HERE}.Registry",
        f"list {HERE}.Registry.items",
        f"{HERE}.InClassAttribute",
    )


class InCell:
    pass


def _remembering() -> Callable[[object], None]:
    seen: list[object] = []

    def remember(item: object) -> None:
        seen.append(item)

    return remember


remember = _remembering()


def test_a_closure_cell_of_a_module_level_function_is_reached_through_it():
    for _ in range(2_000):
        remember(InCell())
    try:
        verdict = check("InCell")
    finally:
        remember.__closure__[0].cell_contents.clear()  # type: ignore[index]
    assert verdict.reachable_enough
    assert verdict.path == (
        f"module {HERE}",
        f"function {HERE}.remember",
        f"list {HERE}.remember cell seen",
        f"{HERE}.InCell",
    )


class InLruCache:
    pass


@functools.cache  # what lru_cache(maxsize=None) is
def load(key: int) -> InLruCache:
    return InLruCache()


@functools.lru_cache(maxsize=100_000)
def load_bounded(key: int) -> InLruCache:
    return InLruCache()


@pytest.mark.parametrize("cached", [load, load_bounded], ids=["unbounded", "maxsize"])
def test_an_lru_cache_is_reached_through_its_wrapper(cached):
    for key in range(2_000):
        cached(key)
    try:
        verdict = check("InLruCache")
    finally:
        cached.cache_clear()
    assert verdict.reachable_enough
    name = f"{HERE}.{cached.__name__}"
    assert verdict.path == (f"module {HERE}", f"lru_cache {name}", f"{HERE}.InLruCache {name} cache")


class InLocal:
    pass


def test_a_local_variable_of_another_threads_frame_is_a_root():
    ready, done = threading.Event(), threading.Event()

    def hold_requests() -> None:
        backlog = [InLocal() for _ in range(2_000)]
        ready.set()
        done.wait(30)
        backlog.clear()

    worker = threading.Thread(target=hold_requests, name="backlog-worker")
    worker.start()
    try:
        assert ready.wait(10)
        verdict = check("InLocal")
    finally:
        done.set()
        worker.join()
    assert verdict.reachable_enough
    function = hold_requests.__qualname__ if sys.version_info >= (3, 11) else "hold_requests"
    assert verdict.path == (  # (code objects have a qualified name from 3.11 on)
        f"thread backlog-worker frame {HERE}.{function}",
        "list local backlog",
        f"{HERE}.InLocal",
    )


class InAttribute:
    pass


class Service:
    def __init__(self) -> None:
        self.history: list[InAttribute] = []


service = Service()


def test_an_instance_attribute_is_named_by_its_holder():
    service.history.extend(InAttribute() for _ in range(2_000))
    try:
        verdict = check("InAttribute")
    finally:
        service.history.clear()
    assert verdict.path == (
        f"module {HERE}",
        f"{HERE}.Service {HERE}.service",
        f"list {HERE}.service.history",
        f"{HERE}.InAttribute",
    )


# ------------------------------------------------------------------- garbage and self-deception


class Cycle:
    """Garbage only the cyclic collector frees."""

    def __init__(self) -> None:
        self.me = self
        self.payload = [self]


def test_cyclic_garbage_is_proven_unreachable(no_automatic_collection):
    for _ in range(3_000):
        Cycle()
    verdict = check("Cycle")
    assert verdict.sampled == Limits().sample
    assert verdict.reachable == 0 and verdict.path == ()
    assert verdict.exhausted  # the search ran dry: a proof, not a limit
    assert not verdict.reachable_enough


def test_a_few_in_flight_objects_do_not_make_growing_garbage_reachable(no_automatic_collection):
    ready, done = threading.Event(), threading.Event()

    def handle() -> None:
        for _ in range(3_000):
            Cycle()  # handled requests: garbage
        in_flight = [Cycle() for _ in range(20)]  # the newest, held by the running handler
        ready.set()
        done.wait(30)
        del in_flight

    worker = threading.Thread(target=handle)
    worker.start()
    try:
        assert ready.wait(10)
        verdict = check("Cycle", per_census=3_000)
    finally:
        done.set()
        worker.join()
    assert verdict.reachable <= 1  # the sample spreads over the growth, not its newest objects
    assert not verdict.reachable_enough


class Payload:
    pass


def test_checking_garbage_leaves_other_threads_locals_alone(no_automatic_collection):
    # Before 3.13, reading a running frame's locals leaves a snapshot dict on the frame that keeps
    # them alive until its next refresh: a check of garbage must not need it.
    import weakref

    ready, dropped, done = threading.Event(), threading.Event(), threading.Event()
    alive: list[bool] = []

    def work() -> None:
        payload = Payload()
        ref = weakref.ref(payload)
        ready.set()
        dropped.wait(30)
        del payload
        alive.append(ref() is not None)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    assert ready.wait(10)
    for _ in range(3_000):
        Cycle()
    verdict = check("Cycle")
    dropped.set()
    assert done.wait(10)
    worker.join()
    assert not verdict.reachable_enough
    assert alive == [False]


def test_what_only_the_checking_thread_holds_is_not_reachable(no_automatic_collection):
    # Our own frame holds them, as the profiler thread's frames hold its sample: not a root.
    held = [Cycle() for _ in range(2_000)]
    verdict = check("Cycle")
    assert verdict.reachable == 0, verdict.path
    assert len(held) == 2_000


def test_what_the_monitor_itself_holds_is_not_reachable(monkeypatch):
    monkeypatch.setattr(census_module, "_held_for_test", [Thing() for _ in range(2_000)],
                        raising=False)
    verdict = check("Thing")
    assert verdict.sampled > 0 and verdict.reachable == 0, verdict.path


def test_a_check_runs_no_application_code(tmp_path, monkeypatch):
    # GIVEN a lazily imported module (it loads at its first attribute access) and a namespace
    # dict whose own methods are the application's code
    import importlib.util

    marker = tmp_path / "loaded"
    (tmp_path / "lazy_for_test.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.find_spec("lazy_for_test")
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "lazy_for_test", module)
    spec.loader.exec_module(module)

    class Noisy(dict):
        def get(self, *args: object) -> object:
            raise AssertionError("the application's dict method ran")

        def items(self):  # type: ignore[override]
            raise AssertionError("the application's dict method ran")

    holder = Noisy(things=[Thing() for _ in range(2_000)])
    # WHEN classes are checked and resolved
    verdict = check("Thing")
    resolve("lazy_for_test.Anything")
    # THEN the module is still not loaded, and nothing raised
    assert not marker.exists()
    assert verdict.sampled > 0
    del holder


# ------------------------------------------------------------------- bounds


class Link:
    def __init__(self, inner: object) -> None:
        self.inner = inner


def test_a_search_stops_at_its_limits_and_then_proves_nothing():
    deep: list[object] = [Link(None) for _ in range(100)]
    for _ in range(30):  # each of them 30 links below a module global
        deep = [Link(obj) for obj in deep]
    Registry.deep = deep  # type: ignore[attr-defined]
    try:
        few_calls = check("Link", per_census=3_000, limits=Limits(calls=3))
        few_objects = check("Link", per_census=3_000, limits=Limits(visited=40))
        no_time = ReachabilityCheck(Limits(), clock=iter(range(0, 1_000, 10)).__next__).check(
            f"{HERE}.Link", 3_000
        )
        enough = check("Link", per_census=3_000, limits=Limits(calls=100, seconds=60))
    finally:
        del Registry.deep  # type: ignore[attr-defined]
    assert few_calls.calls == 3 and not few_calls.exhausted and not few_calls.reachable_enough
    assert few_objects.visited <= 40 + 64 and not few_objects.reachable_enough
    assert no_time.calls == 0 and not no_time.reachable_enough
    assert enough.reachable_enough and enough.path[:2] == (
        f"class {HERE}.Registry", f"list {HERE}.Registry.deep"
    )


# ------------------------------------------------------------------- the detector and the profiler


def test_a_confirming_detector_offers_candidates_until_confirmed():
    detector = LeakDetector(snapshots=2, confirm=True)
    assert detector.observe_counts({"app.A": 1_000}) == []
    assert detector.observe_counts({"app.A": 5_000}) == []
    [candidate] = detector.observe_counts({"app.A": 9_000})
    assert detector.suspects() == []  # not yet: its growth may be garbage
    [again] = detector.observe_counts({"app.A": 13_000})
    assert again.name == candidate.name
    path = ("module app", "dict app.cache", "app.A")
    assert detector.confirm("app.A", path) == LeakSuspect("app.A", 3, 1_000, 13_000, path)
    assert detector.suspects()[0].path == path
    assert detector.observe_counts({"app.A": 17_000}) == []  # reported once
    assert describe(detector.suspects()[0]).endswith(
        "(+16,000); held by: module app -> dict app.cache -> app.A"
    )


def test_a_class_absent_from_the_previous_census_grew_from_zero():
    detector = LeakDetector(snapshots=3)
    detector.observe_counts({"other": 5})  # the baseline: the class has no instance yet
    found = [s for n in (2_000, 4_000, 6_000) for s in detector.observe_counts({"app.New": n})]
    assert found == [LeakSuspect("app.New", 3, 0, 6_000)]


class Leaked:
    pass


_kept: list[Leaked] = []


def profiler_with(exporter_logs: list) -> Profiler:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    exporter_logs.append(exporter)
    config = config_from_dict(
        {"general": {"monitoring": {"memory_profiling": {"enabled": True, "leak_snapshots": 3}}}}
    )
    return Profiler(config, interval=0.05, logger_provider=provider)


def test_without_any_collection_a_reachable_leak_is_named_with_its_path_and_garbage_is_not(
    no_automatic_collection, caplog
):
    # GIVEN a host whose collector never runs: no census follows a full collection
    exporters: list = []
    profiler = profiler_with(exporters)
    full_before = gc.get_stats()[2]["collections"]
    try:
        with caplog.at_level("WARNING", logger="memory_profiler"):
            for _ in range(5):
                _kept.extend(Leaked() for _ in range(3_000))  # the leak
                for _ in range(3_000):
                    Cycle()  # garbage piling up beside it
                profiler.snapshot()
    finally:
        _kept.clear()
    # THEN the leak is named at the census of its third growth, the garbage never
    assert gc.get_stats()[2]["collections"] == full_before
    assert profiler.stats.trend_censuses == 0 and profiler.stats.checks >= 2
    [suspect] = profiler.suspects()
    assert suspect.name == f"{HERE}.Leaked" and suspect.streak == 4  # grew once more since
    assert suspect.path == (f"module {HERE}", f"list {HERE}._kept", f"{HERE}.Leaked")
    [warning] = [r.getMessage() for r in caplog.records if r.name == "memory_profiler"]
    assert " grew in 3 consecutive snapshots: 3,000 -> 12,000 " in warning
    assert warning.endswith(f"held by: module {HERE} -> list {HERE}._kept -> {HERE}.Leaked")
    [record] = [r.log_record for r in exporters[0].get_finished_logs()]
    assert record.event_name == LEAK_EVENT_NAME
    assert list(record.attributes[ATTR_LEAK_PATH]) == list(suspect.path)


JUNK = [type(f"Junk{i}", (Cycle,), {"__module__": HERE}) for i in range(6)]


def test_a_census_is_followed_by_four_checks_at_most(no_automatic_collection):
    # GIVEN six classes whose growth is garbage, all candidates at the same census
    profiler = profiler_with([])
    for _ in range(4):
        for kind in JUNK:
            for _ in range(2_000):
                kind()
        profiler.snapshot()
    # THEN the four largest were checked (and found garbage), the others wait a census
    assert profiler.stats.checks == CHECKS_PER_CENSUS == 4
    assert profiler.suspects() == []


def test_the_suspects_gauge_counts_a_leak_named_without_a_collection(no_automatic_collection):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_memory.sinks import gauges
    from otel_memory.testing import FakeReadingSource

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    profiler = profiler_with([])
    handle = gauges.install_metrics(
        config_from_dict({"general": {"monitoring": {"memory_profiling": {"enabled": True}}}}),
        meter_provider=provider,
        reading_source=FakeReadingSource(),
        profiler=profiler,
    )
    try:
        for _ in range(4):
            _kept.extend(Leaked() for _ in range(3_000))
            profiler.snapshot()
        data = reader.get_metrics_data()
    finally:
        _kept.clear()
        handle.close()
        provider.shutdown()
    assert profiler.stats.trend_censuses == 0  # no full collection: only the reachable trend
    values = {
        metric.name: [point.value for point in metric.data.data_points]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert values[gauges.PYTHON_HEAP_LEAK_SUSPECTS] == [1]


# ------------------------------------------------------------------- a real process, every kind

SERVICE = textwrap.dedent(
    """
    import functools, gc, json, logging, threading, time
    from otel_memory.base.config import config_from_dict
    from otel_memory.guards.profiler import Profiler

    class ByGlobal: pass
    class ByClass: pass
    class ByCell: pass
    class ByCache: pass
    class ByLocal: pass

    _sessions = {}

    class Pool:
        connections = []

    def _make_remember():
        seen = []
        def remember(item):
            seen.append(item)
        return remember

    remember = _make_remember()

    @functools.lru_cache(maxsize=None)
    def render(key):
        return ByCache()

    stop = threading.Event()
    rounds = threading.Semaphore(0)
    done_rounds = threading.Semaphore(0)

    def consumer():
        backlog = []
        while not stop.is_set():
            if rounds.acquire(timeout=0.1):
                backlog.extend(ByLocal() for _ in range(2_000))
                done_rounds.release()

    worker = threading.Thread(target=consumer, name="consumer")
    worker.start()
    config = config_from_dict({"general": {"monitoring": {"memory_profiling": {"enabled": True}}}})
    profiler = Profiler(config)
    gc.disable()  # no full collection may help
    n = 0
    for _ in range(5):
        for _ in range(2_000):
            _sessions[n] = ByGlobal(); Pool.connections.append(ByClass())
            remember(ByCell()); render(n); n += 1
        rounds.release(); done_rounds.acquire()
        profiler.snapshot()
    stop.set(); worker.join()
    print(json.dumps({s.name: s.path for s in profiler.suspects()}))
    """
)


def test_every_kind_of_leak_is_named_in_a_real_process(tmp_path: Path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    assert paths == {
        "__main__.ByGlobal": ["module __main__", "dict __main__._sessions", "__main__.ByGlobal"],
        "__main__.ByClass": [
            "class __main__.Pool", "list __main__.Pool.connections", "__main__.ByClass"
        ],
        "__main__.ByCell": [
            "module __main__", "function __main__.remember", "list __main__.remember cell seen",
            "__main__.ByCell",
        ],
        "__main__.ByCache": [
            "module __main__", "lru_cache __main__.render", "__main__.ByCache __main__.render cache"
        ],
        "__main__.ByLocal": [
            "thread consumer frame __main__.consumer", "list local backlog", "__main__.ByLocal"
        ],
    }, result.stderr
    assert time.monotonic() - started < 120


def test_a_module_also_known_by_an_alias_keeps_its_first_name(monkeypatch):
    # multiprocessing's children alias the main module as __mp_main__: the path says __main__.
    import sys

    monkeypatch.setitem(sys.modules, "zz_alias_of_this_module", sys.modules[HERE])
    _cache.update((i, [InGlobal()]) for i in range(2_000))
    try:
        verdict = check("InGlobal")
    finally:
        _cache.clear()
    assert verdict.path[0] == f"module {HERE}"
