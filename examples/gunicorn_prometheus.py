"""gunicorn settings that let Prometheus scrape every worker, not only the master.

    OTEL_METRICS_EXPORTER=prometheus OTEL_EXPORTER_PROMETHEUS_HOST=10.0.0.5 \\
    OTEL_MEMORY_PROMETHEUS_TARGETS_DIR=/var/lib/prometheus/targets/myapp \\
    opentelemetry-instrument gunicorn -c examples/gunicorn_prometheus.py -w 4 app:app

Under ``opentelemetry-instrument`` the Prometheus exporter's HTTP server is a thread of the
master, started before the fork; a forked worker has no such thread, so the master's ``/metrics``
is all Prometheus would ever see, and the master serves no request. Here each worker serves its
own metrics on a port of its own (chosen by the kernel) and writes a Prometheus
``file_sd_configs`` file naming it, which the master removes when the worker exits. Prometheus
then scrapes each worker as a target: every series carries that target's ``instance`` and a
``process_pid`` label, so no worker's series overwrites another's. Scrape them with:

    scrape_configs:
      - job_name: myapp
        file_sd_configs:
          - files: ["/var/lib/prometheus/targets/myapp/*.json"]

Needs ``prometheus_client`` (``opentelemetry-exporter-prometheus`` brings it). Workers listen on
the exporter's host (``OTEL_EXPORTER_PROMETHEUS_HOST``, ``localhost`` by default); set it to an
address Prometheus can reach, and when Prometheus runs elsewhere let it reach any port there.

The master is deliberately not listed, and its own ``/metrics`` (``OTEL_EXPORTER_PROMETHEUS_PORT``)
need not be scraped: it serves no request. A collection in the master could also hang a worker
forked during it (the SDK's collection lock, opentelemetry-python issue #4345); the monitor now
holds that lock across each fork (``docs/workers.md``), but unscraped, the master never collects.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from prometheus_client import start_http_server

TARGETS_DIR = Path(os.environ.get("OTEL_MEMORY_PROMETHEUS_TARGETS_DIR", "prometheus-targets"))
HOST = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")


def _target_file(pid: int) -> Path:
    return TARGETS_DIR / f"gunicorn-{pid}.json"


def _write_target(pid: int, port: int) -> None:
    # 0.0.0.0 is where a server listens, not an address Prometheus can scrape
    host = socket.gethostname() if HOST in ("", "0.0.0.0", "::") else HOST
    target = [{"targets": [f"{host}:{port}"], "labels": {"process_pid": str(pid)}}]
    partial = _target_file(pid).with_suffix(".tmp")
    partial.write_text(json.dumps(target))
    partial.replace(_target_file(pid))  # whole or absent: Prometheus never reads half a file


def on_starting(server):
    """In the master: forget the targets a previous master left."""
    TARGETS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in TARGETS_DIR.glob("gunicorn-*.json"):
        stale.unlink()


def post_fork(server, worker):
    """In the new worker: serve its metrics on a free port and tell Prometheus where."""
    httpd, _ = start_http_server(0, addr=HOST)
    _write_target(worker.pid, httpd.server_port)


def child_exit(server, worker):
    """In the master, once a worker has gone (any cause): stop Prometheus scraping it."""
    _target_file(worker.pid).unlink(missing_ok=True)
