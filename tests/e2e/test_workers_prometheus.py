"""Real Prometheus keeps the series of two gunicorn workers apart (issue 17, deliverable 3).

A Flask app runs under ``opentelemetry-instrument gunicorn -w 2`` with the Prometheus exporter
(``OTEL_METRICS_EXPORTER=prometheus``) and this package's instrumentation, started with the
recipe users are told to deploy, ``examples/gunicorn_prometheus.py`` (docs/workers.md): each
worker serves its own ``/metrics`` on a port of its own and lists it for Prometheus's
``file_sd_configs``. Prometheus (Debian's 2.42) scrapes every second. One worker then keeps
150 MB; Prometheus must hold each worker's ``process.memory.usage`` as a separate series
(``instance`` and ``process_pid`` apart), the holder's 150 MB above the other's, and each
worker's ``otel_memory.request.rss.growth`` counting exactly the requests that worker served.
A worker the master then replaces leaves Prometheus, and its replacement is scraped (the master
itself is no target: it serves no request, and its ``target_info`` would be the one a worker
forked after its first collection reports; see the recipe).

Why scraping and not a push: Prometheus before 2.47 has no OTLP receiver, and the remote-write
exporter (``opentelemetry-exporter-prometheus-remote-write``) can not be chosen with
``OTEL_METRICS_EXPORTER`` (no entry point), pins ``protobuf<7`` and names the series
``process_memory_usage_By``, which the shipped alert rules and dashboard would never match. A
Prometheus user scrapes; the exporter users already run, plus a gunicorn config file, does it.

The same app is also run the plain way, without the recipe (job ``plain``): Prometheus then sees
only the master, which serves no request, so the check that fails without the mechanism is
part of the test.

Skipped, with the reason, only when the ``prometheus`` binary is absent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_server import (
    PROMETHEUS,
    Prometheus,
    free_port,
    running_prometheus,
    stop,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECIPE = ROOT / "examples" / "gunicorn_prometheus.py"
APP_DIR = ROOT / "tests" / "prometheus_apps"
MB = 1024 * 1024
HOLD_MB = 150
GROWTH = "otel_memory_request_rss_growth_bytes"
"""``otel_memory.request.rss.growth`` as the Prometheus exporter names it."""
REQUESTS = 24
"""``/work`` requests, eight at a time, each 0.2 s: both sync workers must take some."""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="needs the prometheus binary (Debian: apt-get install prometheus; .ci/run installs it)",
    ),
]


@dataclass
class Server:
    port: int
    metrics_port: int
    process: subprocess.Popen[str]
    log: Path

    def get(self, path: str) -> int:
        """GET ``path``; the pid of the worker that answered."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as answer:
            return int(json.load(answer)["pid"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def listening(server: Server) -> bool:
    """Whether gunicorn accepts connections (without a request: each one would be counted)."""
    assert server.process.poll() is None, server.output()
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
        return True


@contextmanager
def gunicorn(name: str, work: Path, *options: str) -> Iterator[Server]:
    """``opentelemetry-instrument gunicorn -w 2`` serving worker_app, listening when yielded."""
    port, metrics_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=name,
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(metrics_port),
        # process.memory.usage is then this package's (docs/metrics.md), not system-metrics'
        OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS="process.memory.*,process.runtime.memory",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(work / f"{name}-logs"),
        OTEL_MEMORY_PROMETHEUS_TARGETS_DIR=str(work / "targets"),
        PYTHONPATH=str(ROOT),  # the tree under test, whatever the venv was installed from
        PYTHONUNBUFFERED="1",
    )
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "gunicorn"), *options,
        "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(APP_DIR), "worker_app:app",
    ]  # fmt: skip
    log = work / f"{name}.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, so no worker outlives the test
        )
    server = Server(port, metrics_port, process, log)
    try:
        wait_for(lambda: listening(server), 30, f"{name} to listen ({server.output()})", every=0.2)
        yield server
    finally:
        stop(process)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def spread(server: Server) -> Counter[int]:
    """``REQUESTS`` slow requests, eight in flight: the number each worker pid served."""
    with ThreadPoolExecutor(8) as pool:
        pids = pool.map(lambda _: server.get("/work?seconds=0.2"), range(REQUESTS))
        return Counter(pids)


