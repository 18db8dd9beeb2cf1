"""The worker that died (SPEC v0.3, Servers and workers): a gunicorn worker OOM-killed in a real
cgroup v1 memory cgroup, in the middle of a Flask request, is reported exactly once by the worker
that replaces it, naming the route and its last RSS; the server keeps answering. So is one the
master's ``--timeout`` kills, whether by SIGABRT (its handler exits through Python: the request
was in Python code) or by SIGKILL (stuck in a C call). Workers the master stops cleanly
(SIGTERM, HUP reload, max_requests recycling) are never reported.

Everything is real: ``opentelemetry-instrument gunicorn`` with the flask instrumentation and this
package's ``memory`` instrumentor (started in the master, carried into each worker by the fork).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cgroups import limited_cgroup
from http_helpers import free_port

from otel_memory.base.logline import Marker, parse_line
from otel_memory.guards.lastrun import STATE_DIR

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
MB = 1024 * 1024

APP = '''
import time
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "ok"


@app.get("/hog")
def hog():
    held = []
    for _ in range(60):  # up to 3 GB, 50 MB at a time: the cgroup's limit comes first
        block = bytearray(50 * 1024 * 1024)
        block[::4096] = b"x" * len(range(0, len(block), 4096))
        held.append(block)
        time.sleep(0.05)
    return "survived"


@app.get("/stuck")
def stuck():
    time.sleep(0.5)  # the sampler records this request in the run state meanwhile
    # Minutes inside one C call that holds the GIL and never checks for signals: the SIGABRT
    # that gunicorn's timeout sends first cannot run its handler, so the master sends SIGKILL.
    return str(sum(range(10**12)))


@app.get("/slow")
def slow():
    # Python code (the common case): the SIGABRT of gunicorn's timeout runs the worker's handler,
    # which exits through Python (sys.exit(1)); the request's span ends as in a clean exit.
    time.sleep(120)
    return "late"
'''



def _get(port: int, path: str, timeout: float = 30) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return None  # the worker died under the request


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _env(log_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="worker-death",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(log_dir),
        OTEL_PYTHON_MEMORY_MONITOR_RETENTION_DAYS="0",
    )
    return env


def _gunicorn(tmp_path: Path, port: int, *options: str, cgroup: str | None = None):
    (tmp_path / "deathapp.py").write_text(APP)
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "gunicorn"), "-w", "2",
        "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "--graceful-timeout", "5",
        *options, "deathapp:app",
    ]  # fmt: skip
    if cgroup is not None:  # the master joins the cgroup before it execs: workers inherit it
        command = [
            "sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *command
        ]
    log = open(tmp_path / "gunicorn.out", "wb")  # noqa: SIM115  # closed with the process
    process = subprocess.Popen(
        command, env=_env(tmp_path / "logs"), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait(lambda: _get(port, "/", timeout=2) == 200, 60, "gunicorn to answer")
    except AssertionError:
        process.kill()
        raise AssertionError((tmp_path / "gunicorn.out").read_text(errors="replace")) from None
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _died(log_dir: Path) -> list[str]:
    lines = [
        line
        for path in sorted(log_dir.glob("memory_*.log"))
        for line in path.read_text().splitlines()
    ]
    return [
        line
        for line in lines
        if (parsed := parse_line(line)) is not None
        and parsed.marker is Marker.CHECK
        and parsed.name.startswith("Previous Run Died")
    ]


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_an_oom_killed_worker_is_reported_once_by_its_replacement(tmp_path, preload):
    log_dir = tmp_path / "logs"
    port = free_port()
    with limited_cgroup(400 * MB) as cgroup:
        process = _gunicorn(
            tmp_path, port, *(["--preload"] if preload else []), cgroup=cgroup
        )
        try:
            assert _get(port, "/hog", timeout=60) != 200  # the worker died under it
            died = _wait(lambda: _died(log_dir), 30, "the replacement's report")
            assert _get(port, "/") == 200  # the server keeps answering
            time.sleep(2)  # a second report would come from the next worker's start
            out = (tmp_path / "gunicorn.out").read_text(errors="replace")
        finally:
            _stop(process)
    assert "SIGKILL" in out or "out of memory" in out.lower(), out
    died = _died(log_dir)
    assert len(died) == 1, died
    assert "Previous Run Died (oom_kill) during GET /hog" in died[0], died
    parsed = parse_line(died[0])
    assert parsed is not None and parsed.rss_mb > 0
    assert not list((log_dir / STATE_DIR).glob("run-*.json"))  # every other process stopped


@pytest.mark.parametrize(
    ("route", "worker"),
    [("/stuck", "sync"), ("/slow", "sync")],
    ids=["sigkill-in-a-c-call", "sigabrt-in-python"],
)  # a gthread worker's main loop keeps beating while a request thread is slow: no timeout
def test_a_worker_killed_by_the_masters_timeout_is_reported_once(tmp_path, route, worker):
    log_dir = tmp_path / "logs"
    port = free_port()
    process = _gunicorn(tmp_path, port, "--timeout", "2", "--worker-class", worker)
    try:
        assert _get(port, route, timeout=60) != 200
        died = _wait(lambda: _died(log_dir), 30, "the replacement's report")
        assert _get(port, "/") == 200
        time.sleep(2)
        out = (tmp_path / "gunicorn.out").read_text(errors="replace")
    finally:
        _stop(process)
    assert "WORKER TIMEOUT" in out, out
    died = _died(log_dir)
    assert len(died) == 1, died
    assert f"Previous Run Died (unknown) during GET {route}" in died[0], died
    parsed = parse_line(died[0])
    assert parsed is not None and parsed.rss_mb > 0


def test_workers_stopped_cleanly_are_never_reported(tmp_path):
    log_dir = tmp_path / "logs"
    port = free_port()
    process = _gunicorn(tmp_path, port, "--max-requests", "5")
    try:
        for _ in range(30):  # each worker is recycled after 5 requests
            assert _get(port, "/") == 200
        process.send_signal(signal.SIGHUP)  # reload: new workers, the old ones stop gracefully
        time.sleep(3)
        for _ in range(10):
            assert _get(port, "/") == 200
    finally:
        _stop(process)
    assert process.returncode == 0, (tmp_path / "gunicorn.out").read_text(errors="replace")
    # A new process with the same log_dir finds nothing to report.
    subprocess.run(
        [sys.executable, "-c", "import otel_memory; otel_memory.start(); otel_memory.stop()"],
        env=_env(log_dir), check=True, timeout=60,
    )  # fmt: skip
    assert _died(log_dir) == []
    assert not list((log_dir / STATE_DIR).glob("run-*.json"))
    out = (tmp_path / "gunicorn.out").read_text(errors="replace")
    assert out.count("Booting worker") >= 8, out  # recycled and reloaded for real
