"""Test helpers for code that uses otel-memory: a scripted reading source and a manual clock.

    from otel_memory.testing import FakeReadingSource, reading

    source = FakeReadingSource([reading(rss_mb=100), reading(rss_mb=150)])
    otel_memory.api.set_reading_source(source)      # or otel_memory.start(reading_source=source)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from otel_memory.base.memory import MB, MemoryReading


def reading(
    rss_mb: float = 100.0,
    vms_mb: float = 200.0,
    available_mb: float = 1024.0,
    total_mb: float = 2048.0,
    timestamp: float = 1_763_281_800.0,
) -> MemoryReading:
    """A reading given in MB (rounded to whole bytes), for tests and examples."""
    return MemoryReading(
        timestamp=timestamp,
        rss=round(rss_mb * MB),
        vms=round(vms_mb * MB),
        system_available=round(available_mb * MB),
        system_total=round(total_mb * MB),
    )


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_763_281_800.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class FakeReadingSource:
    """Returns scripted readings in order, then repeats the last (none scripted: ``reading()``).

    ``read_rss`` (the peak sampler's call) takes from ``rss_samples`` while any are left, else
    repeats the RSS of the last reading, so samplers never consume the scripted readings.
    ``high_water`` is what ``read_high_water`` reports (the lifetime peak the sampler reads).
    ``fail_with`` makes every call raise that exception (to test that errors never escape).
    """

    def __init__(
        self,
        readings: Iterable[MemoryReading] = (),
        fail_with: BaseException | None = None,
    ) -> None:
        self._readings = list(readings)
        self._index = 0
        self.rss_samples: list[int] = []
        self._lock = threading.Lock()
        self.fail_with = fail_with
        self.calls = 0
        self.high_water: int | None = None

    def push(self, *readings: MemoryReading) -> None:
        """Queue more readings after the current ones."""
        with self._lock:
            self._readings.extend(readings)

    def read(self) -> MemoryReading:
        """The next scripted reading."""
        with self._lock:
            self.calls += 1
            if self.fail_with is not None:
                raise self.fail_with
            if not self._readings:
                return reading()
            value = self._readings[min(self._index, len(self._readings) - 1)]
            self._index += 1
            return value

    def read_rss(self) -> int:
        """The next queued RSS sample, else the RSS of the last reading."""
        with self._lock:
            if self.fail_with is not None:
                raise self.fail_with
            if self.rss_samples:
                return self.rss_samples.pop(0)
            if not self._readings:
                return reading().rss
            return self._readings[max(0, min(self._index, len(self._readings)) - 1)].rss

    def read_high_water(self) -> int | None:
        """The scripted lifetime peak RSS (``high_water``)."""
        return self.high_water
