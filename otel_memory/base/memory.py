"""What a memory reading is: one immutable record, and the megabyte the log counts in.

    from otel_memory.base.memory import MB, MemoryReading

    reading = MemoryReading(time.time(), rss, vms, available, total)
    print(reading.rss_mb, reading.free_ratio)

The kernel layer (:mod:`otel_memory.kernel.readings`) produces readings; everything above reads
them, the log format and the CLI included, without asking the operating system anything.
"""

from __future__ import annotations

from typing import NamedTuple

MB = 1024 * 1024
"""One megabyte as the daily log counts it: 1,048,576 bytes."""


class MemoryReading(NamedTuple):
    """One look at process and system memory (immutable; a named tuple because every task takes
    two and a tuple is built four times faster than a frozen dataclass).

    Args:
        timestamp: seconds since the epoch when the reading was taken.
        rss: process resident set size, bytes.
        vms: process virtual memory size, bytes.
        system_available: effective available, bytes: the host's ``MemAvailable``, capped by
            the room left under the cgroup limit when one applies (SPEC: Memory limit).
        system_total: the effective limit, bytes: host ``MemTotal`` or a smaller cgroup limit.
        rss_high_water: the process's lifetime peak RSS in bytes, when the source took it
            (:class:`PsutilReadingSource` leaves it out of task readings: one system call per
            task boundary; the peak sampler reads it instead, see ``read_high_water``).
        host_available: the host's own ``MemAvailable`` in bytes (None: same as
            ``system_available``); the ``system.memory.linux.available`` metric reports it.
        limit_source: where ``system_total`` comes from: ``host``, ``cgroup_v2`` or ``cgroup_v1``.
    """

    timestamp: float
    rss: int
    vms: int
    system_available: int
    system_total: int
    rss_high_water: int | None = None
    host_available: int | None = None
    limit_source: str = "host"

    def with_rss(self, rss: int, timestamp: float) -> MemoryReading:
        """This reading with a newer RSS sample (the sampler's view between full readings)."""
        return self._replace(rss=rss, timestamp=timestamp)

    @property
    def free_ratio(self) -> float:
        """System available / total, 0..1."""
        return self.system_available / self.system_total if self.system_total else 0.0

    @property
    def rss_mb(self) -> float:
        """RSS in MB (1 MB = 1,048,576 bytes)."""
        return self.rss / MB
