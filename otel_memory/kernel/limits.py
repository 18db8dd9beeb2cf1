"""The memory limit that actually applies: the host's, or a smaller cgroup's (v2 or v1).

SPEC (Memory limit): the effective limit is the smallest of host ``MemTotal`` and every
``memory.max`` / ``memory.high`` (v2) or ``memory.limit_in_bytes`` (v1) from the process's cgroup
up to the root of the mounted hierarchy; effective available is ``min(MemAvailable, limit - usage)``
when a cgroup limit applies. Reading stays cheap: the tree is walked at most every
``refresh_seconds``; between walks a reading is one ``pread`` per limited level (usually one)::

    from otel_memory.kernel.limits import CgroupMemory

    cgroup = CgroupMemory()
    available, limit, source = cgroup.effective(host_available, host_total)
    print(source, limit, cgroup.oom_kill_count(), cgroup.pressure_avg10())

Nothing here raises: a missing or unreadable file means "no cgroup limit" for that file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from otel_memory.base.forks import renew_after_fork

__all__ = ["CgroupMemory", "read_oom_kill"]

_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)

# v2 writes "max" for no limit; v1 writes PAGE_COUNTER_MAX pages (~2**63). Anything at or above
# the host's MemTotal cannot be what kills the process, so it is treated as no limit.
_V2_LIMIT_FILES = ("memory.max", "memory.high")
_V1_LIMIT_FILES = ("memory.limit_in_bytes",)


def _read_text(path: str) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except (OSError, ValueError):
        return None


def _read_int(path: str) -> int | None:
    """A file holding one integer (``max`` and garbage read as None)."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _keyed_int(text: str, key: str) -> int | None:
    """The integer after ``key`` on a ``key value`` line (memory.events, oom_control, vmstat)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def read_oom_kill(path: str) -> int | None:
    """The ``oom_kill`` count in v2 ``memory.events``, v1 ``memory.oom_control`` or ``vmstat``."""
    text = _read_text(path)
    return None if text is None else _keyed_int(text, "oom_kill")


@dataclass(frozen=True)
class _Level:
    """One cgroup on the way to the root that has a limit; ``usage_fd`` is -1 when unreadable."""

    limit: int
    usage_fd: int


@dataclass(frozen=True)
class _State:
    """What one walk of the tree found; replaced as a whole so readers never see half of it."""

    pid: int
    deadline: float
    source: str  # "cgroup_v2" | "cgroup_v1" | "host"
    levels: tuple[_Level, ...]
    oom_file: str | None
    pressure_file: str | None


def _parse_cgroup_file(text: str) -> tuple[str | None, str | None]:
    """(v1 memory path, v2 path) from ``/proc/<pid>/cgroup`` lines ``id:controllers:path``."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _locate(mount: str, path: str) -> str | None:
    """The directory of ``path`` under ``mount``.

    Inside a container the mount is often the container's own cgroup while
    ``/proc/self/cgroup`` still names the full host path (no cgroup namespace), so leading
    components are dropped until a directory exists; the mount itself is the last resort.
    """
    parts = [part for part in path.split("/") if part]
    for start in range(len(parts) + 1):
        candidate = os.path.join(mount, *parts[start:])
        if os.path.isdir(candidate):
            return candidate
    return None


def _ancestors(leaf: str, mount: str) -> list[str]:
    """``leaf`` and every directory above it up to and including ``mount``."""
    dirs = [leaf]
    mount = os.path.normpath(mount)
    current = os.path.normpath(leaf)
    while current != mount and current.startswith(mount + os.sep):
        current = os.path.dirname(current)
        dirs.append(current)
    return dirs


