"""Runs that died: real child processes killed, forked, stopped cleanly, starting together."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otel_memory.base.diagnostics import WarnOnce
from otel_memory.guards.lastrun import STATE_DIR, DeadRun, RunState, claim_dead_runs

MB = 1024 * 1024

# A child that begins, records a task, says "ready" and waits; argv: log_dir, counter file, mode.
CHILD = """
import sys, time
from otel_memory.guards.lastrun import RunState
log_dir, counter, mode = sys.argv[1], sys.argv[2], sys.argv[3]
state = RunState(log_dir, oom_kill_files=[counter] if counter else [])
dead = state.begin()
state.update("Nations Dump Download", 123 * 1024 * 1024, 1700000000.5)
if mode == "clean":
    state.end()
print("ready", len(dead), flush=True)
if mode == "wait":
    time.sleep(60)
"""


def spawn(log_dir: Path, counter: Path | None = None, mode: str = "wait") -> subprocess.Popen[str]:
    """Start a child that has begun and updated its run state, and wait until it says so."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(log_dir), str(counter or ""), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().startswith("ready")
    return child


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def state_files(log_dir: Path) -> list[str]:
    return sorted(os.listdir(log_dir / STATE_DIR))


def counter_file(tmp_path: Path, name: str, count: int) -> Path:
    path = tmp_path / name
    path.write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {count}\n")
    return path


def test_a_killed_run_is_reported_once_with_cause_unknown(tmp_path: Path) -> None:
    counter = counter_file(tmp_path, "oom_control", 4)
    child = spawn(tmp_path, counter)
    kill(child)

    first = RunState(tmp_path, oom_kill_files=[str(counter)])
    second = RunState(tmp_path, oom_kill_files=[str(counter)])

    assert first.begin() == [
        DeadRun(child.pid, "Nations Dump Download", 123 * MB, 1700000000.5, "unknown")
    ]
    assert second.begin() == []
    first.end()
    second.end()


def test_detection_alone_reports_once_and_writes_nothing(tmp_path: Path) -> None:
    child = spawn(tmp_path)
    kill(child)

    first = claim_dead_runs(tmp_path)
    second = claim_dead_runs(tmp_path)

    assert [run.pid for run in first] == [child.pid]
    assert second == []
    assert state_files(tmp_path) == []


def test_an_unreaped_zombie_counts_as_dead(tmp_path: Path) -> None:
    child = spawn(tmp_path)
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)

    dead = claim_dead_runs(tmp_path)

    kill(child)
    assert [run.pid for run in dead] == [child.pid]


def test_cause_is_oom_kill_when_the_counter_rose_after_the_last_update(tmp_path: Path) -> None:
    counter = counter_file(tmp_path, "memory.events", 4)
    child = spawn(tmp_path, counter)
    counter_file(tmp_path, "memory.events", 5)  # the kernel counts the kill...
    kill(child)  # ...and the process is gone

    (dead,) = claim_dead_runs(tmp_path)

    assert (dead.pid, dead.cause) == (child.pid, "oom_kill")


def test_a_recreated_cgroup_defers_to_the_hosts_counter(tmp_path: Path) -> None:
    # A container restarted after an OOM kill gets a new cgroup whose counts start at zero.
    cgroup = counter_file(tmp_path, "memory.events", 4)
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("pgfault 1\noom_kill 10\npgmajfault 2\n")
    state = RunState(tmp_path, oom_kill_files=[str(cgroup), str(vmstat)])
    assert state.begin() == []
    state_file = tmp_path / STATE_DIR / os.listdir(tmp_path / STATE_DIR)[0]
    assert json.loads(state_file.read_text())["oom"] == [[str(cgroup), 4], [str(vmstat), 10]]
    # Pretend this record is a dead process's: another pid nobody runs (pid_max is below 2**22).
    record = json.loads(state_file.read_text())
    dead_name = state_file.name.rsplit("-", 1)[0] + "-4194999.json"
    (state_file.parent / dead_name).write_text(json.dumps(record))

    counter_file(tmp_path, "memory.events", 0)
    vmstat.write_text("pgfault 1\noom_kill 11\npgmajfault 2\n")
    (dead,) = claim_dead_runs(tmp_path)

    assert (dead.pid, dead.cause) == (4194999, "oom_kill")
    state.end()


def test_an_unchanged_counter_with_a_risen_host_counter_is_unknown(tmp_path: Path) -> None:
    # The cgroup still exists and saw no kill: another container's OOM on the host is not ours.
    cgroup = counter_file(tmp_path, "memory.events", 4)
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("oom_kill 10\n")
    child = spawn(tmp_path, cgroup)
    kill(child)
    vmstat.write_text("oom_kill 11\n")

    (dead,) = claim_dead_runs(tmp_path)

    assert dead.cause == "unknown"


def test_a_clean_end_leaves_nothing_to_report(tmp_path: Path) -> None:
    child = spawn(tmp_path, mode="clean")
    child.wait()
    assert child.stdout is not None
    child.stdout.close()

    assert state_files(tmp_path) == []
    assert claim_dead_runs(tmp_path) == []


