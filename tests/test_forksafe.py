"""A process forked while its parent's SDK collects metrics can still collect its own
(opentelemetry-python issue #4345): real SDK, real threads, real ``os.fork()``.

Every child exits through ``os._exit`` with 0 for success; the parent kills a child that has not
exited in time, so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from opentelemetry.metrics import NoOpMeterProvider, Observation
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_memory
from otel_memory.base.config import config_from_dict
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.sinks import forksafe
from otel_memory.sinks.forksafe import collection_locks, hold_collections_across_fork
from otel_memory.sinks.gauges import install_metrics

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

HUNG = None


class BlockingGauge:
    """An observable callback whose first call in the parent blocks until released."""

    def __init__(self) -> None:
        self.parent = os.getpid()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, options):
        if os.getpid() == self.parent and not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        yield Observation(1)


class LatestReader(MetricReader):
    """Keeps the last collection without a lock of its own, as the Prometheus reader does.

    ``InMemoryMetricReader`` holds its own lock through a whole collection, so a child forked
    while a collection is stuck would wait on the test's reader rather than on the SDK.
    """

    def __init__(self) -> None:
        super().__init__()
        self.data = None

    def _receive_metrics(self, metrics_data, timeout_millis=10_000, **kwargs) -> None:
        self.data = metrics_data

    def shutdown(self, timeout_millis=30_000, **kwargs) -> None:
        pass

    def get_metrics_data(self):
        self.collect()
        data, self.data = self.data, None
        return data


def sdk(gauge: Callable | None = None, reader=None) -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = reader or InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    if gauge is not None:
        provider.get_meter("test").create_observable_gauge("test.gauge", [gauge])
    return provider, reader


def collects(reader: InMemoryMetricReader) -> bool:
    data = reader.get_metrics_data()
    return data is not None and bool(data.resource_metrics)


def wait_child(pid: int, timeout: float) -> int | None:
    """The child's exit code, or ``HUNG`` (it was killed) when it ran past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return HUNG


def fork_and_run(child: Callable[[], bool], timeout: float = 5.0) -> tuple[int | None, float]:
    """Fork; the child runs ``child`` and exits 0 if it returned true. Returns the child's exit
    code (``HUNG`` if killed) and how long ``os.fork()`` took in the parent."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if child() else 1
        finally:
            os._exit(code)
    forked = time.monotonic() - start
    return wait_child(pid, timeout), forked


@pytest.fixture
def collecting():
    """A provider whose collection is in progress on a background thread, blocked in a callback."""
    started: list[tuple[BlockingGauge, threading.Thread]] = []

    def start(protected: bool, wait: float = forksafe.FORK_WAIT_SECONDS, reader=None):
        gauge = BlockingGauge()
        provider, reader = sdk(gauge, reader)
        if protected:
            assert hold_collections_across_fork(provider, wait)
        thread = threading.Thread(target=reader.get_metrics_data, daemon=True)
        thread.start()
        assert gauge.entered.wait(5)
        started.append((gauge, thread))
        return provider, reader, gauge

    yield start
    for gauge, thread in started:
        gauge.release.set()
        thread.join(10)


def test_a_child_forked_during_a_collection_collects(collecting):
    # GIVEN a collection running in a callback for another 0.5 s
    _, reader, gauge = collecting(protected=True)
    threading.Timer(0.5, gauge.release.set).start()
    # WHEN the main thread forks
    code, forked = fork_and_run(lambda: collects(reader))
    # THEN the fork waited for the collection (it returned only after the callback was released,
    # well within the bound), and the child collects
    assert code == 0
    assert gauge.release.is_set()
    assert forked < forksafe.FORK_WAIT_SECONDS
    assert collects(reader)


def test_without_it_the_child_hangs_so_the_sdk_still_needs_it(collecting):
    _, reader, _ = collecting(protected=False)
    code, forked = fork_and_run(lambda: collects(reader), timeout=3)
    assert forked < 1.5  # nothing waited (bounds here are loose: a loaded machine forks slowly)
    assert code is HUNG, (
        "the SDK renews its collection lock after a fork now (opentelemetry-python #4345): "
        "otel_memory.sinks.forksafe can go"
    )


def test_a_collection_stuck_past_the_bound_delays_the_fork_by_the_bound_only(collecting, caplog):
    # GIVEN a callback that blocks far longer than the 0.5 s bound
    _, reader, gauge = collecting(protected=True, wait=0.5, reader=LatestReader())
    caplog.set_level(logging.WARNING, logger="otel_memory")
    # WHEN the main thread forks
    code, forked = fork_and_run(lambda: collects(reader))
    # THEN the fork took about the bound, the child collects with a new lock
    assert code == 0
    assert 0.45 < forked < 5  # the callback blocks for 30 s
    assert "still running 0.5 s after a fork began" in caplog.text
    # AND the parent's collection, once it ends, left the lock free
    gauge.release.set()
    assert collects(reader)


class SlowChannel:
    """An exporter's network: its first export in the parent takes ``seconds`` (a slow network)
    while it holds a lock of its own, as the OTLP gRPC exporter's channel does around each call;
    every export takes that lock."""

    def __init__(self, seconds: float) -> None:
        self.parent = os.getpid()
        self.seconds = seconds
        self.channel = threading.Lock()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def send(self, count: int) -> None:
        with self.channel:
            if os.getpid() == self.parent and not self.entered.is_set():
                self.entered.set()
                self.release.wait(self.seconds)
            self.exported += count


class BlockingExporter(MetricExporter, SlowChannel):
    """A metric exporter over a :class:`SlowChannel`."""

    def __init__(self, seconds: float) -> None:
        MetricExporter.__init__(self)
        SlowChannel.__init__(self, seconds)

    def export(self, metrics_data, timeout_millis=10_000, **kwargs) -> MetricExportResult:
        self.send(1)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000) -> bool:
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs) -> None:
        pass


@contextmanager
def exporting(seconds: float, protected: bool, wait: float = forksafe.FORK_WAIT_SECONDS):
    """A periodic reader's export in progress on its thread (it holds the reader's export lock
    and the exporter's own), for ``seconds`` at most; forks wait ``wait`` at most."""
    exporter = BlockingExporter(seconds)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider, _ = sdk(lambda options: [Observation(1)], reader)
    if protected:
        assert hold_collections_across_fork(provider, wait)
    thread = threading.Thread(target=reader.collect)
    thread.start()
    try:
        assert exporter.entered.wait(5)
        yield reader, exporter
    finally:
        exporter.release.set()
        thread.join(10)
        provider.shutdown()


