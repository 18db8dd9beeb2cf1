"""Running an example as a subprocess under ``opentelemetry-instrument``, every signal over OTLP.

run = run_instrumented("async_service.py", ["--batches", "2"], endpoint=receiver.endpoint("grpc"),
                       protocol="grpc", log_dir=tmp_path, service_name="demo")
run.result.returncode, run.wall_seconds
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPENTELEMETRY_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
EXPORT_TIMEOUT_SECONDS = 1
"""``OTEL_EXPORTER_OTLP_TIMEOUT`` of every run: how long one export may wait for a receiver."""


@dataclass(frozen=True)
class ExampleRun:
    """A finished example process and how long it took, start to exit."""

    result: subprocess.CompletedProcess[str]
    wall_seconds: float
    log_dir: Path


def run_instrumented(
    script: str,
    args: list[str],
    *,
    endpoint: str,
    protocol: str,
    log_dir: Path,
    service_name: str,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> ExampleRun:
    """Run ``examples/<script>`` under ``opentelemetry-instrument`` against ``endpoint``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=service_name,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT_SECONDS),
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_BLRP_SCHEDULE_DELAY="200",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(log_dir),
        OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS="1",
        OTEL_PYTHON_MEMORY_PROFILING_ENABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    started = time.monotonic()
    result = subprocess.run(
        [str(OPENTELEMETRY_INSTRUMENT), sys.executable, str(ROOT / "examples" / script), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return ExampleRun(result, time.monotonic() - started, log_dir)
