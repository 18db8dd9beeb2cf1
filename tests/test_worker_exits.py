"""Worker processes that end with ``os._exit()`` right after their work returns lose no line:
``multiprocessing`` (fork, forkserver, spawn), its pools (``close()``/``join()``, ``terminate()``,
the ``with`` block), ``ProcessPoolExecutor``, and gunicorn workers (graceful exit, max_requests);
and none of those workers that returned is left to be reported as dead by the next start.

Each test runs the real thing in a subprocess and counts the task lines in the daily files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from http_helpers import free_port, get_until

from otel_memory.base.logline import parse_line
from otel_memory.guards.lastrun import claim_dead_runs
from otel_memory.kernel import termination

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX start methods")

WORKERS = '''
import concurrent.futures
import multiprocessing
import sys

import otel_memory
from otel_memory import api as monitor
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict

LOG_DIR = sys.argv[1]


def ensure_started():
    """A forked worker inherits the running monitor; a spawned one starts its own."""
    if not monitor.is_running():
        otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
            "log_dir": LOG_DIR, "retention_days": 0}}}}))


def job(i):
    with traced_task(f"job {i}"):
        pass
    return i


def process(k):
    ensure_started()
    for i in range(50):
        job(f"{k}-{i}")
    monitor.write_check_line(f"process {k} done")  # no task ends after it: written at exit


if __name__ == "__main__":
    pattern, method = sys.argv[2], sys.argv[3]
    context = multiprocessing.get_context(method)
    ensure_started()
    if pattern == "process":
        children = [context.Process(target=process, args=(k,)) for k in range(4)]
        for child in children:
            child.start()
        for child in children:
            child.join()
        assert [child.exitcode for child in children] == [0] * 4
    elif pattern == "pool_close":
        pool = context.Pool(4, initializer=ensure_started)
        assert pool.map(job, range(200)) == list(range(200))
        pool.close()
        pool.join()
    elif pattern == "pool_terminate":
        pool = context.Pool(4, initializer=ensure_started)
        assert pool.map(job, range(200)) == list(range(200))
        pool.terminate()  # SIGTERM to workers idle in their loop
        pool.join()
    elif pattern == "pool_with":
        with context.Pool(4, initializer=ensure_started) as pool:  # __exit__: terminate()
            assert pool.map(job, range(200)) == list(range(200))
    elif pattern == "executor":
        with concurrent.futures.ProcessPoolExecutor(
            4, mp_context=context, initializer=ensure_started
        ) as executor:
            assert list(executor.map(job, range(200))) == list(range(200))
    otel_memory.stop()
'''


def _lines(log_dir: Path) -> list:
    return [
        parse_line(line)
        for path in sorted(log_dir.glob("memory_*.log"))
        for line in path.read_text().splitlines()
    ]


def _task_names(log_dir: Path) -> list[str]:
    return [line.name for line in _lines(log_dir) if line.marker.short != "CHECK"]


METHODS = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("process", 400), ("pool_close", 400), ("pool_terminate", 400), ("pool_with", 400),
     ("executor", 400)],
)
def test_every_line_of_a_worker_that_ends_with_os_exit_is_written(
    tmp_path, pattern, expected, method
):
    script = tmp_path / "workers.py"  # a file: spawn and forkserver import it in the child
    script.write_text(WORKERS)
    log_dir = tmp_path / "logs"
    subprocess.run(
        [sys.executable, str(script), str(log_dir), pattern, method],
        check=True, timeout=120, cwd=tmp_path,
    )
    names = _task_names(log_dir)
    assert len(names) == expected  # START and END of every task, written = expected
    assert all(names.count(name) == 2 for name in set(names))
    # and no worker is left to be reported as dead: those that returned, and those a pool's
    # terminate() stopped by SIGTERM (its default action runs no Python: the compiled handler
    # removes the run state; without it, they would be reported)
    if termination.AVAILABLE or pattern not in ("pool_terminate", "pool_with"):
        assert claim_dead_runs(log_dir) == []
    if pattern == "process":  # and the last line each child queued, by multiprocessing's exit
        checks = {line.name for line in _lines(log_dir) if line.marker.short == "CHECK"}
        assert {f"process {k} done" for k in range(4)} <= checks


APP = '''
import os

import otel_memory
from otel_memory import api as monitor
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict

if not monitor.is_running():  # without --preload: each worker starts it when it loads the app
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": os.environ["LOG_DIR"], "retention_days": 0}}}}))


def app(environ, start_response):
    with traced_task("request " + environ["PATH_INFO"].strip("/")):
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''




@pytest.mark.parametrize("preload", [False, True], ids=["app-per-worker", "preload"])
@pytest.mark.parametrize("max_requests", [0, 10], ids=["graceful-exit", "max-requests"])
def test_gunicorn_workers_lose_no_line(tmp_path, max_requests, preload):
    # GIVEN gunicorn with 2 sync workers (recycled every 10 requests in the max-requests case)
    pytest.importorskip("gunicorn")
    (tmp_path / "app.py").write_text(APP)
    log_dir = tmp_path / "logs"
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
        "--max-requests", str(max_requests), "--graceful-timeout", "10", "app:app",
    ]
    if preload:
        command.append("--preload")  # the master starts the monitor; workers inherit it
    server = subprocess.Popen(
        command, cwd=tmp_path, env={**os.environ, "LOG_DIR": str(log_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # WHEN 60 requests are served, then the master is told to stop (SIGTERM: graceful)
        deadline = time.monotonic() + 60
        pids = {get_until(f"http://127.0.0.1:{port}/{i}", deadline) for i in range(60)}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # THEN every request's START and END are in the file
    names = _task_names(log_dir)
    assert sorted(names) == sorted(f"request {i}" for i in range(60) for _ in range(2))
    if max_requests:
        assert len(pids) >= 3  # workers really were recycled
