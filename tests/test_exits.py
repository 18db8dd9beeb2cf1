"""How a monitored process ends where neither ``stop()`` nor ``atexit`` is reached
(``otel_memory/runtime/exits.py``): a SIGTERM with its default action is a requested stop, not a
death to report, and the process still ends by SIGTERM; a handler the host owns is left alone.

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
from otel_memory.guards.lastrun import STATE_DIR, claim_dead_runs
from otel_memory.runtime.exits import STOP_TIMEOUT

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX")

SERVICE = """
import os, sys, threading, time
import otel_memory
from otel_memory import set_active_task
from otel_memory.base.config import config_from_dict
from otel_memory.runtime.runtime import get_runtime

log_dir, mode = sys.argv[1], sys.argv[2]
otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": log_dir, "retention_days": 0, "export_logs": "none"}}}}))
set_active_task("Nations Dump Processing")
held = bytearray(30 * 1024 * 1024)
held[::4096] = b"x" * len(range(0, len(held), 4096))
time.sleep(0.3)  # the run state records the task (the sampler, every 0.1 s)
if mode == "chained":  # a handler of the host's, installed later, calls the one it found
    import signal
    found = signal.getsignal(signal.SIGTERM)

    def graceful(signum, frame):
        if callable(found):
            found(signum, frame)
        print("graceful", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, graceful)
if mode == "holding":  # the main thread holds the lock the run state's stop needs
    lock = get_runtime().monitor._running.run_state._lock
    with lock:
        print("ready", flush=True)
        time.sleep(60)
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


def test_a_sigterm_is_a_requested_stop_and_the_process_still_ends_by_it(tmp_path):
    # GIVEN a service in a task, SIGTERM with its default action (no handler of its own)
    service, log_dir = _run_until_ready(tmp_path, "plain")
    state_files = list((log_dir / STATE_DIR).glob("run-*.json"))
    assert len(state_files) == 1  # its run state, naming the task
    # WHEN it is sent SIGTERM (systemd, Kubernetes, uvicorn's re-raise, Pool.terminate())
    service.send_signal(signal.SIGTERM)
    # THEN it ends by SIGTERM, as its parent expects, after a clean stop
    assert service.wait(timeout=30) == -signal.SIGTERM
    lines = _lines(log_dir)
    assert lines[-1].name == "Monitor Stopped"
    assert [line.name for line in lines if line.marker.short == "END"] == [
        "Nations Dump Processing"
    ]
    # and the next start has nothing to report
    assert not list((log_dir / STATE_DIR).glob("run-*.json"))
    assert claim_dead_runs(log_dir) == []


def test_a_sigterm_while_the_stop_cannot_finish_still_ends_and_reports_nothing(tmp_path):
    # GIVEN a service whose main thread holds the run state's lock when SIGTERM comes
    service, log_dir = _run_until_ready(tmp_path, "holding")
    # WHEN it is sent SIGTERM
    started = time.monotonic()
    service.send_signal(signal.SIGTERM)
    # THEN it ends by SIGTERM within the stop's bound, and its run is not reported as dead
    assert service.wait(timeout=30) == -signal.SIGTERM
    assert time.monotonic() - started < STOP_TIMEOUT + 10
    assert claim_dead_runs(log_dir) == []


def test_a_host_handler_that_chains_to_the_monitors_keeps_its_own_shutdown(tmp_path):
    # GIVEN a host that installs its SIGTERM handler after start() and chains to the one found
    service, log_dir = _run_until_ready(tmp_path, "chained")
    # WHEN it is sent SIGTERM
    service.send_signal(signal.SIGTERM)
    # THEN the host's shutdown runs to its end (the monitor's handler does not end the process)
    assert service.wait(timeout=30) == 0
    assert service.stdout is not None and service.stdout.read().strip() == "graceful"
    assert _lines(log_dir)[-1].name == "Monitor Stopped"  # atexit's stop()
    assert claim_dead_runs(log_dir) == []


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


def test_sigterm_is_handled_only_while_its_action_is_the_default(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        # GIVEN SIGTERM's default action: the monitor handles it while it runs, then gives it back
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        otel_memory.start(_config(tmp_path))
        assert callable(signal.getsignal(signal.SIGTERM))
        otel_memory.stop()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        # GIVEN a handler of the host's own: it is left alone, before and after
        def host_handler(signum, frame):
            pass

        signal.signal(signal.SIGTERM, host_handler)
        otel_memory.start(_config(tmp_path))
        assert signal.getsignal(signal.SIGTERM) is host_handler
        otel_memory.stop()
        assert signal.getsignal(signal.SIGTERM) is host_handler

        # GIVEN SIGTERM ignored: it stays ignored
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        otel_memory.start(_config(tmp_path))
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        otel_memory.stop()
    finally:
        api.stop()
        signal.signal(signal.SIGTERM, previous)


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
