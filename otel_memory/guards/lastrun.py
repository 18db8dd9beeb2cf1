"""Why the last run died: a small state file per process, found again by the next start.

Each monitored process keeps ``{log_dir}/.otel-memory/run-<host>-<pid>.json``: a fixed-size
record rewritten in place by one ``pwrite`` (last task, last RSS, the OOM-kill counts it can see).
A clean stop removes it, and so does a SIGTERM with its default action (the compiled handler of
:mod:`otel_memory.kernel.termination`: a requested stop is not a death). A later
:meth:`RunState.begin` in any process sharing ``log_dir`` finds the files whose process is gone
(or whose pid now belongs to another process), claims each with an atomic rename so exactly one
process reports it, and tells why it died::

    from otel_memory.guards.lastrun import RunState

    state = RunState("logs")
    for dead in state.begin():      # runs that ended without end()
        print(dead.pid, dead.cause, dead.last_task)
    state.update("Nations Dump Processing", rss, time.time())   # from a background thread
    state.end()                     # clean stop: nothing left to report

Nothing here raises into the host: an unwritable ``log_dir`` means no detection, reported once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.forks import renew_after_fork
from otel_memory.kernel.limits import CgroupMemory, read_oom_kill
from otel_memory.kernel.termination import remove_at_sigterm

__all__ = ["STATE_DIR", "DeadRun", "RunState", "claim_dead_runs"]

STATE_DIR = ".otel-memory"
"""The hidden subdirectory of ``log_dir`` that holds the per-process state files."""

_RECORD_SIZE = 4096  # one page: a pwrite of it is never seen half-done after a kill
_TASK_CHARS = 256
_OOM_REFRESH_SECONDS = 1.0
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class DeadRun:
    """A process that used the same ``log_dir`` and ended without a clean stop.

    Args:
        pid: its process id.
        last_task: the task it was running at its last update (``Idle`` when none).
        last_rss: its RSS at the last update, bytes.
        last_seen: seconds since the epoch of the last update.
        cause: ``oom_kill`` when the OOM-kill count of its cgroup (or, when that cgroup is gone
            or was recreated, of the host) rose after its last update; otherwise ``unknown``.
    """

    pid: int
    last_task: str
    last_rss: int
    last_seen: float
    cause: str


def _host_tag() -> str:
    """This host (or container) as a file-name fragment: pids only mean something per host."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def _boot_id(proc_root: str) -> str:
    try:
        with open(os.path.join(proc_root, "sys/kernel/random/boot_id")) as file:
            return file.read().strip()
    except OSError:
        return ""


def _start_marker(pid: int, proc_root: str, boot_id: str) -> str | None:
    """What tells this process from a later one with the same pid; None when it is gone.

    On Linux the start time in clock ticks since boot (immune to wall-clock steps) plus the
    boot id; elsewhere psutil's creation time. A zombie counts as gone: it has ended.
    """
    if not sys.platform.startswith("linux"):
        return _psutil_marker(pid)
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return f"{boot_id}:{fields[19].decode()}"


def _psutil_marker(pid: int) -> str | None:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"{process.create_time():.3f}"
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return "unknown"  # cannot look: treat as alive rather than report a live process


def _pread_oom(fd: int) -> int | None:
    """The ``oom_kill`` count from an open counter file (vmstat is a few kB)."""
    try:
        data = os.pread(fd, 65536, 0)
    except OSError:
        return None
    start = data.find(b"oom_kill ")
    while start > 0 and data[start - 1 : start] != b"\n":
        start = data.find(b"oom_kill ", start + 1)
    if start < 0:
        return None
    end = data.find(b"\n", start)
    try:
        return int(data[start + len(b"oom_kill ") : end if end >= 0 else None])
    except ValueError:
        return None


def _cause(oom: Any) -> str:
    """``oom_kill`` when a counter the dead run recorded has risen since its last update."""
    if not isinstance(oom, list):
        return "unknown"
    for entry in oom:
        if not (isinstance(entry, list) and len(entry) == 2):
            continue
        path, then = entry
        now = read_oom_kill(path) if isinstance(path, str) else None
        if now is None or not isinstance(then, int) or now < then:
            continue  # gone or recreated (container restart): ask the next, wider counter
        return "oom_kill" if now > then else "unknown"
    return "unknown"


