"""The effective memory limit: fake cgroup trees on disk, a fork, and a real limited cgroup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cgroups import limited_cgroup

from otel_memory.kernel.limits import CgroupMemory, read_oom_kill

MB = 1024 * 1024
GB = 1024 * MB
HOST_TOTAL = 2 * GB
HOST_AVAILABLE = 1 * GB
V1_UNLIMITED = "9223372036854771712"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_proc(tmp_path: Path, cgroup_lines: str | None) -> Path:
    """A fake ``/proc``: meminfo, vmstat, and ``self/cgroup`` when given."""
    proc = tmp_path / "proc"
    write(proc, "meminfo", f"MemTotal: {HOST_TOTAL // 1024} kB\nMemAvailable: 1048576 kB\n")
    write(proc, "vmstat", "pgfault 12\noom_kill 7\n")
    if cgroup_lines is not None:
        write(proc, "self/cgroup", textwrap.dedent(cgroup_lines).lstrip())
    return proc


def make_v2(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake pure cgroup v2 mount."""
    root = tmp_path / "cgroup"
    write(root, "cgroup.controllers", "cpu memory pids\n")
    for relative, text in files.items():
        write(root, relative, text)
    return root


def cgroup_memory(proc: Path, root: Path, clock: Clock | None = None) -> CgroupMemory:
    return CgroupMemory(str(proc), str(root), clock=clock or Clock())


def test_v2_nested_limits_the_smallest_wins_and_max_is_ignored(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app/worker\n")
    root = make_v2(
        tmp_path,
        {
            "app/memory.max": f"{300 * MB}\n",
            "app/memory.high": "max\n",
            "app/memory.current": f"{100 * MB}\n",
            "app/worker/memory.max": "max\n",
            "app/worker/memory.high": "max\n",
            "app/worker/memory.current": f"{80 * MB}\n",
        },
    )

    available, limit, source = cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL)

    # The limit sits on the parent, so the room is the parent's limit minus the parent's usage.
    assert (available, limit, source) == (200 * MB, 300 * MB, "cgroup_v2")


def test_v2_memory_high_counts_as_a_limit(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app/worker\n")
    root = make_v2(
        tmp_path,
        {
            "app/memory.max": f"{300 * MB}\n",
            "app/memory.current": f"{100 * MB}\n",
            "app/worker/memory.max": "max\n",
            "app/worker/memory.high": f"{200 * MB}\n",
            "app/worker/memory.current": f"{150 * MB}\n",
        },
    )

    available, limit, source = cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL)

    assert (available, limit, source) == (50 * MB, 200 * MB, "cgroup_v2")


def test_v2_without_limits_or_with_limits_above_the_host_is_the_host(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app\n")
    root = make_v2(
        tmp_path,
        {"app/memory.max": "max\n", "memory.max": f"{3 * GB}\n", "app/memory.current": "0"},
    )

    assert cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL) == (
        HOST_AVAILABLE,
        HOST_TOTAL,
        "host",
    )


