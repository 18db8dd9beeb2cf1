"""The four thresholds of the configuration as live events: once per crossing, with hysteresis.

    guard = ThresholdGuard(config.monitor.thresholds)
    for crossing in guard.check(reading.rss, reading.system_available, reading.free_ratio):
        log.log(crossing.severity, "...", extra=crossing.attributes(task_name))

A threshold fires when a reading goes into breach (RSS above ``rss_warning_mb`` or
``rss_critical_mb``; available below ``system_available_min_mb``; free ratio below
``system_free_min_percent``), and not again until the value is back past the threshold by the
hysteresis (5 %: RSS below 0.95 x the threshold, available or free above 1.05 x). Every threshold
starts armed, so the first reading already in breach fires. :meth:`ThresholdGuard.check` runs on
every reading the monitor takes, task hot path included: while no threshold changes state it is
one attribute load and six comparisons, with no lock (see ``benchmarks/thresholds.py``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from opentelemetry.util.types import AttributeValue

from otel_memory.base.config import Thresholds
from otel_memory.base.memory import MB

RSS_WARNING = "rss_warning"
RSS_CRITICAL = "rss_critical"
AVAILABLE_MIN = "available_min"
FREE_MIN = "free_min"

THRESHOLD_NAME = "otel_memory.threshold.name"
THRESHOLD_VALUE = "otel_memory.threshold.value"
VALUE = "otel_memory.value"
TASK_NAME = "otel_memory.task.name"

_INF = float("inf")
_NO_CROSSINGS: tuple[Crossing, ...] = ()


@dataclass(frozen=True, slots=True)
class Crossing:
    """A reading went into breach of one threshold.

    Args:
        name: ``rss_warning``, ``rss_critical``, ``available_min`` or ``free_min``.
        threshold: the threshold, bytes (a ratio 0..1 for ``free_min``).
        value: the reading that crossed it, same unit.
        severity: ``logging.ERROR`` for ``rss_critical``, else ``logging.WARNING``.
    """

    name: str
    threshold: float
    value: float
    severity: int

    def attributes(self, task_name: str | None = None) -> dict[str, AttributeValue]:
        """The event's attributes (SPEC: Events); bytes as ints, the free ratio as a float."""
        as_number = float if self.name == FREE_MIN else int
        attributes: dict[str, AttributeValue] = {
            THRESHOLD_NAME: self.name,
            THRESHOLD_VALUE: as_number(self.threshold),
            VALUE: as_number(self.value),
        }
        if task_name is not None:
            attributes[TASK_NAME] = task_name
        return attributes


class _Threshold:
    """One threshold's state machine; only touched under the guard's lock."""

    __slots__ = ("breached", "level", "name", "rearm", "severity", "upward")

    def __init__(self, name: str, level: float, hysteresis: float, upward: bool) -> None:
        self.name = name
        self.level = level
        self.upward = upward  # True: breach is above the level (RSS); False: below it
        self.rearm = level * (1 - hysteresis) if upward else level * (1 + hysteresis)
        self.severity = logging.ERROR if name == RSS_CRITICAL else logging.WARNING
        self.breached = False

    def step(self, value: float) -> Crossing | None:
        """Advance with one reading; a :class:`Crossing` when it goes into breach."""
        if self.breached:
            if (value < self.rearm) if self.upward else (value > self.rearm):
                self.breached = False
            return None
        if (value > self.level) if self.upward else (value < self.level):
            self.breached = True
            return Crossing(self.name, self.level, value, self.severity)
        return None

    def band(self) -> tuple[float, float]:
        """The values between which the next reading changes nothing."""
        if self.upward:
            return (self.rearm, _INF) if self.breached else (-_INF, self.level)
        return (-_INF, self.rearm) if self.breached else (self.level, _INF)


class ThresholdGuard:
    """Turns readings into :class:`Crossing` events, once per crossing; thread-safe.

    Args:
        thresholds: the configured levels (MB and percent; converted to bytes and a ratio).
        hysteresis: how far back past a threshold a value must go to re-arm it (0.05: 5 %).
    """

    def __init__(self, thresholds: Thresholds, hysteresis: float = 0.05) -> None:
        if not 0 <= hysteresis < 1:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis!r}")
        self._rss = (
            _Threshold(RSS_WARNING, int(thresholds.rss_warning_mb * MB), hysteresis, True),
            _Threshold(RSS_CRITICAL, int(thresholds.rss_critical_mb * MB), hysteresis, True),
        )
        self._available = _Threshold(
            AVAILABLE_MIN, int(thresholds.system_available_min_mb * MB), hysteresis, False
        )
        self._free = _Threshold(
            FREE_MIN, thresholds.system_free_min_percent / 100, hysteresis, False
        )
        self._lock = threading.Lock()
        # One tuple, replaced whole: a reader sees one consistent band without the lock.
        self._band = self._compute_band()

    def check(self, rss: int, available: int, free_ratio: float) -> tuple[Crossing, ...]:
        """The thresholds that this reading crosses into breach; usually ``()``."""
        rss_lo, rss_hi, avail_lo, avail_hi, free_lo, free_hi = self._band
        if (
            rss_lo <= rss <= rss_hi
            and avail_lo <= available <= avail_hi
            and free_lo <= free_ratio <= free_hi
        ):
            return _NO_CROSSINGS
        return self._step(rss, available, free_ratio)

    def breached(self) -> frozenset[str]:
        """Names of the thresholds in breach now (fired and not yet re-armed)."""
        with self._lock:
            everything = (*self._rss, self._available, self._free)
            return frozenset(t.name for t in everything if t.breached)

    def _step(self, rss: int, available: int, free_ratio: float) -> tuple[Crossing, ...]:
        with self._lock:
            crossings = [
                crossing
                for threshold, value in (
                    (self._rss[0], rss),
                    (self._rss[1], rss),
                    (self._available, available),
                    (self._free, free_ratio),
                )
                if (crossing := threshold.step(value)) is not None
            ]
            self._band = self._compute_band()
        return tuple(crossings) if crossings else _NO_CROSSINGS

    def _compute_band(self) -> tuple[float, float, float, float, float, float]:
        """Intersection of each value's bands: inside it, :meth:`check` has nothing to do."""
        (warn_lo, warn_hi), (crit_lo, crit_hi) = (t.band() for t in self._rss)
        avail_lo, avail_hi = self._available.band()
        free_lo, free_hi = self._free.band()
        return (
            max(warn_lo, crit_lo),
            min(warn_hi, crit_hi),
            avail_lo,
            avail_hi,
            free_lo,
            free_hi,
        )