@pytest.mark.parametrize("protected", [True, False])
def test_a_child_forked_during_an_export_exports(protected):
    # GIVEN an export in progress that ends within the bound (0.5 s)
    with exporting(0.5, protected) as (reader, exporter):
        # WHEN the main thread forks
        def child_exports() -> bool:
            before = exporter.exported
            reader.collect()
            return exporter.exported == before + 1

        code, forked = fork_and_run(child_exports, timeout=5)
    # THEN the fork waited for the export, and the child, whose exporter's own lock is free,
    # exports; without the hold, it inherits that lock held and its exports block forever
    if protected:
        assert 0.2 < forked < 1.9
        assert code == 0
    else:
        assert code == HUNG


def test_an_export_stuck_past_the_bound_delays_the_fork_by_the_bound_only(caplog, monkeypatch):
    monkeypatch.setattr(forksafe, "_warn", WarnOnce(logging.getLogger("otel_memory")))
    # GIVEN an export that does not end (a collector that does not answer), a 0.5 s bound
    # WHEN the main thread forks
    with exporting(30, True, 0.5), caplog.at_level(logging.WARNING, logger="otel_memory"):
        code, forked = fork_and_run(lambda: True, timeout=5)
        # AND the forks after it, while that export is still stuck, do not wait again
        again = [fork_and_run(lambda: True, timeout=5) for _ in range(3)]
    # THEN the fork went on after the bound, and said why once
    assert 0.45 < forked < 5
    assert code == 0
    assert "export was still running 0.5 s after a fork began" in caplog.text
    assert [code for code, _ in again] == [0, 0, 0]
    assert sum(seconds for _, seconds in again) < 0.45


def test_a_callback_that_forks_does_not_wait_for_its_own_collection():
    forks: dict[str, float | int | bool] = {}
    parent = os.getpid()

    def forking(options):
        if os.getpid() == parent and not forks:
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:
                forks["child"] = True
            else:
                forks.update(pid=pid, seconds=time.monotonic() - start)
        yield Observation(1)

    provider, reader = sdk(forking)
    assert hold_collections_across_fork(provider)
    try:
        assert collects(reader)
    finally:
        if forks.get("child"):
            # The child finished the collection it was forked in; it can collect again.
            os._exit(0 if collects(reader) else 1)
    assert wait_child(int(forks["pid"]), 5) == 0
    assert forks["seconds"] < 1.5 < forksafe.FORK_WAIT_SECONDS


def test_each_provider_registers_once():
    provider, reader = sdk(lambda options: [Observation(1)])
    assert hold_collections_across_fork(provider)
    assert not hold_collections_across_fork(provider)
    # Registered twice, the second hook would wait the bound for the lock the first one holds.
    code, forked = fork_and_run(lambda: collects(reader))
    assert code == 0
    assert forked < 1.5 < forksafe.FORK_WAIT_SECONDS


