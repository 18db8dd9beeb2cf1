"""How a monitored process ends where neither ``stop()`` nor ``atexit`` is reached
(``otel_memory/runtime/exits.py``): the package installs no SIGTERM handler of its own, so a
SIGTERM with its default action still ends the process at once, whatever its main thread is
blocked in; a SIGKILL is a death to report; inside a running uvicorn server (whose handler will
re-raise SIGTERM with its default action) the SIGTERM removes the run state and writes the lines.

Real processes, real signals; the run state is read back as the next start would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import otel_memory
from otel_memory import api
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import parse_line
from otel_memory.guards.lastrun import claim_dead_runs

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX")

SERVICE = """
import os, sys, threading, time
import otel_memory
from otel_memory import set_active_task
from otel_memory.base.config import config_from_dict

log_dir, mode = sys.argv[1], sys.argv[2]
otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": log_dir, "retention_days": 0, "export_logs": "none"}}}}))
set_active_task("Nations Dump Processing")
held = bytearray(30 * 1024 * 1024)
held[::4096] = b"x" * len(range(0, len(held), 4096))
time.sleep(0.3)  # the run state records the task (the sampler, every 0.1 s)
if mode == "blocked":  # the main thread waits on a lock (a pool worker, a script joining)
    print("ready", flush=True)
    threading.Event().wait()
print("ready", flush=True)
time.sleep(60)
"""


def _run_until_ready(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    log_dir = tmp_path / "logs"
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(log_dir), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert service.stdout is not None
    assert service.stdout.readline().strip() == "ready", service.stderr
    return service, log_dir


def _lines(log_dir: Path) -> list:
    return [
        parse_line(text)
        for path in sorted(log_dir.glob("memory_*.log"))
        for text in path.read_text().splitlines()
    ]


def test_a_sigkill_is_still_a_death_to_report(tmp_path):
    # GIVEN the same service; WHEN it is SIGKILLed
    service, log_dir = _run_until_ready(tmp_path, "plain")
    service.kill()
    assert service.wait(timeout=30) == -signal.SIGKILL
    # THEN the next start reports it, in its task
    dead = claim_dead_runs(log_dir)
    assert [(run.pid, run.last_task) for run in dead] == [
        (service.pid, "Nations Dump Processing")
    ]


def _config(tmp_path: Path):
    return config_from_dict(
        {"general": {"monitoring": {"memory_monitor": {
            "log_dir": str(tmp_path / "logs"), "retention_days": 0, "export_logs": "none"}}}}
    )  # fmt: skip


def test_the_monitor_leaves_sigterm_alone(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        for action in (signal.SIG_DFL, signal.SIG_IGN):
            signal.signal(signal.SIGTERM, action)
            otel_memory.start(_config(tmp_path))
            assert signal.getsignal(signal.SIGTERM) is action
            otel_memory.stop()
    finally:
        api.stop()
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_ends_the_process_at_once_even_with_its_main_thread_blocked(tmp_path):
    # GIVEN a service whose main thread waits on a lock while the monitor's threads run (a
    # Python-level handler runs only when the main thread runs Python again)
    service, _ = _run_until_ready(tmp_path, "blocked")
    # WHEN it is sent SIGTERM
    started = time.monotonic()
    service.send_signal(signal.SIGTERM)
    # THEN the default action ends it at once
    assert service.wait(timeout=10) == -signal.SIGTERM
    assert time.monotonic() - started < 10


INSIDE_UVICORN = """
import os, signal, sys, time
import uvicorn
import otel_memory
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict
from otel_memory.guards.lastrun import STATE_DIR

log_dir = sys.argv[1]
server = uvicorn.Server(uvicorn.Config("app:app"))
signal.signal(signal.SIGTERM, server.handle_exit)  # as uvicorn's capture_signals() does
otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": log_dir, "retention_days": 0, "export_logs": "none", "interval_seconds": 3600}}}}))
with traced_task("before the signal"):
    pass
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.1)  # the handler runs at the next bytecode
assert server.should_exit  # uvicorn's own handler ran: its graceful shutdown goes on
assert not os.listdir(os.path.join(log_dir, STATE_DIR)), "run state left"
(daily,) = [os.path.join(log_dir, f) for f in os.listdir(log_dir) if f.startswith("memory_")]
assert "<<< TASK END [before the signal]" in open(daily).read(), "queued lines not written"
with traced_task("after the signal"):
    pass
assert "<<< TASK END [after the signal]" in open(daily).read(), "an END not written at once"
os._exit(0)  # as the worker ends: no stop(), no atexit
"""


def test_inside_a_running_uvicorn_server_a_sigterm_removes_the_run_state_and_writes_lines(
    tmp_path,
):
    # GIVEN uvicorn's handler on SIGTERM (a real uvicorn Server), then the monitor started
    pytest.importorskip("uvicorn")
    log_dir = tmp_path / "logs"
    # WHEN SIGTERM comes and the process later ends without stop()
    done = subprocess.run(
        [sys.executable, "-c", INSIDE_UVICORN, str(log_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # THEN uvicorn's handler ran, the run state is gone and the lines were written
    assert done.returncode == 0, done.stderr
    assert claim_dead_runs(log_dir) == []
