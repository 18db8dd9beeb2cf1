"""An OOM kill, and what the next start says about it.

    sudo python examples/oom_demo.py                 # 128 MB cgroup, logs in logs/
    sudo python examples/oom_demo.py --limit-mb 96 --log-dir /tmp/oom-logs

A service process runs "Nations Dump Processing" inside a memory cgroup limited to
``--limit-mb`` and allocates until the kernel's OOM killer ends it with SIGKILL: no ``stop()``,
no exception, no last log line. The next start of the service (``otel_memory.start()`` with the
same ``log_dir``) finds the state the dead process left in ``logs/.otel-memory/``, sees that the
cgroup's OOM-kill count rose during that run, and reports it once: a ``---`` line in the daily
log, ``Previous Run Died (oom_kill) during Nations Dump Processing``, and the
``otel_memory.previous_run`` event (pid, last task, last RSS, last time, cause).

Creating the cgroup needs root and a writable cgroup v1 memory hierarchy
(``/sys/fs/cgroup/memory``); elsewhere the demo explains why it cannot run and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import otel_memory
from otel_memory.guards.lastrun import RunState, claim_dead_runs
from otel_memory.kernel.readings import PsutilReadingSource

V1_MEMORY = "/sys/fs/cgroup/memory"
TASK = "Nations Dump Processing"
MB = 1024 * 1024


def victim(cgroup: str, log_dir: str) -> None:
    """The service: joins the cgroup, starts the monitor, runs the task, allocates until killed."""
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as file:
        file.write(str(os.getpid()))
    os.environ["OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR"] = log_dir
    otel_memory.start()
    otel_memory.set_active_task(TASK)
    state = None
    if not glob.glob(os.path.join(log_dir, ".otel-memory", f"run-*-{os.getpid()}.json")):
        # This otel_memory.start() does not keep run state yet: keep it here, as it would.
        state = RunState(log_dir)
        state.begin()
    source = PsutilReadingSource()
    ballast = []
    while True:
        rss = source.read_rss()
        if state is not None:
            state.update(TASK, rss, time.time())
        print(f"  [pid {os.getpid()}] {TASK}: RSS {rss / MB:6.1f} MB", flush=True)
        ballast.append(bytearray(8 * MB))
        time.sleep(0.05)


def next_start(log_dir: str) -> None:
    """The service's next start: what it reports about the run that died."""
    os.environ["OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR"] = log_dir
    events: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "previous_run" in json.dumps({k: str(v) for k, v in vars(record).items()}):
                events.append(record)

    logging.getLogger("otel_memory").addHandler(Keep())
    otel_memory.start()
    otel_memory.stop()
    lines = [
        line.rstrip("\n")
        for path in sorted(Path(log_dir).glob("memory_*.log"))
        for line in path.open()
        if "Previous Run Died" in line
    ]
    if lines or events:
        print("daily log:")
        for line in lines:
            print(f"  {line}")
        for record in events:
            attributes = {k: v for k, v in vars(record).items() if k.startswith("otel_memory.")}
            print(f"event {record.getMessage()!r}:")
            for key, value in sorted(attributes.items()):
                print(f"  {key} = {value}")
        return
    # otel_memory.start() does not report dead runs yet: ask the detector it will use.
    print("otel_memory.start() reported nothing; lastrun.claim_dead_runs() finds:")
    for run in claim_dead_runs(log_dir):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.last_seen))
        print(f"  --- [Previous Run Died ({run.cause}) during {run.last_task}]")
        print(f"  pid {run.pid}, last RSS {run.last_rss / MB:.1f} MB, last seen {when}")


def make_cgroup(limit: int) -> str | None:
    """A limited v1 memory cgroup, or None after saying why there cannot be one."""
    if os.geteuid() != 0:
        print("This demo creates a memory cgroup, which needs root: run it with sudo.")
        return None
    if not os.path.isfile(os.path.join(V1_MEMORY, "memory.limit_in_bytes")):
        print(
            f"No writable cgroup v1 memory hierarchy at {V1_MEMORY}. On a cgroup v2 host, run it "
            "in a container started with a limit instead (docker run --memory 128m ...)."
        )
        return None
    path = os.path.join(V1_MEMORY, f"otel-memory-demo-{os.getpid()}")
    try:
        os.mkdir(path)
        Path(path, "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        print(f"Cannot create a limited cgroup at {path}: {exc}")
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None
    with contextlib.suppress(OSError):  # with swap, the child would page instead of dying
        Path(path, "memory.memsw.limit_in_bytes").write_text(str(limit))
    return path


def remove_cgroup(path: str) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            for pid in Path(path, "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--limit-mb", type=int, default=128, help="the cgroup's limit (128)")
    parser.add_argument("--log-dir", default="logs", help="the monitor's log_dir (logs)")
    parser.add_argument("--victim", metavar="CGROUP", help=argparse.SUPPRESS)
    parser.add_argument("--next-start", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    log_dir = os.path.abspath(args.log_dir)
    if args.victim:
        victim(args.victim, log_dir)
        return 0
    if args.next_start:
        next_start(log_dir)
        return 0

    cgroup = make_cgroup(args.limit_mb * MB)
    if cgroup is None:
        return 0
    me = [sys.executable, os.path.abspath(__file__), "--log-dir", log_dir]
    try:
        print(f"1. {TASK} in cgroup {cgroup} (limit {args.limit_mb} MB), allocating 8 MB steps:")
        died = subprocess.run([*me, "--victim", cgroup], check=False)
        oom = Path(cgroup, "memory.oom_control").read_text().split()[-1]
        how = "SIGKILL" if died.returncode == -signal.SIGKILL else f"exit {died.returncode}"
        print(f"   the service died: {how}; the cgroup's oom_kill count is {oom}")
        print("2. The service starts again with the same log_dir:")
        # Before the cgroup is removed: its OOM-kill count is how the cause is known.
        subprocess.run([*me, "--next-start"], check=False)
    finally:
        remove_cgroup(cgroup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