def test_host_available_caps_the_room_under_the_limit(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app\n")
    root = make_v2(tmp_path, {"app/memory.max": f"{GB}\n", "app/memory.current": f"{10 * MB}\n"})

    assert cgroup_memory(proc, root).effective(400 * MB, HOST_TOTAL) == (400 * MB, GB, "cgroup_v2")


def test_usage_above_the_limit_gives_zero_available(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app\n")
    root = make_v2(
        tmp_path, {"app/memory.high": f"{100 * MB}\n", "app/memory.current": f"{120 * MB}\n"}
    )

    assert cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL)[0] == 0


def test_v1_limits_up_to_the_root_with_unlimited_ignored(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    root = tmp_path / "cgroup"
    write(root, "memory/memory.limit_in_bytes", V1_UNLIMITED)
    write(root, "memory/docker/memory.limit_in_bytes", f"{512 * MB}")
    write(root, "memory/docker/memory.usage_in_bytes", f"{400 * MB}")
    write(root, "memory/docker/abc/memory.limit_in_bytes", f"{256 * MB}")
    write(root, "memory/docker/abc/memory.usage_in_bytes", f"{56 * MB}")
    write(
        root,
        "memory/docker/abc/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )

    cgroup = cgroup_memory(proc, root)

    # 256 MB - 56 MB = 200 MB at the leaf, but the parent has only 512 - 400 = 112 MB left.
    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL) == (112 * MB, 256 * MB, "cgroup_v1")
    assert cgroup.oom_kill_count() == 3
    assert cgroup.oom_kill_files() == (
        str(root / "memory/docker/abc/memory.oom_control"),
        str(proc / "vmstat"),
    )


def test_v1_hierarchy_shared_with_other_controllers(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "2:cpu,memory:/job\n")
    root = tmp_path / "cgroup"
    write(root, "cpu,memory/job/memory.limit_in_bytes", f"{128 * MB}")
    write(root, "cpu,memory/job/memory.usage_in_bytes", f"{28 * MB}")

    assert cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL) == (
        100 * MB,
        128 * MB,
        "cgroup_v1",
    )


def test_hybrid_takes_limits_from_v1_and_pressure_from_unified(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "4:memory:/svc\n0::/svc\n")
    root = tmp_path / "cgroup"
    write(root, "memory/svc/memory.limit_in_bytes", f"{256 * MB}")
    write(root, "memory/svc/memory.usage_in_bytes", f"{6 * MB}")
    write(root, "unified/cgroup.controllers", "")
    write(
        root,
        "unified/svc/memory.pressure",
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=99\nfull avg10=1.00 avg60=0 avg300=0 total=9\n",
    )

    cgroup = cgroup_memory(proc, root)

    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL) == (250 * MB, 256 * MB, "cgroup_v1")
    assert cgroup.pressure_avg10() == 12.5


def test_container_mount_is_the_leaf_without_a_cgroup_namespace(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path, but the container sees its own cgroup as the root.
    proc = make_proc(tmp_path, "0::/system.slice/docker-abc.scope\n")
    root = make_v2(tmp_path, {"memory.max": f"{64 * MB}\n", "memory.current": f"{4 * MB}\n"})

    assert cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL) == (
        60 * MB,
        64 * MB,
        "cgroup_v2",
    )


def test_no_cgroup_file_or_no_mount_is_the_host(tmp_path: Path) -> None:
    no_file = cgroup_memory(make_proc(tmp_path / "a", None), tmp_path / "a" / "cgroup")
    no_mount = cgroup_memory(make_proc(tmp_path / "b", "0::/app\n"), tmp_path / "b" / "missing")

    for cgroup in (no_file, no_mount):
        assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL) == (HOST_AVAILABLE, HOST_TOTAL, "host")
        assert cgroup.pressure_avg10() is None
        # Without a cgroup, the host's count is the only account of OOM kills.
        assert cgroup.oom_kill_count() == 7


def test_unreadable_files_fall_back(tmp_path: Path) -> None:
    # Directories where files should be: reading them fails even for root.
    proc = make_proc(tmp_path, "0::/app/worker\n")
    root = make_v2(
        tmp_path, {"app/memory.max": f"{300 * MB}\n", "app/memory.events": "oom_kill x\n"}
    )
    (root / "app/memory.current").mkdir()
    (root / "app/worker/memory.max").mkdir(parents=True)
    (root / "app/worker/memory.pressure").mkdir()

    cgroup = cgroup_memory(proc, root)

    # The limit still applies; with no usage, it alone caps the available.
    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL) == (300 * MB, 300 * MB, "cgroup_v2")
    assert cgroup.pressure_avg10() is None
    assert cgroup.oom_kill_files() == (str(proc / "vmstat"),)


def test_unreadable_proc_cgroup_is_the_host(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, None)
    (proc / "self/cgroup").mkdir(parents=True)
    root = make_v2(tmp_path, {"memory.max": f"{64 * MB}\n"})

    assert cgroup_memory(proc, root).effective(HOST_AVAILABLE, HOST_TOTAL)[2] == "host"


