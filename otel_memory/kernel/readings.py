"""Memory readings: psutil turned into one frozen :class:`MemoryReading`.

This is the only module that asks the operating system about memory; tasks, the daily log and
the gauges all read through a :class:`ReadingSource`, which tests replace::

    from otel_memory.kernel.readings import PsutilReadingSource

    reading = PsutilReadingSource().read()
    print(reading.rss_mb, reading.free_ratio)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

import psutil

from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.errors import OtelMemoryError
from otel_memory.base.forks import renew_after_fork
from otel_memory.base.memory import MB, MemoryReading
from otel_memory.kernel.limits import CgroupMemory

try:
    import resource
except ImportError:  # Windows has no resource module
    resource = None  # type: ignore[assignment]

try:
    from otel_memory.kernel import _proc
except ImportError:  # built without a C compiler: os.pread reads the same numbers
    _proc = None  # type: ignore[assignment]

__all__ = [
    "ACCELERATED",
    "MB",
    "MemoryReader",
    "MemoryReading",
    "PsutilReadingSource",
    "ReadingSource",
    "parse_meminfo",
    "parse_statm",
]

_new_tuple = tuple.__new__

ACCELERATED = _proc is not None
"""Whether the compiled ``statm`` reading is installed (see :class:`PsutilReadingSource`)."""

class ReadingSource(Protocol):
    """Anything that can produce a :class:`MemoryReading`.

    A source may also have ``read_high_water() -> int | None``, the process's lifetime peak RSS
    in bytes: the peak sampler then gives a new high to the tasks open across it.
    """

    def read(self) -> MemoryReading:
        """Take one reading; may raise ``psutil.Error`` or ``OSError``."""
        ...

    def read_rss(self) -> int:
        """Only the RSS, as cheaply as the platform allows (the peak sampler's hot path)."""
        ...


_MAX_RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes


def _max_rss_bytes() -> int | None:
    """The process's lifetime peak RSS from ``getrusage``, in bytes, or None where unknown."""
    if resource is None:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAX_RSS_UNIT


class _Forks:
    """How many forks lie between this process and the one that imported the package.

    A reading checks it instead of ``os.getpid()``, a system call per reading.
    """

    count = 0

    @classmethod
    def in_child(cls) -> None:
        cls.count += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Forks.in_child)


class _ProcFiles:
    """Linux fast path: this process's ``/proc/self/statm`` and ``/proc/meminfo`` via ``pread``.

    psutil parses every line of ``/proc/meminfo`` in Python on each call (about 45 µs); a task
    reads memory twice, so reading just the two numbers we need keeps tasks cheap. The files are
    reopened after a fork, when ``/proc/self`` would still name the parent.

    ``statm`` is read by the compiled ``kernel._proc`` when it is built (``accelerated``):
    ``os.pread`` releases the GIL around the system call, so with other threads wanting the GIL
    (the monitor's events thread, the SDK's batch processors) a task boundary could cost a thread
    switch; a procfs read never blocks, and the compiled one keeps the GIL.
    """

    def __init__(self, accelerated: bool | None = None) -> None:
        if accelerated is None:
            accelerated = ACCELERATED
        if accelerated and _proc is None:
            raise OtelMemoryError("the compiled reading (kernel._proc) is not installed")
        self._statm_reader = _proc.statm if accelerated and _proc is not None else None
        self._meminfo_reader = _proc.meminfo if accelerated and _proc is not None else None
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._forks = -1  # the _Forks.count the files were opened under
        self._statm = -1
        self._meminfo = -1
        self._lock = threading.Lock()
        renew_after_fork(self)
        self._reopen()

    @staticmethod
    def available() -> bool:
        """Whether this platform has the files and they read as expected."""
        if not sys.platform.startswith("linux"):
            return False
        files = None
        try:
            files = _ProcFiles()
            files.rss_vms()
            files.available_total()
            return True
        except (OSError, ValueError, IndexError):
            return False
        finally:
            if files is not None:
                files.close()

    def _reopen(self) -> None:
        with self._lock:
            if self._forks == _Forks.count:
                return
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
            statm = os.open("/proc/self/statm", flags)
            meminfo = os.open("/proc/meminfo", flags)
            old = (self._statm, self._meminfo)
            self._statm, self._meminfo, self._forks = statm, meminfo, _Forks.count
        for fd in old:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        """Close the files (a later reading reopens them)."""
        with self._lock:
            old, self._statm, self._meminfo = (self._statm, self._meminfo), -1, -1
            self._forks = -1
        for fd in old:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __del__(self) -> None:
        self.close()

    def rss_vms(self) -> tuple[int, int]:
        """(RSS, VMS) in bytes."""
        if self._forks != _Forks.count:
            self._reopen()
        reader = self._statm_reader
        if reader is not None:
            return reader(self._statm, self._page_size)
        return parse_statm(os.pread(self._statm, 256, 0), self._page_size)

    def available_total(self) -> tuple[int, int]:
        """(MemAvailable, MemTotal) in bytes (ValueError on kernels without MemAvailable)."""
        reader = self._meminfo_reader
        if reader is not None:
            return reader(self._meminfo)
        return parse_meminfo(os.pread(self._meminfo, 16384, 0))


def parse_statm(data: bytes, page_size: int) -> tuple[int, int]:
    """(RSS, VMS) in bytes from ``/proc/<pid>/statm`` text (sizes in pages)."""
    fields = data.split()
    return int(fields[1]) * page_size, int(fields[0]) * page_size