def test_live_processes_sharing_a_log_dir_do_not_report_each_other(tmp_path: Path) -> None:
    first = spawn(tmp_path)
    second = spawn(tmp_path)
    try:
        ours = RunState(tmp_path, oom_kill_files=[])
        assert ours.begin() == []  # begin() both detects and writes our own file
        assert len(state_files(tmp_path)) == 3
        ours.end()
    finally:
        kill(first)
        kill(second)
    assert {run.pid for run in claim_dead_runs(tmp_path)} == {
        first.pid,
        second.pid,
    }


def test_a_forked_child_keeps_its_own_state(tmp_path: Path) -> None:
    parent = RunState(tmp_path, oom_kill_files=[])
    assert parent.begin() == []
    parent.update("Parent Task", 10 * MB, 1700000001.0)
    parent_file = parent.path
    assert parent_file is not None

    pid = os.fork()
    if pid == 0:
        try:
            parent.update("Child Before Begin", 1, 1.0)  # must not write over the parent's file
            parent.begin()
            parent.update("Child Task", 20 * MB, 1700000002.0)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)

    dead = claim_dead_runs(tmp_path)

    assert dead == [DeadRun(pid, "Child Task", 20 * MB, 1700000002.0, "unknown")]
    assert json.loads(Path(parent_file).read_text())["last_task"] == "Parent Task"
    parent.end()
    assert state_files(tmp_path) == []


def test_a_reused_pid_is_a_dead_run(tmp_path: Path) -> None:
    # GIVEN a record left by a process that had our pid before us (another start time)
    state = RunState(tmp_path, oom_kill_files=[])
    state.begin()
    assert state.path is not None
    path = Path(state.path)
    record = json.loads(path.read_text())
    state.end()
    record["marker"] += "0"
    record["last_task"] = "Before Reboot"
    path.write_text(json.dumps(record))

    # WHEN this process begins THEN that run is reported and our own file replaces it
    (dead,) = state.begin()
    assert (dead.pid, dead.last_task) == (os.getpid(), "Before Reboot")
    assert json.loads(path.read_text())["last_task"] == "Idle"
    state.end()


# A child killed while it writes its state file: before the rename that puts it in place.
KILLED_WHILE_WRITING = """
import os, sys, time
from otel_memory.guards.lastrun import RunState


def stuck(source, target):
    print("ready", flush=True)
    time.sleep(60)


os.rename = stuck
RunState(sys.argv[1], oom_kill_files=[]).begin()
"""


def test_a_state_file_never_put_in_place_is_swept_once_its_writer_is_gone(tmp_path: Path) -> None:
    # GIVEN a process killed after it wrote its temporary state file, before the rename
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WHILE_WRITING, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    (temporary,) = state_files(tmp_path)
    assert temporary.endswith(".tmp") and f"-{child.pid}.json." in temporary
    live = tmp_path / STATE_DIR / temporary.replace(f"-{child.pid}.", f"-{os.getpid()}.")
    live.write_text("")  # and a live writer's, mid-write
    kill(child)

    # WHEN the next start looks THEN the dead writer's half-made file goes, unreported
    assert claim_dead_runs(tmp_path) == []
    assert state_files(tmp_path) == [live.name]


def test_runs_of_another_host_are_left_alone(tmp_path: Path) -> None:
    other = tmp_path / STATE_DIR / "run-elsewhere-4194999.json"
    other.parent.mkdir()
    other.write_text('{"pid": 4194999, "marker": "x", "last_task": "There"}')

    assert claim_dead_runs(tmp_path) == []
    assert other.exists()


START_TOGETHER = """
import json, os, sys, time
from otel_memory.guards.lastrun import RunState
state = RunState(sys.argv[1], oom_kill_files=[])
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
print(json.dumps([run.pid for run in state.begin()]))
state.end()
"""


def test_processes_starting_together_claim_each_dead_run_once(tmp_path: Path) -> None:
    children = [spawn(tmp_path) for _ in range(4)]
    for child in children:
        kill(child)
    dead_pids = {child.pid for child in children}
    go = tmp_path / "go"
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, str(tmp_path), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.0)  # let them all import and reach the wait
    go.touch()
    reported = [pid for starter in starters for pid in json.loads(starter.communicate()[0])]

    assert sorted(reported) == sorted(dead_pids)
    assert state_files(tmp_path) == []


def test_an_unusable_log_dir_means_no_detection_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "logs"
    not_a_dir.write_text("a file where the log directory should be")
    caplog.set_level(logging.WARNING, logger="otel_memory")
    warn_once = WarnOnce()  # the runtime's, shared by every run state it opens

    for _ in range(2):
        state = RunState(not_a_dir, oom_kill_files=[], warn_once=warn_once)
        assert state.begin() == []
        state.update("Task", 1, 1.0)
        state.end()

    warnings = [record for record in caplog.records if "run state" in record.getMessage()]
    assert len(warnings) == 1


def test_long_and_odd_task_names_keep_the_record_whole(tmp_path: Path) -> None:
    state = RunState(tmp_path, oom_kill_files=[])
    state.begin()
    assert state.path is not None
    for name in ["x" * 10_000, "\ud800 lone\x00", "\U0001f600" * 5000, "short"]:
        state.update(name, 5, 2.0)
        record = json.loads(Path(state.path).read_text())
        assert record["last_task"] == name[:256]
        assert os.path.getsize(state.path) == 4096
    state.end()