def test_no_provider_is_kept_alive():
    provider, _ = sdk(lambda options: [Observation(1)])
    assert hold_collections_across_fork(provider)
    gone = weakref.ref(provider)
    del provider
    gc.collect()
    assert gone() is None
    code, _ = fork_and_run(lambda: True)
    assert code == 0


@pytest.mark.parametrize("provider", [NoOpMeterProvider(), _ProxyMeterProvider()])
def test_a_provider_that_is_not_the_sdks_is_ignored(provider):
    assert collection_locks(provider) == []
    assert not hold_collections_across_fork(provider)


def test_the_sdks_private_collection_locks_are_where_we_look():
    """Fails when an SDK release moves them: then forked workers are unprotected again."""
    periodic = PeriodicExportingMetricReader(BlockingExporter(0), export_interval_millis=3_600_000)
    readers = [InMemoryMetricReader(), periodic]
    provider = MeterProvider(metric_readers=readers, shutdown_on_exit=False)
    locks = collection_locks(provider)
    consumer = provider._measurement_consumer
    storages = consumer._reader_storages
    assert [(held.owner, held.name) for held in locks] == [
        (consumer, "_lock"),
        (storages[readers[0]], "_lock"),
        (storages[periodic], "_lock"),
        (periodic, "_export_lock"),
    ]
    lock, rlock = type(threading.Lock()), type(threading.RLock())
    assert [type(held.current()) for held in locks] == [lock, rlock, rlock, lock]
    assert all(type(held.new()) is type(held.current()) for held in locks)
    provider.shutdown()


def test_install_metrics_holds_its_providers_collections_across_forks():
    provider, _ = sdk()
    config = config_from_dict({"general": {"monitoring": {"memory_profiling": {"enabled": False}}}})
    install_metrics(config, meter_provider=provider).close()
    assert not hold_collections_across_fork(provider)


class ChannelExporter(SpanExporter, LogRecordExporter, SlowChannel):
    """A span or log exporter over a :class:`SlowChannel` whose first export takes 0.5 s."""

    def __init__(self) -> None:
        SlowChannel.__init__(self, 0.5)

    def export(self, batch):
        self.send(len(batch))
        return SpanExportResult.SUCCESS if isinstance(batch[0], ReadableSpan) else (
            LogRecordExportResult.SUCCESS
        )

    def shutdown(self) -> None:
        pass


def _spans(exporter: ChannelExporter):
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=10))
    tracer = provider.get_tracer("test")

    def emit() -> None:
        tracer.start_span("job").end()

    return provider, emit


def _logs(exporter: ChannelExporter):
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=10))
    logger = provider.get_logger("test")

    def emit() -> None:
        logger.emit(body="line")

    return provider, emit


@pytest.mark.parametrize("signal_", ["spans", "logs"])
@pytest.mark.parametrize("protected", [True, False])
def test_a_worker_forked_during_a_span_or_log_export_still_exports(signal_, protected):
    # GIVEN the monitor started with SDK tracer and logger providers whose batch processor is
    # exporting on its thread (the exporter holds its channel's lock)
    exporter = ChannelExporter()
    provider, emit = (_spans if signal_ == "spans" else _logs)(exporter)
    keyword = "tracer_provider" if signal_ == "spans" else "logger_provider"
    config = config_from_dict({"general": {"monitoring": {"memory_monitor": {"enabled": False}}}})
    otel_memory.start(config, **({keyword: provider} if protected else {}))
    try:
        emit()
        assert exporter.entered.wait(5)

        # WHEN the main thread forks, and the child sends its own
        def child_exports() -> bool:
            before = exporter.exported
            emit()
            provider.force_flush(3_000)
            return exporter.exported == before + 1

        code, forked = fork_and_run(child_exports, timeout=5)
    finally:
        otel_memory.stop()
        provider.shutdown()
    # THEN the fork waited for the export, and the child's exporter is free to send; without
    # the hold the child inherits the channel's lock held and never sends
    if protected:
        assert code == 0
        assert forked < 1.9
    else:
        assert code == HUNG


def test_the_sdks_private_batch_export_locks_are_where_we_look():
    """Fails when an SDK release moves them: then a worker forked mid-export sends nothing."""
    for make in (_spans, _logs):
        provider, _ = make(ChannelExporter())
        (held,) = collection_locks(provider)
        assert held.name == "_export_lock" and held.new is None
        assert type(held.current()) is type(threading.Lock())
        provider.shutdown()
    assert collection_locks(TracerProvider()) == [] and collection_locks(LoggerProvider()) == []
    assert hold_collections_across_fork(TracerProvider())  # processors added later are found