def parse_meminfo(data: bytes) -> tuple[int, int]:
    """(MemAvailable, MemTotal) in bytes from ``/proc/meminfo`` text (ValueError if absent)."""
    return _meminfo_field(data, b"MemAvailable:"), _meminfo_field(data, b"MemTotal:")


def _meminfo_field(data: bytes, key: bytes) -> int:
    """The value of ``key`` in ``/proc/meminfo`` text, in bytes (the file counts kB)."""
    start = data.index(key) + len(key)
    return int(data[start : data.index(b"kB", start)]) * 1024


class LimitSource(Protocol):
    """Caps host numbers by a container's limit (:class:`~.limits.CgroupMemory`)."""

    def effective(self, host_available: int, host_total: int) -> tuple[int, int, str]:
        """(effective available, effective limit, limit source)."""
        ...


class PsutilReadingSource:
    """Reads this process (or ``pid``) and the system, capped by the container's limit.

    Through psutil everywhere; for this process on Linux, the same kernel numbers psutil uses
    (``statm`` RSS/VMS, ``MemAvailable``/``MemTotal``) are read directly, about 5x faster. The
    system side (``MemAvailable`` and the cgroup's room) changes slowly and costs as much as the
    process side, so it is reused for ``system_ttl`` seconds: a burst of short tasks pays one
    ``pread`` of ``statm`` per reading. The lifetime high-water mark (``getrusage``) is not part
    of a reading: a second system call per task boundary costs more than the whole reading on
    machines with speculative-execution mitigations; the peak sampler reads it with
    :meth:`read_high_water` instead.

    Args:
        pid: another process to read (default: this one).
        clock: wall-clock seconds for the readings' timestamps.
        limits: the cgroup limit source; default: this process's cgroups on Linux, none elsewhere.
        system_ttl: seconds a system reading is reused.
    """

    def __init__(
        self,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
        limits: LimitSource | None = None,
        system_ttl: float = 0.01,
    ) -> None:
        self._process = psutil.Process(pid)
        self._own_process = pid is None
        self._clock = clock
        self._lock = threading.Lock()  # psutil.Process caches are not thread-safe
        renew_after_fork(self)
        self._proc = _ProcFiles() if self._own_process and _ProcFiles.available() else None
        if limits is None and self._own_process and sys.platform.startswith("linux"):
            limits = CgroupMemory()
        self._limits = limits
        self._system_ttl = system_ttl
        self._system: tuple[int, int, str, int] = (0, 0, "host", 0)
        self._system_until = float("-inf")

    @property
    def limits(self) -> LimitSource | None:
        """The cgroup limit source, if any."""
        return self._limits

    def _read_system(self, now: float) -> tuple[int, int, str, int]:
        """(effective available, effective limit, source, host available), cached."""
        if now < self._system_until:
            return self._system
        if self._proc is not None:
            host_available, host_total = self._proc.available_total()
        else:
            system = psutil.virtual_memory()
            host_available, host_total = int(system.available), int(system.total)
        available, total, source = host_available, host_total, "host"
        if self._limits is not None:
            available, total, source = self._limits.effective(host_available, host_total)
        self._system = (available, total, source, host_available)
        self._system_until = now + self._system_ttl
        return self._system

    def read(self) -> MemoryReading:
        """Take one reading of process and system memory (one ``pread`` on Linux)."""
        if self._proc is not None:
            rss, vms = self._proc.rss_vms()
        else:
            with self._lock:
                info = self._process.memory_info()
            rss, vms = int(info.rss), int(info.vms)
        now = time.monotonic()
        system = self._system if now < self._system_until else self._read_system(now)
        available, total, source, host_available = system
        # tuple.__new__ as the named tuple's own _make does: its __new__ is a Python call, and
        # every task and request boundary takes a reading (the field order is MemoryReading's).
        return _new_tuple(
            MemoryReading,
            (self._clock(), rss, vms, available, total, None, host_available, source),
        )

    def read_high_water(self) -> int | None:
        """The process's lifetime peak RSS (``getrusage``), or None for another process."""
        return _max_rss_bytes() if self._own_process else None

    def read_rss(self) -> int:
        """Only the process RSS."""
        if self._proc is not None:
            return self._proc.rss_vms()[0]
        with self._lock:
            return int(self._process.memory_info().rss)


class MemoryReader:
    """The process's current reading source, the latest full reading, and who sees each one.

    Args:
        warn_once: reports a failing source once (readings are then left out, never raised).
        source: where readings come from; default: this process through psutil.
    """

    def __init__(self, warn_once: WarnOnce, source: ReadingSource | None = None) -> None:
        self._warn_once = warn_once
        self._default: ReadingSource | None = None
        self.source: ReadingSource = source or self._psutil()
        self.last: MemoryReading | None = None
        """The latest full reading (the sampler pairs it with fresh RSS samples)."""
        self.on_reading: Callable[[MemoryReading], None] | None = None
        """Called with every reading taken (the threshold guard), or None."""

    def _psutil(self) -> ReadingSource:
        if self._default is None:
            self._default = PsutilReadingSource()
        return self._default

    def set_source(self, source: ReadingSource | None) -> None:
        """Replace the reading source; None restores psutil."""
        self.source = source if source is not None else self._psutil()

    def read(self) -> MemoryReading | None:
        """One reading, or None when the platform refuses (reported once)."""
        try:
            reading = self.source.read()
        except Exception as exc:  # psutil.Error, OSError, or a broken custom source
            self._warn_once("reading", "otel_memory: memory reading failed, left out: %r", exc)
            return None
        self.last = reading
        listener = self.on_reading
        if listener is not None:
            listener(reading)
        return reading
