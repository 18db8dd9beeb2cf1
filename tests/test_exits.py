"""How a monitored process ends where neither ``stop()`` nor ``atexit`` is reached
(``otel_memory/runtime/exits.py``, ``otel_memory/kernel/termination.py``): a SIGTERM with its
default action still ends the process at once, whatever its main thread is blocked in (the
package installs no Python handler), and its compiled handler first removes the run state: a
requested stop is not reported; a host's handler and ``SIG_IGN`` are left alone; a SIGKILL is a
death to report; uvicorn, which re-raises SIGTERM with its default action after its graceful
shutdown, is wrapped when it is imported after the monitor starts (the monitor stops after the
shutdown) and, inside a server already running, its handler removes the run state and writes
the lines.

Real processes, real signals; the run state is read back as the next start would."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from http_helpers import free_port, get_until

import otel_memory
from otel_memory import api
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import parse_line
from otel_memory.guards.lastrun import claim_dead_runs
from otel_memory.kernel import termination

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


@pytest.mark.parametrize("mode", ["plain", "blocked"])
def test_a_sigterm_ends_the_process_at_once_and_is_not_a_death(tmp_path, mode):
    # GIVEN a service in a task, its main thread sleeping or waiting on a lock while the
    # monitor's threads run (a Python-level handler runs only when the main thread runs Python)
    service, log_dir = _run_until_ready(tmp_path, mode)
    assert list((log_dir / ".otel-memory").glob("run-*.json"))
    # WHEN it is sent SIGTERM (a supervisor's stop: systemd, Docker, Kubernetes)
    started = time.monotonic()
    service.send_signal(signal.SIGTERM)
    # THEN the default action ends it at once, exit status included
    assert service.wait(timeout=10) == -signal.SIGTERM
    assert time.monotonic() - started < 10
    # AND it was a requested stop: nothing is left for the next start to report
    if termination.AVAILABLE:
        assert not list((log_dir / ".otel-memory").glob("run-*.json"))
        assert claim_dead_runs(log_dir) == []


HOST_ACTION = """
import os, signal, sys, time
import otel_memory
from otel_memory.base.config import config_from_dict

