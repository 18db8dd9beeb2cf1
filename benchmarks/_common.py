"""Shared by the benchmarks: providers as ``opentelemetry-instrument`` sets them, workers, heaps.

Every measurement runs in a fresh worker process (``python <script> --worker '<json>'``): the
global OpenTelemetry providers can be set only once per process, and a fresh process gives every
contender the same heap and the same import state. The parent interleaves the contenders round
by round, so a change in machine load hits them all alike, and reports medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk import _logs as sdk_logs
from opentelemetry.sdk._logs import export as sdk_logs_export
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

# The SDK renamed LogExporter to LogRecordExporter (1.39); the oldest supported SDK is 1.38.
_LogExporterBase: Any = getattr(
    sdk_logs_export, "LogRecordExporter", getattr(sdk_logs_export, "LogExporter", object)
)
_LOG_SUCCESS: Any = getattr(
    sdk_logs_export, "LogRecordExportResult", getattr(sdk_logs_export, "LogExportResult", None)
).SUCCESS


class DropSpans(SpanExporter):
    """An exporter that drops everything: the processor's work is measured, the network's not."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DropLogs(_LogExporterBase):  # type: ignore[misc]
    """Drops log records (see :class:`DropSpans`)."""

    def export(self, batch: Sequence[Any]) -> Any:
        return _LOG_SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class DropMetrics(MetricExporter):
    """Drops metrics (see :class:`DropSpans`)."""

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@dataclass
class Providers:
    """The global SDK providers of one worker process."""

    tracer: TracerProvider
    meter: MeterProvider
    logger: Any  # sdk LoggerProvider, or None when the setup has none

    def flush(self) -> None:
        """Export what the batch processors still hold (their worker threads' CPU is counted)."""
        self.tracer.force_flush()
        if self.logger is not None:
            self.logger.force_flush()


def install_providers(*, logs: bool, metric_interval_ms: float = 60_000) -> Providers:
    """Global tracer, meter and (optionally) logger providers; exporters that drop.

    This is what ``opentelemetry-instrument`` installs, minus the network: a
    ``BatchSpanProcessor``, a ``PeriodicExportingMetricReader`` (60 s by default) and a
    ``BatchLogRecordProcessor``.
    """
    tracer = TracerProvider()
    tracer.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(tracer)
    reader = PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=metric_interval_ms)
    meter = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter)
    logger = None
    if logs:
        logger = sdk_logs.LoggerProvider()
        logger.add_log_record_processor(sdk_logs_export.BatchLogRecordProcessor(DropLogs()))
        _logs.set_logger_provider(logger)
    return Providers(tracer, meter, logger)


def write_config(directory: str, profiling: Mapping[str, Any], monitor: Mapping[str, Any]) -> str:
    """A YAML config file for ``otel_memory.start(path)`` (the public way to configure it)."""
    data = {"general": {"monitoring": {"memory_profiling": dict(profiling),
                                       "memory_monitor": dict(monitor)}}}
    fd, path = tempfile.mkstemp(suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(data, out)
    return path


def export_logs_values() -> tuple[str, str | bool]:
    """The ``export_logs`` values that mean "events" and "all" in the installed version.

    v0.2 has ``events | all | none``; v0.1 had a boolean, where ``true`` exported every line
    (today's ``all``) and there was no ``events``: then ``("", True)``.
    """
    import otel_memory  # the workers import it late, after the providers are set

    with tempfile.TemporaryDirectory() as tmp:
        try:
            otel_memory.load_config(write_config(tmp, {}, {"export_logs": "events"}))
        except otel_memory.ConfigError:
            return "", True
    return "events", "all"


def run_worker(
    script: str, spec: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script --worker <spec>`` in a fresh interpreter (``env`` added to the environment);
    its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(spec)],
        capture_output=True, text=True, check=False,
        env={**os.environ, **env} if env else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(
    rounds: int, contenders: Sequence[str], measure: Callable[[str], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """``measure(name)`` for every contender, round after round; results per contender."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name in contenders:
            results[name].append(measure(name))
    return results


class Message:
    """A plain instance with a dict-free layout in 3.11+ and a list attribute."""

    def __init__(self, i: int) -> None:
        self.id = i
        self.content = f"message {i}"
        self.embeds: list[int] = []


class Member:
    """A ``__slots__`` instance with a list attribute."""

    __slots__ = ("name", "roles")

    def __init__(self, i: int) -> None:
        self.name = f"member {i}"
        self.roles = [i, i + 1]


def build_heap(tracked: int) -> list[Any]:
    """About ``tracked`` new GC-tracked objects (instances, dicts, lists, tuples), kept alive."""
    heap: list[Any] = []
    per_kind = tracked // 7 + 1  # 2 + 2 + 3 tracked objects per step
    heap.extend(Message(i) for i in range(per_kind))  # the instance + its list
    heap.extend(Member(i) for i in range(per_kind))  # the instance + its list
    heap.extend({"id": i, "tags": (i, [i])} for i in range(per_kind))  # dict + tuple + list
    return heap


def python_line() -> str:
    """Interpreter, machine and load, for the top of every table."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
            f"load average {load:.2f} at the start")