class CgroupMemory:
    """The effective memory limit and room of one process, from ``/proc`` and the cgroup mount.

    Args:
        proc_root: where ``/proc`` is mounted (tests pass a fake tree).
        cgroup_root: where the cgroup filesystem is mounted: a v2 mount, or a tmpfs holding v1
            hierarchies (``memory/``, ``cpu,memory/``...) and possibly ``unified/``.
        pid: the process, as it appears under ``proc_root`` (``self`` or a number).
        refresh_seconds: how long a walk of the tree is trusted before it is redone.
        clock: monotonic seconds, for the refresh deadline.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        cgroup_root: str = "/sys/fs/cgroup",
        pid: str = "self",
        refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._proc_root = proc_root
        self._cgroup_root = cgroup_root
        self._pid = pid
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self)  # a refresh in progress at a fork must not block the child
        self._state = _State(-1, float("-inf"), "host", (), None, None)
        self._fds: dict[str, int] = {}  # usage file -> open descriptor, kept across walks
        self._retired: list[int] = []

    def effective(self, host_available: int, host_total: int) -> tuple[int, int, str]:
        """(effective available, effective limit, ``cgroup_v2`` | ``cgroup_v1`` | ``host``)."""
        state = self._current()
        limit = host_total
        available = host_available
        for level in state.levels:
            if level.limit >= host_total:
                continue
            limit = min(limit, level.limit)
            room = level.limit
            if level.usage_fd >= 0:
                # Usage unreadable: the limit alone still caps what is available.
                with contextlib.suppress(OSError, ValueError):
                    room -= int(os.pread(level.usage_fd, 32, 0))
            available = min(available, room)
        if limit == host_total:
            return host_available, host_total, "host"
        return max(0, available), limit, state.source

    def oom_kill_count(self) -> int | None:
        """Processes of this cgroup killed by the OOM killer (the host's count without a cgroup)."""
        oom_file = self._current().oom_file
        return read_oom_kill(oom_file or os.path.join(self._proc_root, "vmstat"))

    def oom_kill_files(self) -> tuple[str, ...]:
        """Files whose ``oom_kill`` count rises when this process is OOM-killed, narrowest first.

        The cgroup's file, then the host's ``vmstat`` (it survives a container restart, which
        recreates the cgroup with its counts at zero).
        """
        state = self._current()
        files = [state.oom_file] if state.oom_file else []
        vmstat = os.path.join(self._proc_root, "vmstat")
        if read_oom_kill(vmstat) is not None:
            files.append(vmstat)
        return tuple(files)

    def pressure_avg10(self) -> float | None:
        """PSI ``some avg10`` for memory, percent of the last 10 s some task stalled on memory."""
        state = self._current()
        for path in (state.pressure_file, os.path.join(self._proc_root, "pressure", "memory")):
            text = _read_text(path) if path else None
            if not text:
                continue
            for line in text.splitlines():
                if line.startswith("some "):
                    for field in line.split()[1:]:
                        if field.startswith("avg10="):
                            try:
                                return float(field[len("avg10=") :])
                            except ValueError:
                                return None
        return None

    def close(self) -> None:
        """Close the usage descriptors; the next reading walks the tree and opens them again."""
        with self._lock:
            self._state = _State(-1, float("-inf"), "host", (), None, None)
            fds = list(self._fds.values()) + self._retired
            self._fds, self._retired = {}, []
        _close_all(fds)

    def _current(self) -> _State:
        state = self._state
        if state.pid == os.getpid() and self._clock() < state.deadline:
            return state
        with self._lock:
            state = self._state
            pid = os.getpid()
            if state.pid == pid and self._clock() < state.deadline:
                return state
            # Descriptors dropped by the previous walk are closed one walk later: a reader that
            # took the old state an instant ago may still be in its pread.
            retired, self._retired = self._retired, []
            in_use = dict(self._fds)
            try:
                state = self._walk(pid)
            except (OSError, ValueError):
                state = _State(pid, self._clock() + self._refresh_seconds, "host", (), None, None)
            kept = {level.usage_fd for level in state.levels}
            for path, fd in in_use.items():
                if fd not in kept:
                    del self._fds[path]
                    self._retired.append(fd)
            self._state = state
        _close_all(retired)
        return state

    def _walk(self, pid: int) -> _State:
        """Walk from the process's cgroup to the root, opening each limited level's usage file."""
        deadline = self._clock() + self._refresh_seconds
        text = _read_text(os.path.join(self._proc_root, self._pid, "cgroup"))
        if text is None:
            return _State(pid, deadline, "host", (), None, None)
        v1_path, v2_path = _parse_cgroup_file(text)
        v2_mount = self._v2_mount()
        v2_leaf = _locate(v2_mount, v2_path) if v2_mount and v2_path is not None else None
        pressure = os.path.join(v2_leaf, "memory.pressure") if v2_leaf else None
        v1_mount = self._v1_mount() if v1_path is not None else None
        if v1_mount and v1_path is not None:
            leaf = _locate(v1_mount, v1_path)
            if leaf is not None:
                levels = self._levels(leaf, v1_mount, _V1_LIMIT_FILES, "memory.usage_in_bytes")
                oom = os.path.join(leaf, "memory.oom_control")
                return _State(pid, deadline, "cgroup_v1", levels, oom, pressure)
        if v2_mount and v2_leaf is not None:
            levels = self._levels(v2_leaf, v2_mount, _V2_LIMIT_FILES, "memory.current")
            events = os.path.join(v2_leaf, "memory.events")
            v2_oom = events if read_oom_kill(events) is not None else None
            return _State(pid, deadline, "cgroup_v2", levels, v2_oom, pressure)
        return _State(pid, deadline, "host", (), None, pressure)

    def _v2_mount(self) -> str | None:
        """The unified hierarchy: the root itself (pure v2) or ``unified/`` (hybrid)."""
        for mount in (self._cgroup_root, os.path.join(self._cgroup_root, "unified")):
            if os.path.exists(os.path.join(mount, "cgroup.controllers")):
                return mount
        return None

    def _v1_mount(self) -> str | None:
        """The v1 hierarchy holding the memory controller (``memory`` or e.g. ``cpu,memory``)."""
        try:
            names = sorted(os.listdir(self._cgroup_root))
        except OSError:
            return None
        for name in names:
            path = os.path.join(self._cgroup_root, name)
            if "memory" in name.split(",") and os.path.isdir(path):
                return path
        return None

    def _levels(
        self, leaf: str, mount: str, limit_files: tuple[str, ...], usage_file: str
    ) -> tuple[_Level, ...]:
        host_total = self._host_total()
        levels = []
        for directory in _ancestors(leaf, mount):
            limits = [_read_int(os.path.join(directory, name)) for name in limit_files]
            known = [value for value in limits if value is not None and 0 <= value < host_total]
            if not known:
                continue
            levels.append(_Level(min(known), self._usage_fd(os.path.join(directory, usage_file))))
        return tuple(levels)

    def _host_total(self) -> int:
        """Host ``MemTotal`` in bytes; limits at or above it never apply (v1 "unlimited")."""
        text = _read_text(os.path.join(self._proc_root, "meminfo"))
        total = _keyed_int(text.replace("kB", ""), "MemTotal:") if text else None
        return total * 1024 if total is not None else 2**63

    def _usage_fd(self, path: str) -> int:
        """An open descriptor on ``path`` (reused across walks and forks), or -1."""
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, _FLAGS)
            except OSError:
                return -1
            self._fds[path] = fd
        return fd


def _close_all(fds: list[int]) -> None:
    """Close descriptors, ignoring ones already gone."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