log_dir, action = sys.argv[1], sys.argv[2]
if action == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: print("host handler", flush=True))
otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": log_dir, "retention_days": 0, "export_logs": "none"}}}}))
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
print("alive", flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("action", ["ignore", "handler"])
def test_a_hosts_own_sigterm_action_is_left_alone(tmp_path, action):
    # GIVEN a host that ignores SIGTERM, or handles it itself, before the monitor starts
    log_dir = tmp_path / "logs"
    # WHEN it gets a SIGTERM
    done = subprocess.run(
        [sys.executable, "-c", HOST_ACTION, str(log_dir), action],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # THEN its own action ran and it lives on; the run state is untouched (it ended by _exit)
    assert done.returncode == 0, done.stderr
    expected = ["alive"] if action == "ignore" else ["host handler", "alive"]
    assert done.stdout.split("\n")[:-1] == expected
    assert len(claim_dead_runs(log_dir)) == 1


FORKED_CHILD = """
import os, signal, sys, time
from otel_memory.guards.lastrun import RunState

state = RunState(sys.argv[1])
state.begin()
pid = os.fork()
if pid == 0:  # a child that has not begun its own run state: the parent's file is not its own
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    os._exit(3)
_, status = os.waitpid(pid, 0)
assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
assert state.path is not None and os.path.exists(state.path), "the parent's run state went"
state.end()
print("ok", flush=True)
"""


def test_a_forked_child_never_removes_its_parents_run_state(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD, str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


ENDING = """
import os, signal, sys
from otel_memory.guards import lastrun
from otel_memory.guards.lastrun import RunState

forget = lastrun.remove_at_sigterm


def forget_then_sigterm(path):
    installed = forget(path)
    if path is None:  # the SIGTERM arrives just after the handler forgot the file
        os.kill(os.getpid(), signal.SIGTERM)
    return installed


lastrun.remove_at_sigterm = forget_then_sigterm
state = RunState(sys.argv[1])
state.begin()
print(state.path, flush=True)
getattr(state, sys.argv[2])()
os._exit(3)
"""


@pytest.mark.skipif(not termination.AVAILABLE, reason="needs the compiled handler")
@pytest.mark.parametrize("ending", ["end", "discard"])
def test_a_sigterm_that_lands_while_the_run_ends_leaves_no_run_state(tmp_path, ending):
    # GIVEN a pool worker ending its run (end(): it returned; discard(): uvicorn's stop) WHEN
    # the pool's terminate() SIGTERM lands just after the compiled handler forgot its file
    done = subprocess.run(
        [sys.executable, "-c", ENDING, str(tmp_path / "logs"), ending],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # THEN the process ends by it, and the file was already gone: not reported as a death
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert os.path.basename(done.stdout.strip()).startswith("run-")
    assert not os.path.exists(done.stdout.strip())
    assert claim_dead_runs(tmp_path / "logs") == []


UVICORN_RUN = """
import os, sys
import otel_memory
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict

otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
    "log_dir": sys.argv[1], "retention_days": 0, "export_logs": "none"}}}}))
import uvicorn  # after the monitor, as under opentelemetry-instrument
import inspect, uvicorn.server
assert "class Server" in inspect.getsource(uvicorn.server)  # its loader still answers


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    with traced_task("request"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


uvicorn.run(app, port=int(sys.argv[2]), log_level="warning", lifespan="off")
"""


def test_a_uvicorn_imported_after_the_monitor_stops_it_after_its_graceful_shutdown(tmp_path):
    # GIVEN `uvicorn.run(app)` in a script that starts the monitor before importing uvicorn
    pytest.importorskip("uvicorn")
    log_dir, port = tmp_path / "logs", free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", UVICORN_RUN, str(log_dir), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert get_until(f"http://127.0.0.1:{port}/", time.monotonic() + 60) == str(server.pid)
    finally:
        # WHEN it is stopped by SIGTERM (uvicorn re-raises it with its default action)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == -signal.SIGTERM, server.stderr
    # THEN the monitor stopped first, as at exit, and nothing is left to report
    names = [line.name for line in _lines(log_dir)]
    assert names[-1] == "Monitor Stopped", names
    assert names.count("request") == 2
    assert claim_dead_runs(log_dir) == []


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


def test_the_import_hook_calls_every_caller_once_after_the_module_ran(tmp_path, monkeypatch):
    # GIVEN a module not imported yet, and two callers waiting for it (two monitors)
    from otel_memory.runtime import exits

    (tmp_path / "late_server.py").write_text("class Server:\n    started = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    seen: list[tuple[str, bool]] = []
    exits._after_import("late_server", "first", lambda m: seen.append(("first", m.Server.started)))
    exits._after_import("late_server", "second", lambda m: seen.append(("second", m.Server.started)))
    assert sum(isinstance(f, exits._AfterImport) for f in sys.meta_path) == 1
    try:
        # WHEN other modules are imported, then that one
        import json.tool  # noqa: F401  (passes through the finder)

        assert seen == []
        import late_server

        # THEN each caller saw the module after its code ran, once; the finder is gone, and
        # the module's loader still answers
        assert seen == [("first", True), ("second", True)]
        assert not any(isinstance(f, exits._AfterImport) for f in sys.meta_path)
        assert "class Server" in inspect.getsource(late_server)
    finally:
        sys.modules.pop("late_server", None)


def test_restarting_the_monitor_waits_for_uvicorns_import_once(tmp_path, monkeypatch):
    # GIVEN a process that has not imported uvicorn (the hook waits for it)
    from otel_memory.runtime import exits

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "uvicorn.server", raising=False)
    config = config_from_dict(
        {"general": {"monitoring": {"memory_monitor": {"log_dir": str(tmp_path)}}}}
    )
    # WHEN the monitor starts and stops five times
    for _ in range(5):
        api.start(config)
        api.stop()
    # THEN one callback waits, not one per start (nothing piles up in sys.meta_path)
    waiting = [f.thens for f in sys.meta_path if isinstance(f, exits._AfterImport)]
    assert [len(thens) for thens in waiting] == [1]
