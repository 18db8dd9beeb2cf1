"""A real OOM kill: a child inside a limited cgroup v1 allocates until the kernel kills it.

The child runs the public API (``otel_memory.start()`` + ``set_active_task``) when ``start()``
keeps run state (the monitor's wiring of :mod:`otel_memory.guards.lastrun`); otherwise it drives
:class:`~otel_memory.guards.lastrun.RunState` itself, as the monitor's background thread would.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cgroups import limited_cgroup

from otel_memory.guards.lastrun import STATE_DIR, claim_dead_runs

MB = 1024 * 1024
LIMIT = 128 * MB
TASK = "Nations Dump Processing"

# argv: cgroup dir, log_dir. Prints "mode public|direct", then every RSS it records, then dies.
VICTIM = """
import glob, json, os, sys, time
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as file:
    file.write(str(os.getpid()))   # join first: what we import counts against the limit
log_dir = sys.argv[2]
os.environ["OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR"] = log_dir
import otel_memory
from otel_memory.guards.lastrun import RunState
from otel_memory.kernel.readings import PsutilReadingSource

source = PsutilReadingSource()
otel_memory.start()
own = glob.glob(os.path.join(log_dir, ".otel-memory", f"run-*-{os.getpid()}.json"))
if own:
    print("mode public", flush=True)
    otel_memory.set_active_task(TASK)
    deadline = time.monotonic() + 20
    while json.loads(open(own[0]).read())["last_task"] != TASK:
        assert time.monotonic() < deadline, "the monitor never recorded the task"
        time.sleep(0.01)
    record = lambda rss: None   # the monitor's sampler records the RSS
else:
    print("mode direct", flush=True)
    state = RunState(log_dir)
    state.begin()
    record = lambda rss: state.update(TASK, rss, time.time())
ballast = []
while True:
    rss = source.read_rss()
    print(rss, flush=True)      # printed before it is recorded: every recorded value is printed
    record(rss)
    ballast.append(bytearray(4 * 1024 * 1024))
    time.sleep(0.02)            # slow enough for a 100 ms sampler to see the growth
""".replace("TASK", repr(TASK))

# argv: log_dir. The next start of the service, under the public API.
NEXT_START = """
import json, logging, os, sys
os.environ["OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR"] = sys.argv[1]
import otel_memory

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append({k: str(v) for k, v in vars(record).items()})
logging.getLogger("otel_memory").addHandler(Keep())
otel_memory.start()
otel_memory.stop()
print(json.dumps([r for r in records if "previous_run" in json.dumps(r)]))
"""


def run_victim(cgroup: str, log_dir: Path) -> tuple[str, list[int], int, int]:
    """Run the victim to its death: (mode, RSS values it printed, pid, return code)."""
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, cgroup, str(log_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = victim.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        victim.kill()
        raise
    lines = out.split()
    assert lines[:1] == ["mode"], err
    return lines[1], [int(value) for value in lines[2:]], victim.pid, victim.returncode


def oom_kills(cgroup: str) -> int:
    with open(os.path.join(cgroup, "memory.oom_control")) as file:
        return int(dict(line.split() for line in file)["oom_kill"])


def test_an_oom_killed_run_is_reported_by_the_next_start(tmp_path: Path) -> None:
    with limited_cgroup(LIMIT) as cgroup:
        mode, printed, pid, returncode = run_victim(cgroup, tmp_path)
        assert returncode == -signal.SIGKILL
        assert oom_kills(cgroup) >= 1, "the kernel did not OOM-kill the child"
        assert len(printed) >= 2, "the child died before allocating: the limit is too small"
        assert glob.glob(str(tmp_path / STATE_DIR / f"run-*-{pid}.json"))

        # The report must be made while the dead run's cgroup (and its OOM count) still exists.
        if mode == "public":
            first = subprocess.run(
                [sys.executable, "-c", NEXT_START, str(tmp_path)],
                check=True,
                capture_output=True,
                text=True,
            )
            second = subprocess.run(
                [sys.executable, "-c", NEXT_START, str(tmp_path)],
                check=True,
                capture_output=True,
                text=True,
            )
        else:
            dead = claim_dead_runs(tmp_path)
            again = claim_dead_runs(tmp_path)

    if mode == "public":
        (event,) = json.loads(first.stdout)
        flat = json.dumps(event)
        assert str(pid) in flat and TASK in flat and "oom_kill" in flat
        assert json.loads(second.stdout) == []
        lines = "".join(path.read_text() for path in tmp_path.glob("memory_*.log"))
        assert lines.count(f"--- [Previous Run Died (oom_kill) during {TASK}]") == 1
        last_rss = event.get("otel_memory.previous_run.last_rss")
        # The sampler saw the growth: the last RSS is well above the ~30 MB the child started at.
        assert last_rss is None or int(last_rss) > 60 * MB
        return
    (run,) = dead
    assert again == []
    assert (run.pid, run.last_task, run.cause) == (pid, TASK, "oom_kill")
    # The last RSS the child recorded: its last printed value, or the one before when it died
    # between printing a value and recording it.
    assert run.last_rss in printed[-2:]
    assert run.last_rss > 60 * MB  # RSS may exceed the limit: shared pages are charged elsewhere
    assert not list((tmp_path / STATE_DIR).iterdir())