def test_usage_is_read_every_time_and_limits_only_after_the_refresh(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app\n")
    root = make_v2(tmp_path, {"app/memory.max": f"{300 * MB}\n", "app/memory.current": f"{MB}"})
    clock = Clock()
    cgroup = cgroup_memory(proc, root, clock)
    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL) == (299 * MB, 300 * MB, "cgroup_v2")

    (root / "app/memory.current").write_text(f"{100 * MB}")
    (root / "app/memory.max").write_text(f"{200 * MB}")
    clock.now += 4.9
    before_refresh = cgroup.effective(HOST_AVAILABLE, HOST_TOTAL)
    clock.now += 0.2
    after_refresh = cgroup.effective(HOST_AVAILABLE, HOST_TOTAL)

    assert before_refresh == (200 * MB, 300 * MB, "cgroup_v2")
    assert after_refresh == (100 * MB, 200 * MB, "cgroup_v2")
    cgroup.close()
    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL) == (100 * MB, 200 * MB, "cgroup_v2")


def test_oom_kill_count_and_pressure_from_v2(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/app\n")
    write(proc, "pressure/memory", "some avg10=0.50 avg60=0 avg300=0 total=1\n")
    root = make_v2(
        tmp_path,
        {
            "app/memory.max": f"{GB}\n",
            "app/memory.events": "low 0\nhigh 4\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n",
            "app/memory.pressure": "some avg10=3.25 avg60=1.00 avg300=0.10 total=5\n",
        },
    )
    cgroup = cgroup_memory(proc, root)

    assert cgroup.oom_kill_count() == 2
    assert cgroup.oom_kill_files()[0] == str(root / "app/memory.events")
    assert cgroup.pressure_avg10() == 3.25
    (root / "app/memory.pressure").unlink()
    assert cgroup.pressure_avg10() == 0.5  # the host's PSI when the cgroup has none


def test_read_oom_kill_formats(tmp_path: Path) -> None:
    for text, expected in [
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n", 5),
        ("oom 1\noom_kill 0\n", 0),
        ("nothing here\n", None),
    ]:
        path = tmp_path / "f"
        path.write_text(text)
        assert read_oom_kill(str(path)) == expected
    assert read_oom_kill(str(tmp_path / "missing")) is None


def test_a_forked_child_walks_its_own_cgroup(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, "0::/parent\n")
    root = make_v2(
        tmp_path,
        {
            "parent/memory.max": f"{300 * MB}\n",
            "parent/memory.current": "0",
            "child/memory.max": f"{100 * MB}\n",
            "child/memory.current": "0",
        },
    )
    cgroup = cgroup_memory(proc, root)  # its clock never moves: only a fork can force a new walk
    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL)[1] == 300 * MB
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child moves itself, as a supervisor would, then reads
        try:
            (proc / "self/cgroup").write_text("0::/child\n")
            os.write(write_end, json.dumps(cgroup.effective(HOST_AVAILABLE, HOST_TOTAL)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_reading = json.loads(os.read(read_end, 4096))
    os.waitpid(pid, 0)
    os.close(read_end)

    assert child_reading == [100 * MB, 100 * MB, "cgroup_v2"]
    assert cgroup.effective(HOST_AVAILABLE, HOST_TOTAL)[1] == 300 * MB


CHILD = """
import json, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as file:
    file.write(str(os.getpid()))
import psutil
from otel_memory.kernel.limits import CgroupMemory

def usage():
    with open(os.path.join(sys.argv[1], "memory.usage_in_bytes")) as file:
        return int(file.read())

ballast = bytearray(20 * 1024 * 1024)  # resident: the usage is well above zero
host = psutil.virtual_memory()
before = usage()
available, limit, source = CgroupMemory().effective(host.available, host.total)
print(json.dumps({"available": available, "limit": limit, "source": source, "usage": before,
                  "host_available": host.available}))
"""


def test_a_child_in_a_real_limited_cgroup_sees_that_limit() -> None:
    limit = 96 * MB
    with limited_cgroup(limit) as path:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, path],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)

    assert seen["limit"] == limit
    assert seen["source"] == "cgroup_v1"
    assert seen["usage"] > 20 * MB
    # Usage may move by a page or two between the child's two reads of it.
    assert seen["available"] <= limit - seen["usage"] + MB
    assert seen["available"] <= seen["host_available"]
