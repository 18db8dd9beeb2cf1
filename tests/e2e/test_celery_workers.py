"""Celery prefork (SPEC v0.3, Servers and workers): the pool's children are forked from the
main worker process, each with its own run state; children the pool stops at a warm shutdown
(billiard ends them with os._exit) are not reported as dead by the next start. Real Celery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from otel_memory.base.logline import Marker, parse_line

pytest.importorskip("celery")
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run_worker_and_jobs(tmp_path: Path, log_dir: Path, jobs: int) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_MEMORY_EXAMPLE_BROKER_DIR=str(tmp_path / "broker"),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(log_dir),
    )
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "celery"),
        "--workdir", "examples", "-A", "celery_worker", "worker", "-c", "2", "-l", "warning",
    ]  # fmt: skip
    # The worker's output goes to a file: a pipe nobody reads while the jobs run would stop the
    # worker once its buffer is full (its warnings under a loaded machine), and the jobs time out.
    output_path = tmp_path / f"worker-{jobs}.out"
    with output_path.open("w") as output_file:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output_file, stderr=subprocess.STDOUT, text=True
        )
    try:
        producer_env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        producer_env["OTEL_MEMORY_EXAMPLE_BROKER_DIR"] = env["OTEL_MEMORY_EXAMPLE_BROKER_DIR"]
        sent = subprocess.run(
            [sys.executable, "examples/celery_worker.py", "--jobs", str(jobs), "--timeout", "60"],
            cwd=ROOT, env=producer_env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, (sent.stderr, output_path.read_text())
        children = sorted((log_dir / ".otel-memory").glob("run-*.json"))
        # the main process and its 2 pool children
        assert len(children) == 3, (children, output_path.read_text())
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        worker.wait(timeout=60)
    return output_path.read_text()


def test_pool_children_stopped_at_a_warm_shutdown_are_never_reported(tmp_path):
    log_dir = tmp_path / "logs"
    _run_worker_and_jobs(tmp_path, log_dir, 4)
    assert not list((log_dir / ".otel-memory").glob("run-*.json"))
    _run_worker_and_jobs(tmp_path, log_dir, 2)  # the next start finds nobody dead
    died = [
        text
        for f in sorted(log_dir.glob("memory_*.log"))
        for text in f.read_text().splitlines()
        if (p := parse_line(text)) is not None
        and p.marker is Marker.CHECK
        and p.name.startswith("Previous Run Died")
    ]
    assert died == []
