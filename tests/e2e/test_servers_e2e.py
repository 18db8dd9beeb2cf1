"""The server examples as users run them: ``opentelemetry-instrument gunicorn -w 2`` (Flask) and
``opentelemetry-instrument uvicorn`` (FastAPI), a bounded local load, every span into a real OTLP
receiver: no request span without its memory, exemplars that link to request spans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from http_helpers import free_port
from otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MEMORY_KEYS = {
    "memory.rss.start", "memory.rss.end", "memory.rss.delta", "memory.rss.peak",
    "memory.task.overlap",
}  # fmt: skip
SERVER = 2  # OTLP Span.SpanKind SPAN_KIND_SERVER
REQUESTS = int(os.environ.get("OTEL_MEMORY_E2E_REQUESTS", "200"))
JOBS = int(os.environ.get("OTEL_MEMORY_E2E_JOBS", "20"))
"""Celery jobs in the prefork test (the issue's goal: 1,000)."""
"""Requests per server run; the goal (issue 17) was measured with 1,000."""
IN_FLIGHT = 16



def _env(receiver: OTLPReceiver, log_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="servers-e2e",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint("grpc"),
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(log_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def serving(command: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends, then stop it as its operator would (SIGTERM).

    Its output goes to a temporary file, not a pipe: nobody reads a pipe while the load runs,
    and a server whose pipe is full stops answering."""
    with tempfile.TemporaryFile("w+") as output:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, text=True
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    assert server.poll() is None, _read(output)
                    assert time.monotonic() < deadline, "server did not listen"
                    time.sleep(0.1)
            yield server
        finally:
            _stop(server, lambda: _read(output))


def _read(output: IO[str]) -> str:
    output.seek(0)
    return output.read()


def _stop(process: subprocess.Popen, output: Callable[[], str]) -> None:
    """Stop ``process`` as its operator would (SIGTERM; killed after 30 s); show its output."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    print(output()[-3000:])


def load(port: int, paths: list[str]) -> list[int]:
    """GET each path from 127.0.0.1:port with IN_FLIGHT requests at once; the statuses."""

    def get(path: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            response.read()
            return response.status

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        return list(pool.map(get, paths))


def wait_for_server_spans(receiver: OTLPReceiver, expected: int) -> list:
    deadline = time.monotonic() + 20
    while True:
        spans = [s for s in receiver.spans() if s.kind == SERVER]
        if len(spans) >= expected or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def instances(receiver: OTLPReceiver) -> set[str]:
    """The ``service.instance.id`` of every process whose memory gauges arrived (a loaded
    machine may delay a process's first export past a metric period or two: wait for it)."""
    return {
        point.resource.get("service.instance.id")
        for point in receiver.data_points("otel_memory.available")
    }


def check_request_spans(receiver: OTLPReceiver, expected: int, spike_route: str) -> None:
    spans = wait_for_server_spans(receiver, expected)
    missing = [s.name for s in spans if not set(s.attributes) >= MEMORY_KEYS]
    print(f"{len(spans)} request spans received, {len(missing)} missing memory attributes")
    assert len(spans) == expected
    assert missing == []
    workers = {s.resource.get("service.instance.id") for s in spans}
    (spike,) = [s for s in spans if s.name == spike_route]
    assert spike.attributes["memory.rss.peak"] - spike.attributes["memory.rss.start"] >= 100 << 20
    # The growth histogram's exemplars point at request spans that arrived.
    deadline = time.monotonic() + 10
    by_id = {s.span_id: s for s in spans}
    while True:
        linked = [
            (attributes, by_id.get(span_id))
            for attributes, _, span_id in receiver.histogram_exemplars(
                "otel_memory.request.rss.growth"
            )
        ]
        if any(span is not None for _, span in linked) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert linked and all(
        span is not None and attributes["otel_memory.span.name"] == span.name
        for attributes, span in linked
    )
    print(f"served by {len(workers)} worker(s) (service.instance.id)")


@pytest.mark.parametrize(
    "options",
    [(), ("--preload",), ("--worker-class", "gthread", "--threads", "4"),
     ("--worker-class", "gthread", "--threads", "4", "--preload")],
    ids=["sync", "sync-preload", "gthread", "gthread-preload"],
)  # fmt: skip
def test_flask_on_gunicorn_two_workers(tmp_path, options):
    port = free_port()
    command = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "gunicorn"),
        "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", "examples", *options, "flask_app:app",
    ]  # fmt: skip
    with OTLPReceiver() as receiver, serving(command, port, _env(receiver, tmp_path)):
        paths = [f"/items/{i}" for i in range(REQUESTS)]
        assert set(load(port, paths)) == {200}
        assert load(port, ["/report?mb=150"]) == [200]
        time.sleep(1.5)  # a few batch and metric export periods
        check_request_spans(receiver, REQUESTS + 1, "GET /report")
        # Each worker's series are its own: the SDK gives a forked worker a new
        # service.instance.id, so a backend keeps the master's and both workers' apart.
        receiver.wait_for(lambda: len(instances(receiver)) >= 3, timeout=20)
        assert len(instances(receiver)) >= 3, instances(receiver)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_fastapi_on_uvicorn(tmp_path, workers):
    port = free_port()
    command = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"),
        "--app-dir", "examples", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    with OTLPReceiver() as receiver, serving(command, port, _env(receiver, tmp_path)):
        paths = [f"/items/{i}" for i in range(REQUESTS)]
        assert set(load(port, paths)) == {200}
        assert load(port, ["/report?mb=150"]) == [200]
        time.sleep(1.5)
        check_request_spans(receiver, REQUESTS + 1, "GET /report")
        if workers > 1:  # each spawned worker runs its own monitor, under its own identity
            served_by = {
                s.resource.get("service.instance.id")
                for s in receiver.spans()
                if s.kind == SERVER
            }
            receiver.wait_for(lambda: served_by <= instances(receiver), timeout=20)
            assert len(served_by) == workers, served_by
            assert served_by <= instances(receiver)


def test_celery_prefork_worker(tmp_path):
    env = _env_for_celery(tmp_path)
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "celery"),
        "--workdir", "examples", "-A", "celery_worker", "worker", "-c", "2", "-l", "info",
    ]  # fmt: skip
    with OTLPReceiver() as receiver:
        env.update(_env(receiver, tmp_path / "logs"))
        # A file, not a pipe: at -l info the worker logs two lines a job, and a pipe nobody
        # reads until the end fills up (64 kB) and blocks the worker.
        log = tmp_path / "worker.log"
        with log.open("w") as out:
            worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            producer_env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
            producer_env["OTEL_MEMORY_EXAMPLE_BROKER_DIR"] = env["OTEL_MEMORY_EXAMPLE_BROKER_DIR"]
            sent = subprocess.run(
                [sys.executable, "examples/celery_worker.py", "--jobs", str(JOBS), "--timeout", "300"],
                cwd=ROOT, env=producer_env, capture_output=True, text=True, timeout=360,
                check=False,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            assert f"{JOBS + 1} jobs done; dump held 150 MB" in sent.stdout
            time.sleep(1.5)
        finally:
            _stop(worker, log.read_text)
        spans = [s for s in receiver.spans() if s.name.startswith("run/")]
        print(f"{len(spans)} job spans received")
        missing = [s.name for s in spans if not set(s.attributes) >= MEMORY_KEYS]
        print(f"{len(missing)} job spans missing memory attributes")
        assert len(spans) == JOBS + 1
        assert missing == []
        (dump,) = [s for s in spans if s.name == "run/nations.dump"]
        assert dump.attributes["memory.rss.peak"] - dump.attributes["memory.rss.start"] >= 100 << 20


def _env_for_celery(tmp_path: Path) -> dict[str, str]:
    broker = tmp_path / "broker"
    return {"OTEL_MEMORY_EXAMPLE_BROKER_DIR": str(broker)}
