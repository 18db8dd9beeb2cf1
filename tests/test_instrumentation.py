"""The ``memory`` instrumentor: entry point, start/stop, never raising, and the opt-out switch."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts
from opentelemetry.util._importlib_metadata import entry_points

from otel_memory import api as monitor
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import Marker, parse_line
from otel_memory.instrumentation import MemoryInstrumentor
from otel_memory.runtime.monitor import STARTED, STOPPED

ROOT = Path(__file__).resolve().parent.parent
OPENTELEMETRY_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

APP = """
from otel_memory import traced_task

@traced_task("Tiny Job")
def job():
    return sum(range(1000))

job()
print("app done")
"""


@pytest.fixture
def instrumentor() -> Iterator[MemoryInstrumentor]:
    """The (singleton) instrumentor, uninstrumented again after the test."""
    instance = MemoryInstrumentor()
    yield instance
    if instance.is_instrumented_by_opentelemetry:
        instance.uninstrument()
    monitor.stop()


def _monitor_config(log_dir: str):
    return config_from_dict({"general": {"monitoring": {"memory_monitor": {"log_dir": log_dir}}}})


def _lines(log_dir: Path):
    return [parse_line(line) for path in log_dir.glob("memory_*.log") for line in path.open()]


def test_registered_as_the_memory_entry_point():
    [entry_point] = entry_points(group="opentelemetry_instrumentor", name="memory")
    assert entry_point.load() is MemoryInstrumentor
    assert MemoryInstrumentor().instrumentation_dependencies() == ("psutil >= 5.9",)
    # opentelemetry-instrument checks the distribution's "instruments" extra before loading.
    assert get_dist_dependency_conflicts(entry_point.dist) is None


def test_instrument_starts_and_uninstrument_stops_the_monitor(instrumentor, tmp_path):
    config = _monitor_config(str(tmp_path))

    instrumentor.instrument(config=config)
    assert monitor.is_running()
    assert monitor.current_config() is config
    instrumentor.uninstrument()

    assert not monitor.is_running()
    names = [line.name for line in _lines(tmp_path)]
    assert names == [STARTED, STOPPED]


def test_yaml_path_given_as_config(instrumentor, tmp_path):
    log_dir = tmp_path / "logs"
    path = tmp_path / "memory.yaml"
    path.write_text(f"general:\n  monitoring:\n    memory_monitor:\n      log_dir: {log_dir}\n")

    instrumentor.instrument(config=str(path))

    assert monitor.current_config().monitor.log_dir == str(log_dir)
    monitor.flush()  # lines are written by the monitor's own thread
    assert [line.name for line in _lines(log_dir)] == [STARTED]


def test_bad_configuration_is_logged_not_raised(instrumentor, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS", "5")
    caplog.set_level(logging.ERROR, logger="otel_memory")

    instrumentor.instrument()

    assert not monitor.is_running()
    [record] = [r for r in caplog.records if r.name == "otel_memory"]
    assert record.levelno == logging.ERROR
    assert "bad configuration" in record.getMessage()
    message = record.getMessage()
    assert "memory_profiling.interval_seconds" in message
    assert "OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS) must be >= 10, got 5" in message


def test_given_providers_receive_spans_metrics_and_records(instrumentor, tmp_path):
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_memory import traced_task

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))

    instrumentor.instrument(
        config=_monitor_config(str(tmp_path / "logs")),
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        logger_provider=logger_provider,
    )
    with traced_task("On Given Providers"):
        pass
    monitor.flush()

    assert [s.name for s in spans.get_finished_spans()] == ["On Given Providers"]
    names = {
        m.name
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert "otel_memory.limit" in names and "otel_memory.task.rss.growth" in names
    bodies = [r.log_record.body for r in logs.get_finished_logs()]
    assert any(STARTED in str(body) for body in bodies)


def test_otel_sdk_disabled_makes_it_a_no_op(instrumentor, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")

    instrumentor.instrument(config=_monitor_config(str(tmp_path / "logs")))

    assert not monitor.is_running()
    assert not (tmp_path / "logs").exists()


def test_unexpected_error_is_logged_not_raised(instrumentor, caplog):
    caplog.set_level(logging.ERROR, logger="otel_memory")

    instrumentor.instrument(config=42)  # neither a Config nor a path

    assert not monitor.is_running()
    [record] = [r for r in caplog.records if r.name == "otel_memory"]
    assert "not started, unexpected error" in record.getMessage()
    assert record.exc_info is not None


def _run_instrumented(tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(tmp_path / "logs"),
        **extra_env,
    )
    return subprocess.run(
        [str(OPENTELEMETRY_INSTRUMENT), sys.executable, str(app)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.e2e
def test_opentelemetry_instrument_loads_it(tmp_path):
    result = _run_instrumented(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "app done" in result.stdout
    lines = _lines(tmp_path / "logs")
    assert [(line.marker, line.name) for line in lines] == [
        (Marker.CHECK, STARTED),
        (Marker.START, "Tiny Job"),
        (Marker.END, "Tiny Job"),
        (Marker.CHECK, STOPPED),
    ]


@pytest.mark.e2e
def test_disabled_instrumentations_memory_turns_it_off(tmp_path):
    result = _run_instrumented(tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="memory")

    assert result.returncode == 0, result.stderr
    assert "app done" in result.stdout
    assert not (tmp_path / "logs").exists()


@pytest.mark.e2e
def test_bad_configuration_leaves_the_app_running(tmp_path):
    result = _run_instrumented(tmp_path, OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS="often")

    assert result.returncode == 0, result.stderr
    assert "app done" in result.stdout
    assert "memory monitoring not started, bad configuration" in result.stderr
    assert "OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS" in result.stderr
    assert not (tmp_path / "logs").exists()


@pytest.mark.e2e
def test_otel_sdk_disabled_under_opentelemetry_instrument(tmp_path):
    result = _run_instrumented(tmp_path, OTEL_SDK_DISABLED="true")

    assert result.returncode == 0, result.stderr
    assert "app done" in result.stdout
    assert not (tmp_path / "logs").exists()