def by_pid(prometheus: Prometheus, promql: str) -> dict[str, float]:
    """The query's value per ``process_pid``, failing if two series share a pid."""
    found: dict[str, float] = {}
    for series in prometheus.query(promql):
        pid = series["metric"]["process_pid"]
        assert pid not in found, f"two series for pid {pid}: {promql}"
        found[pid] = float(series["value"][1])
    return found


def test_prometheus_keeps_each_gunicorn_workers_series_apart(tmp_path):
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "workers",
                "scrape_timeout": "1s",
                "file_sd_configs": [{"files": [str(tmp_path / "targets" / "*.json")]}],
            },
        ],
    }
    with (
        gunicorn("plain", tmp_path) as plain,
        gunicorn("workers", tmp_path, "-c", str(RECIPE)) as server,
    ):
        config["scrape_configs"].append(
            {
                "job_name": "plain",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{plain.metrics_port}"]}],
            }
        )
        with running_prometheus(tmp_path, config) as prometheus:
            # GIVEN both workers of each server have served requests
            served = spread(server)
            plain_served = spread(plain)
            assert len(served) == 2 and len(plain_served) == 2, (served, plain_served)
            master = server.process.pid

            # WHEN one worker keeps 150 MB
            holder = server.get(f"/hold?mb={HOLD_MB}")
            served[holder] += 1
            (other,) = set(served) - {holder}

            # THEN Prometheus has each worker's RSS, the holder's 150 MB higher
            def rss_apart() -> dict[str, float] | None:
                rss = by_pid(prometheus, 'process_memory_usage_bytes{job="workers"}')
                if rss.keys() != {str(holder), str(other)}:
                    return None
                return rss if rss[str(holder)] - rss[str(other)] > 0.8 * HOLD_MB * MB else None

            rss = wait_for(rss_apart, 30, f"2 RSS series, the holder's higher ({server.output()})")
            series = prometheus.query('process_memory_usage_bytes{job="workers"}')
            assert len({s["metric"]["instance"] for s in series}) == 2
            assert {s["metric"]["otel_scope_name"] for s in series} == {"otel_memory"}
            print({pid: f"{value / MB:.1f} MB" for pid, value in rss.items()})

            # AND each worker's request histogram counts its own requests, none of the other's
            def counted() -> dict[str, float] | None:
                counts = by_pid(
                    prometheus, f"sum by (process_pid) ({GROWTH}_count{{job='workers'}})"
                )
                return counts if counts == {str(p): float(n) for p, n in served.items()} else None

            print(wait_for(counted, 30, f"request counts {dict(served)} ({server.output()})"))
            held = by_pid(
                prometheus, f"{GROWTH}_sum{{job='workers', otel_memory_span_name='GET /hold'}}"
            )
            assert held.keys() == {str(holder)}
            assert held[str(holder)] > 0.8 * HOLD_MB * MB

            # AND without the recipe, Prometheus sees the master alone, with no request at all
            # (the master's exporter may miss a 1 s scrape on a loaded machine: wait for one)
            plain_rss = wait_for(
                lambda: prometheus.query('process_memory_usage_bytes{job="plain"}'),
                30,
                f"the plain master's RSS series ({plain.output()})",
            )
            assert len(plain_rss) == 1, plain_rss
            assert str(master) not in by_pid(prometheus, 'up{job="workers"}')  # see the recipe
            assert prometheus.query(f"{GROWTH}_count{{job='plain'}}") == []

            # AND a worker the master replaces leaves Prometheus, its replacement is scraped
            os.kill(other, signal.SIGTERM)

            def replaced() -> set[str] | None:
                rss = by_pid(prometheus, 'process_memory_usage_bytes{job="workers"}')
                ok = len(rss) == 2 and str(holder) in rss
                return set(rss) - {str(holder), str(other)} if ok else None

            wait_for(replaced, 30, f"the replacement worker's series ({server.output()})")
