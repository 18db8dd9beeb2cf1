"""Pre-fork workers (SPEC v0.3, Servers and workers): a worker forked from a process whose
monitor runs gets its own ``---`` thread and run state, reports the workers that died before it
exactly once, and a worker that returns is never reported. Real forked processes throughout."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import otel_memory
from otel_memory import api, clear_active_task, set_active_task
from otel_memory.base.config import config_from_dict
from otel_memory.base.logline import Marker, parse_line
from otel_memory.guards.lastrun import STATE_DIR

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
_FORK = multiprocessing.get_context("fork")


def _config(log_dir: Path, interval: int = 1):
    keys = {"log_dir": str(log_dir), "interval_seconds": interval, "export_logs": "none"}
    return config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}})


def _state_files(log_dir: Path) -> list[str]:
    return sorted(p.name for p in (log_dir / STATE_DIR).glob("run-*.json"))


def _lines(log_dir: Path) -> list[str]:
    api.flush()
    return [line for f in sorted(log_dir.glob("memory_*.log")) for line in f.read_text().splitlines()]


def _report_worker_state(log_dir: Path, results) -> None:
    """In the worker: what it runs (threads, its own state file), then return normally."""
    time.sleep(1.6)  # at least one --- period of its own
    names = sorted(t.name for t in threading.enumerate())
    mine = [n for n in _state_files(log_dir) if n.endswith(f"-{os.getpid()}.json")]
    results.put((names, mine))


def test_a_forked_worker_has_its_own_periodic_thread_and_run_state(tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(_config(log_dir))
    results = _FORK.Queue()
    worker = _FORK.Process(target=_report_worker_state, args=(log_dir, results))
    worker.start()
    names, mine = results.get(timeout=30)
    worker.join(30)
    assert worker.exitcode == 0
    assert "otel-memory-periodic" in names
    assert len(mine) == 1  # the worker's own state file, beside the master's
    # The worker returned (os._exit after multiprocessing's finalizers): its state is gone,
    # so nobody will report it; the master's is still there.
    assert _state_files(log_dir) == [n for n in _state_files(log_dir) if str(os.getpid()) in n]
    assert len(_state_files(log_dir)) == 1


def _die_in_task(log_dir: Path) -> None:
    set_active_task("Nations Dump Processing")
    hold = bytearray(64 * 1024 * 1024)  # RSS the run state records (sampler, every 0.1 s)
    for i in range(0, len(hold), 4096):
        hold[i] = 1
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)


def _start_and_return(log_dir: Path) -> None:
    time.sleep(0.3)


def _dead_run_lines(log_dir: Path) -> list[str]:
    return [
        line
        for line in _lines(log_dir)
        if (parsed := parse_line(line)) is not None
        and parsed.marker is Marker.CHECK
        and parsed.name.startswith("Previous Run Died")
    ]


def test_a_killed_worker_is_reported_once_by_the_next_worker(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="otel_memory")
    log_dir = tmp_path / "logs"
    otel_memory.start(_config(log_dir, interval=60))
    victim = _FORK.Process(target=_die_in_task, args=(log_dir,))
    victim.start()
    victim.join(30)
    assert victim.exitcode == -signal.SIGKILL
    assert len(_state_files(log_dir)) == 2  # the master's and the dead worker's

    for _ in range(2):  # the replacement reports it; the one after finds nothing left
        replacement = _FORK.Process(target=_start_and_return, args=(log_dir,))
        replacement.start()
        replacement.join(30)
        assert replacement.exitcode == 0

    died = _dead_run_lines(log_dir)
    assert len(died) == 1, died
    assert "Previous Run Died (unknown) during Nations Dump Processing" in died[0]
    parsed = parse_line(died[0])
    assert parsed is not None and parsed.rss_mb > 0
    assert len(_state_files(log_dir)) == 1  # the master's alone
    # The master itself never reports its own workers: its start() came before they died.
    assert not [r for r in caplog.records if "previous run" in r.getMessage()]


def test_a_worker_that_returns_is_never_reported(tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(_config(log_dir, interval=60))
    for _ in range(3):
        worker = _FORK.Process(target=_start_and_return, args=(log_dir,))
        worker.start()
        worker.join(30)
        assert worker.exitcode == 0
    otel_memory.stop()
    otel_memory.start(_config(log_dir, interval=60))
    otel_memory.stop()
    assert _dead_run_lines(log_dir) == []
    assert _state_files(log_dir) == []


def test_tasks_of_a_worker_reach_the_shared_daily_log(tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(_config(log_dir, interval=60))

    def work() -> None:
        set_active_task(f"job {os.getpid()}")
        clear_active_task(f"done {os.getpid()}")

    workers = [_FORK.Process(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    lines = _lines(log_dir)
    for worker in workers:
        assert any(f"TASK START [job {worker.pid}]" in line for line in lines)
        assert any(f"TASK END [done {worker.pid}]" in line for line in lines)


def _report_open_tasks(results) -> None:
    from otel_memory.runtime import get_runtime

    results.put([task.name for task in get_runtime().open_tasks.snapshot()])


def test_a_worker_does_not_inherit_the_parents_open_tasks(tmp_path):
    otel_memory.start(_config(tmp_path / "logs", interval=60))
    results = _FORK.Queue()
    set_active_task("Parent Job")
    try:
        worker = _FORK.Process(target=_report_open_tasks, args=(results,))
        worker.start()
        inherited = results.get(timeout=30)
        worker.join(30)
    finally:
        clear_active_task("Parent Job Done")
    assert inherited == []  # its --- lines and peaks are its own
    lines = _lines(tmp_path / "logs")
    assert sum("TASK END [Parent Job Done]" in line for line in lines) == 1


# --------------------------------------------------------------------------- one shared log


def _line(clock: str, marker: str, name: str, rss: float, pid: int | None) -> str:
    tail = "" if pid is None else f" | PID: {pid}"
    return (
        f"2025-11-16 08:{clock} {marker} [{name}] | RSS: {rss:6.1f} MB | VMS:  900.0 MB "
        f"| System Available: 1000.0 MB (50.0% free){tail}\n"
    )


def test_the_analyzer_pairs_each_processs_lines_with_its_own(tmp_path, capsys):
    import json

    from otel_memory.cli import main

    # Two workers run "Job" at once: worker 1 grows by 50 MB, worker 2 by 10 MB. Paired by
    # name and order alone, worker 1's START would end at worker 2's END.
    log = tmp_path / "memory_20251116.log"
    log.write_text(
        _line("00:00", "---", "Monitor Started", 100.0, None)
        + _line("00:01", ">>> TASK START", "Job", 100.0, 11)
        + _line("00:02", ">>> TASK START", "Job", 200.0, 22)
        + _line("00:03", "<<< TASK END", "Job", 150.0, 11)
        + _line("00:04", "<<< TASK END", "Job", 210.0, 22)
    )
    assert main(["analyze", "--json", str(log)]) == 0
    (job,) = [t for t in json.loads(capsys.readouterr().out)["tasks"] if t["task"] == "Job"]
    assert job["runs"] == 2
    assert job["delta_max_mb"] == 50.0
    assert job["delta_avg_mb"] == 30.0

    from otel_memory.base.logline import parse_line
    from otel_memory.cli.taskruns import pair_runs

    runs = pair_runs(parse_line(line) for line in log.read_text().splitlines())
    assert sorted(r.end_rss_mb - r.start_rss_mb for r in runs) == [10.0, 50.0]


def _worker_runs(count: int, grow_mb: int) -> None:
    for _ in range(count):
        set_active_task("Job")
        held = bytearray(grow_mb * 1024 * 1024)
        held[:: 4096] = b"x" * len(range(0, len(held), 4096))  # resident: the END reads it
        clear_active_task("Job")
        del held
        time.sleep(0.002)


def test_two_workers_share_the_daily_log_and_each_run_keeps_its_true_delta(tmp_path):
    log_dir = tmp_path / "logs"
    otel_memory.start(_config(log_dir, interval=60))
    runs = int(os.environ.get("OTEL_MEMORY_WORKER_RUNS", "200"))  # the goal: 1,000
    workers = [_FORK.Process(target=_worker_runs, args=(runs, mb)) for mb in (40, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    otel_memory.stop()

    lines = _lines(log_dir)
    parsed = [parse_line(line) for line in lines]
    assert None not in parsed  # every line whole
    for worker in workers:
        mine = [p for p in parsed if p.pid == worker.pid]
        assert sum(p.marker is Marker.START for p in mine) == runs
        assert sum(p.marker is Marker.END for p in mine) == runs
    # The master's own lines are the single-process format, byte for byte (no pid).
    assert all(p.pid is None for p in parsed if p.name in ("Monitor Started", "Monitor Stopped"))

    from otel_memory.cli.taskruns import pair_runs

    by_delta = sorted(r.end_rss_mb - r.start_rss_mb for r in pair_runs(parsed))
    assert len(by_delta) == 2 * runs
    small, large = by_delta[:runs], by_delta[runs:]
    assert max(small) < 20 and min(large) > 30  # each run paired with its own worker's END


def _crossings_in_worker(results) -> None:
    caught: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())

    logging.getLogger("otel_memory").addHandler(Catch())
    set_active_task("Worker Job")  # a reading: the worker's own RSS is above 1 MB
    clear_active_task()
    api.flush()
    results.put([message for message in caught if "rss_warning crossed" in message])


def test_a_worker_checks_its_own_thresholds(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="otel_memory")
    keys = {
        "log_dir": str(tmp_path / "logs"), "interval_seconds": 60, "export_logs": "none",
        "thresholds": {"rss_warning_mb": 1, "rss_critical_mb": 100_000},
    }  # fmt: skip
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}}))
    api.flush()
    assert [r for r in caplog.records if "rss_warning crossed" in r.getMessage()]  # the parent
    results = _FORK.Queue()
    worker = _FORK.Process(target=_crossings_in_worker, args=(results,))
    worker.start()
    crossed = results.get(timeout=30)
    worker.join(30)
    assert len(crossed) == 1, crossed  # its own crossing, not silenced by the parent's


def _spike_in_worker(span_exporter, results) -> None:
    """In a forked worker: a 150 MB spike inside a task; its span's peak and events."""
    from otel_memory import traced_task
    from otel_memory.base import attributes as attr

    span_exporter.clear()
    with traced_task("spike"):
        block = bytearray(150 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
        time.sleep(0.5)  # a few sampler periods (100 ms): the worker's own sampler sees it
        del block
    (span,) = span_exporter.get_finished_spans()
    growth = span.attributes[attr.RSS_PEAK] - span.attributes[attr.RSS_START]
    results.put((growth, [event.name for event in span.events]))


def test_a_forked_workers_own_sampler_and_thresholds_see_its_spike(tmp_path, span_exporter):
    import psutil

    log_dir = tmp_path / "logs"
    rss_mb = psutil.Process().memory_info().rss / (1024 * 1024)
    keys = {
        "log_dir": str(log_dir),
        "interval_seconds": 60,
        "export_logs": "none",
        # Crossed only by the worker's spike, never by the master before the fork.
        "thresholds": {"rss_warning_mb": round(rss_mb + 80), "rss_critical_mb": 100000},
    }
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}}))
    results = _FORK.Queue()
    worker = _FORK.Process(target=_spike_in_worker, args=(span_exporter, results))
    worker.start()
    growth, events = results.get(timeout=30)
    worker.join(30)
    assert worker.exitcode == 0
    assert growth >= 140 * 1024 * 1024  # the peak between START and END reads: the sampler's
    assert any("threshold" in name for name in events), events


def _limits_reading():
    from otel_memory.kernel.limits import CgroupMemory

    limits = CgroupMemory()
    return limits, lambda: limits.effective(1 << 30, 1 << 30)


def _warn_once():
    from otel_memory.base.diagnostics import WarnOnce

    warn = WarnOnce()
    return warn, lambda: warn("key", "otel_memory: test %s", "message")


@pytest.mark.parametrize("make", [_limits_reading, _warn_once], ids=["cgroup limits", "warn once"])
def test_a_lock_held_by_another_thread_at_the_fork_never_blocks_the_child(make):
    owner, use = make()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with owner._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the lock it inherited is held by a thread it does not have
            try:
                use()
            finally:
                os._exit(0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child blocked on a lock another thread held at the fork")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join()
