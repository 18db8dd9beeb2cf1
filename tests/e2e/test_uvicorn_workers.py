"""uvicorn ``--workers`` (SPEC v0.3, Servers and workers): uvicorn spawns its workers, each
starts its own monitor (under ``opentelemetry-instrument``, or the app at import): its own run
state, lines its process is told by in the shared log, and a worker killed inside a task is
reported once by the worker uvicorn starts in its place. A clean shutdown is never reported,
though uvicorn ends each worker by re-raising SIGTERM with its default action (no ``atexit``):
``otel_memory/runtime/exits.py`` wraps uvicorn's server right after uvicorn is imported (under
``opentelemetry-instrument`` the monitor starts first) and then stops the monitor after the
graceful shutdown; when the app starts the monitor inside the running server, the handler
installed already is wrapped. Real uvicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from http_helpers import free_port, get_until

from otel_memory.base.logline import Marker, parse_line
from otel_memory.guards.lastrun import claim_dead_runs

pytestmark = pytest.mark.e2e
pytest.importorskip("uvicorn")

APP = """
import mmap
import os
import signal
import time

import otel_memory
from otel_memory import api as monitor
from otel_memory import set_active_task, traced_task
from otel_memory.base.config import config_from_dict

if not monitor.is_running():
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": os.environ["LOG_DIR"], "retention_days": 0, "export_logs": "none",
        "interval_seconds": 60}}}}))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/die":
        set_active_task("Nations Dump Processing")
        block = mmap.mmap(-1, 64 * 1024 * 1024)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        time.sleep(1.0)  # the run state records the task and RSS (sampler, every 0.1 s)
        os.kill(os.getpid(), signal.SIGKILL)
    with traced_task("request " + scope["path"].strip("/")):
        body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
"""




def _parsed(log_dir: Path):
    texts = [t for f in sorted(log_dir.glob("memory_*.log")) for t in f.read_text().splitlines()]
    parsed = [parse_line(t) for t in texts]
    assert all(p is not None for p in parsed)  # every line whole
    return [p for p in parsed if p is not None]


def _died(log_dir: Path) -> list:
    return [
        p
        for p in _parsed(log_dir)
        if p.marker is Marker.CHECK and p.name.startswith("Previous Run Died")
    ]


def test_uvicorn_workers_each_have_their_own_run_state_and_a_killed_one_is_reported_once(
    tmp_path,
):
    (tmp_path / "app.py").write_text(APP)
    log_dir = tmp_path / "logs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--workers", "2", "--port", str(port),
         "--lifespan", "off", "--log-level", "warning"],
        cwd=tmp_path, env={**os.environ, "LOG_DIR": str(log_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        pids = {get_until(f"{url}/{i}", deadline) for i in range(40)}
        # one per worker (the supervisor imports no app); the second may still be starting
        while len(states := sorted((log_dir / ".otel-memory").glob("run-*.json"))) < 2:
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        assert len(states) == 2, states
        workers = {state.stem.rsplit("-", 1)[1] for state in states}  # the killed one too
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{url}/die", timeout=30).read()
        deadline = time.monotonic() + 60
        while not _died(log_dir) and time.monotonic() < deadline:
            pids.add(get_until(f"{url}/after", deadline))  # uvicorn replaces the dead worker
            time.sleep(0.2)
        pids |= {get_until(f"{url}/{i}", time.monotonic() + 60) for i in range(20)}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    died = _died(log_dir)
    assert len(died) == 1, died
    assert died[0].name == "Previous Run Died (unknown) during Nations Dump Processing"
    # Each worker's START lines carry its pid, except those of a worker that was alone.
    writers = {p.pid for p in _parsed(log_dir) if p.marker is Marker.START}
    assert len(writers - {None}) >= 1 and {str(p) for p in writers - {None}} <= pids | workers


BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "started",
    ["by-the-app", "by-opentelemetry-instrument"],
)
def test_a_clean_uvicorn_shutdown_leaves_nothing_to_report(tmp_path, started):
    (tmp_path / "app.py").write_text(APP)
    log_dir = tmp_path / "logs"
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "app:app", "--workers", "2", "--port", str(port),
        "--lifespan", "off", "--log-level", "warning",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["LOG_DIR"] = str(log_dir)
    if started == "by-opentelemetry-instrument":  # the monitor runs before uvicorn's handlers
        command = [str(BIN / "opentelemetry-instrument"), *command]
        env.update(
            OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
            OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(log_dir),
            OTEL_PYTHON_MEMORY_MONITOR_RETENTION_DAYS="0",
        )  # fmt: skip
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        pids = {get_until(f"http://127.0.0.1:{port}/{i}", deadline) for i in range(20)}
        states = list((log_dir / ".otel-memory").glob("run-*.json"))
        assert pids <= {state.stem.rsplit("-", 1)[1] for state in states}  # each its own
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0
    # every worker ended cleanly: no state left, and the next start reports nothing. Under
    # opentelemetry-instrument multiprocessing's resource tracker runs a monitor too, and it
    # ends on its own once the supervisor is gone: wait for it (a stale file stays, and fails)
    wait_until = time.monotonic() + 20
    while list((log_dir / ".otel-memory").glob("run-*.json")) and time.monotonic() < wait_until:
        time.sleep(0.1)
    assert not list((log_dir / ".otel-memory").glob("run-*.json"))
    assert claim_dead_runs(log_dir) == []
    # and every request's lines reached the file, though the workers end by SIGTERM
    names = [p.name for p in _parsed(log_dir) if p.marker in (Marker.START, Marker.END)]
    assert sorted(names) == sorted(f"request {i}" for i in range(20) for _ in range(2))
    if started == "by-opentelemetry-instrument":  # stopped after uvicorn's graceful shutdown
        stopped = [p for p in _parsed(log_dir) if p.name == "Monitor Stopped"]
        assert len(stopped) >= 3  # each worker's last line, and the supervisor's
        assert pids <= {str(p.pid) for p in stopped}, (pids, stopped)