class _StateDir:
    """The ``.otel-memory`` directory of one ``log_dir``, seen from this host."""

    def __init__(self, log_dir: str | os.PathLike[str], proc_root: str) -> None:
        self._dir = os.path.join(os.fspath(log_dir), STATE_DIR)
        self._proc_root = proc_root
        self._host = _host_tag()
        self._boot_id = _boot_id(proc_root)

    @property
    def path(self) -> str:
        return self._dir

    def marker(self, pid: int) -> str | None:
        """The start marker of ``pid`` as this directory's records hold it."""
        return _start_marker(pid, self._proc_root, self._boot_id)

    def run_file(self, pid: int) -> str:
        return os.path.join(self._dir, f"run-{self._host}-{pid}.json")

    def claim_dead(self) -> list[DeadRun]:
        """Claim, remove and return the runs of this host whose process is gone."""
        prefix = f"run-{self._host}-"
        found = []
        for name in sorted(os.listdir(self._dir)):
            if name.startswith(f"claim-{self._host}-"):
                self._sweep(name, name.split("-")[-2])  # claim-{host}-{claimer}-{uuid}
            elif name.startswith(prefix) and name.endswith(".tmp"):
                self._sweep(name, name[len(prefix) :].split(".", 1)[0])  # run-{host}-{pid}.json.*
            if not (name.startswith(prefix) and name.endswith(".json")):
                continue  # another host's processes cannot be checked from here
            try:
                pid = int(name[len(prefix) : -len(".json")])
            except ValueError:
                continue
            if self._alive(pid, self._load(os.path.join(self._dir, name))):
                continue
            run = self._claim(name, pid)
            if run is not None:
                found.append(run)
        return found

    def others_alive(self, own_pid: int) -> bool:
        """Whether another live process of this host keeps its run state here."""
        prefix = f"run-{self._host}-"
        for name in os.listdir(self._dir):
            if not (name.startswith(prefix) and name.endswith(".json")):
                continue
            try:
                pid = int(name[len(prefix) : -len(".json")])
            except ValueError:
                continue
            if pid != own_pid and self._alive(pid, self._load(os.path.join(self._dir, name))):
                return True
        return False

    def _claim(self, name: str, pid: int) -> DeadRun | None:
        """Rename the file to a name only we hold, so one process alone reports it."""
        path = os.path.join(self._dir, name)
        claimed = os.path.join(self._dir, f"claim-{self._host}-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None  # another process claimed it first
        record = self._load(claimed)
        # Between our look and the rename, a new process with that pid may have put its own file
        # there: it is alive, so give it back.
        if self._alive(pid, record):
            with contextlib.suppress(OSError):
                os.rename(claimed, path)
            return None
        with contextlib.suppress(OSError):
            os.unlink(claimed)
        record = record or {}
        return DeadRun(
            pid=pid,
            last_task=str(record.get("last_task", "")),
            last_rss=_as_int(record.get("last_rss")),
            last_seen=_as_float(record.get("last_seen")),
            cause=_cause(record.get("oom")),
        )

    def _sweep(self, name: str, writer: str) -> None:
        """Remove a claim or a temporary state file whose ``writer`` died before it finished."""
        try:
            pid = int(writer)
        except ValueError:
            return
        if not psutil.pid_exists(pid):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._dir, name))

    def _alive(self, pid: int, record: dict[str, Any] | None) -> bool:
        """Whether the run that wrote ``record`` still runs (an unreadable record: its pid does)."""
        now = _start_marker(pid, self._proc_root, self._boot_id)
        if now is None:
            return False
        if now == "unknown":
            return True  # not ours to look at: never report a process that may be running
        # A record that does not parse may be a live writer's, read mid-write: leave it.
        return record is None or record.get("marker") in (now, None)

    @staticmethod
    def _load(path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as file:
                record = json.loads(file.read(_RECORD_SIZE * 2))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None


def claim_dead_runs(log_dir: str | os.PathLike[str], *, proc_root: str = "/proc") -> list[DeadRun]:
    """Report the runs that died in ``log_dir`` without writing a state file of our own.

    Each dead run is returned by exactly one caller across all processes; ``[]`` when the
    directory cannot be read or changed.
    """
    state_dir = _StateDir(log_dir, proc_root)
    try:
        return state_dir.claim_dead()
    except OSError:
        return []


class RunState:
    """This process's state file in ``log_dir``, and the detector of runs that died.

    Args:
        log_dir: the monitor's log directory; state lives in its ``.otel-memory`` subdirectory.
        oom_kill_files: counter files whose ``oom_kill`` rises when this process is OOM-killed,
            narrowest first; default: :meth:`CgroupMemory.oom_kill_files` of this process.
        proc_root: where ``/proc`` is mounted.
        clock: wall-clock seconds, for ``last_seen`` at :meth:`begin`.
        warn_once: reports an unusable state directory once (default: a private one).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        oom_kill_files: Sequence[str] | None = None,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.time,
        warn_once: WarnOnce | None = None,
    ) -> None:
        self._dir = _StateDir(log_dir, proc_root)
        self._warn = warn_once if warn_once is not None else WarnOnce()
        self._oom_kill_files = oom_kill_files
        self._proc_root = proc_root
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self)  # a forked worker begins its own state with a free lock
        self._owner = -1  # the pid that began; a forked child is not it until it begins
        self._kept = -1  # the pid whose run ends killed: its file stays, frozen, for the next
        self._fd = -1
        self._path = ""
        self._static: dict[str, Any] = {}
        self._oom: list[tuple[str, int]] = []  # (path, descriptor)
        self._oom_counts: list[list[Any]] = []  # [path, count] as last read
        self._oom_due = float("-inf")

    @property
    def path(self) -> str | None:
        """This process's state file, while it has one."""
        return self._path if self._owner == os.getpid() and self._fd >= 0 else None

    def begin(self) -> list[DeadRun]:
        """Claim and report the runs that died, then write this process's own state file."""
        pid = os.getpid()
        with self._lock:
            if self._owner == pid and self._fd >= 0:
                return []  # already begun in this process
            dead: list[DeadRun] = []
            try:
                os.makedirs(self._dir.path, exist_ok=True)
                dead = self._dir.claim_dead()
                self._create(pid)
            except OSError as exc:
                self._warn_once(exc)
            return dead

    def shared(self) -> bool:
        """Whether another live process keeps its run state in this ``log_dir`` too (it shares
        the daily file)."""
        try:
            return self._dir.others_alive(os.getpid())
        except OSError:
            return False

    def update(self, last_task: str, last_rss: int, timestamp: float) -> None:
        """Record the current task and RSS: one ``pwrite`` (plus a ``pread`` per OOM counter)."""
        with self._lock:
            if self._fd < 0 or self._owner != os.getpid() or self._kept == self._owner:
                return  # not begun, a forked child writing over its parent's file, or kept
            try:
                os.pwrite(self._fd, self._record(last_task, last_rss, timestamp), 0)
            except (OSError, ValueError, TypeError) as exc:
                self._warn_once(exc)

    def keep(self) -> None:
        """This run is being killed though it will exit through Python (gunicorn's worker
        timeout): freeze the state file as it is and keep it at :meth:`end`, so the next start
        reports the run with the task it was in. Takes no lock (called from a signal handler)."""
        self._kept = os.getpid()
        if self._owner == self._kept:
            remove_at_sigterm(None)

    def discard(self) -> None:
        """A requested stop (SIGTERM) that may not get to :meth:`end`: remove the state file
        now, so nobody reports this run. Takes no lock (called from a signal handler); an
        update after it writes to the removed file only."""
        pid = os.getpid()
        path = self._path
        if path and path == self._dir.run_file(pid) and self._kept != pid:  # ours, not a parent's
            with contextlib.suppress(OSError):
                os.unlink(path)
            remove_at_sigterm(None)  # after: a SIGTERM in between finds the file gone

    def end(self) -> None:
        """Clean stop: remove this process's state file, so nobody reports it (unless kept)."""
        with self._lock:
            if self._owner != os.getpid():
                return
            self._close()
            if self._kept != self._owner:
                with contextlib.suppress(OSError):
                    os.unlink(self._path)
            # Forgotten only once removed: a SIGTERM in between (a pool's terminate() reaching a
            # worker that is ending its run) would otherwise leave the file, reported as a death.
            remove_at_sigterm(None)
            self._owner = -1

    def _create(self, pid: int) -> None:
        """Write our record to a temporary file and rename it into place (never a half file)."""
        self._close()
        marker = self._dir.marker(pid)
        files = self._oom_kill_files
        if files is None:
            files = CgroupMemory(proc_root=self._proc_root).oom_kill_files()
        self._oom, self._oom_due = [], float("-inf")
        for path in files:
            try:
                self._oom.append((path, os.open(path, _FLAGS)))
            except OSError:
                continue
        self._static = {"pid": pid, "marker": marker, "started": self._clock()}
        self._path = self._dir.run_file(pid)
        temporary = f"{self._path}.{uuid.uuid4().hex}.tmp"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0))
        try:
            os.pwrite(fd, self._record("Idle", 0, self._clock()), 0)
            # A requested stop is not a death: the handler knows the file before it exists.
            remove_at_sigterm(self._path)
            os.rename(temporary, self._path)
        except OSError:
            remove_at_sigterm(None)
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._fd, self._owner = fd, pid

    def _record(self, last_task: str, last_rss: int, timestamp: float) -> bytes:
        now = time.monotonic()
        if now >= self._oom_due:  # /proc/vmstat costs ~20 µs to generate: once a second is plenty
            self._oom_due = now + _OOM_REFRESH_SECONDS
            self._oom_counts = [
                [path, count] for path, fd in self._oom if (count := _pread_oom(fd)) is not None
            ]
        oom = self._oom_counts
        task = str(last_task)[:_TASK_CHARS]
        dynamic = {"last_task": task, "last_rss": int(last_rss), "last_seen": float(timestamp)}
        data = json.dumps({**self._static, **dynamic, "oom": oom}).encode()
        if len(data) >= _RECORD_SIZE:  # very long counter paths: drop the task name first
            data = json.dumps({**self._static, "last_rss": int(last_rss), "oom": oom}).encode()
        # Padding keeps the size fixed, so a shorter record never leaves the old one's tail.
        return data[: _RECORD_SIZE - 1].ljust(_RECORD_SIZE - 1) + b"\n"

    def _close(self) -> None:
        for fd in [self._fd, *(fd for _, fd in self._oom)]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd, self._oom = -1, []

    def _warn_once(self, exc: BaseException) -> None:
        self._warn(
            f"run state {self._dir.path}",
            "otel-memory cannot keep run state in %s (%s); a run that dies will not be reported",
            self._dir.path,
            exc,
        )


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _as_float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
