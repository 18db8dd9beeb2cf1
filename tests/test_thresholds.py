"""Thresholds as live events: once per crossing, re-armed past 5 % hysteresis, exact under threads."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from otel_memory.base.config import Thresholds
from otel_memory.guards.thresholds import MB, Crossing, ThresholdGuard

GB = 1024 * MB
# warning 1000 MB, critical 1500 MB, available 500 MB, free 25 %
DEFAULT = Thresholds()
CALM = {"available": 4 * GB, "free_ratio": 0.8}


def rss_run(guard: ThresholdGuard, values_mb: list[float]) -> list[tuple[str, float]]:
    """Feed RSS readings (MB) with a calm system; the crossings, as (name, value MB)."""
    out = []
    for value in values_mb:
        for crossing in guard.check(int(value * MB), **CALM):
            out.append((crossing.name, crossing.value / MB))
    return out


def test_one_event_per_crossing_not_one_per_sample():
    guard = ThresholdGuard(DEFAULT)
    events = rss_run(guard, [500, 900, 1001, 1100, 1200, 1100, 1050, 1300])
    assert events == [("rss_warning", 1001)]


def test_rearmed_only_past_the_hysteresis():
    guard = ThresholdGuard(DEFAULT)
    # 990 MB and even 951 MB are below the threshold but within 5 %: not re-armed
    assert rss_run(guard, [1001, 990, 1010, 951, 1020]) == [("rss_warning", 1001)]
    # 949 MB is below 0.95 x 1000: re-armed, and the next crossing fires again
    assert rss_run(guard, [949, 999, 1001]) == [("rss_warning", 1001)]
    assert guard.breached() == {"rss_warning"}


def test_exactly_at_the_threshold_is_not_a_breach():
    guard = ThresholdGuard(Thresholds(rss_warning_mb=1, rss_critical_mb=2))
    assert guard.check(MB, **CALM) == ()
    (crossing,) = guard.check(MB + 1, **CALM)
    assert crossing == Crossing("rss_warning", MB, MB + 1, logging.WARNING)


def test_critical_is_an_error_and_a_jump_crosses_both():
    guard = ThresholdGuard(DEFAULT)
    crossings = guard.check(1600 * MB, **CALM)
    assert [(c.name, c.severity) for c in crossings] == [
        ("rss_warning", logging.WARNING),
        ("rss_critical", logging.ERROR),
    ]
    # back under critical's re-arm level (1425 MB) but still above warning: critical only re-arms
    assert rss_run(guard, [1400, 1501]) == [("rss_critical", 1501)]


def test_the_first_reading_already_in_breach_fires():
    guard = ThresholdGuard(DEFAULT)
    assert [c.name for c in guard.check(1200 * MB, **CALM)] == ["rss_warning"]


def test_available_min_fires_below_and_rearms_above_105_percent():
    guard = ThresholdGuard(DEFAULT)  # 500 MB
    names = []
    for available_mb in [800, 501, 499, 300, 510, 520, 450, 526, 499]:
        crossings = guard.check(100 * MB, int(available_mb * MB), 0.8)
        names += [(c.name, round(c.value / MB)) for c in crossings]
    # 510 and 520 are within 5 % of 500 (525): no re-arm, so 450 is the same episode
    assert names == [("available_min", 499), ("available_min", 499)]


def test_free_min_is_a_ratio_of_the_percent():
    guard = ThresholdGuard(DEFAULT)  # 25 %
    names = []
    for ratio in [0.5, 0.26, 0.249, 0.1, 0.26, 0.2, 0.2626, 0.24]:
        names += [(c.name, c.threshold, c.value) for c in guard.check(100 * MB, 4 * GB, ratio)]
    assert names == [("free_min", 0.25, 0.249), ("free_min", 0.25, 0.24)]


def test_every_threshold_at_once_then_each_rearms_alone():
    guard = ThresholdGuard(DEFAULT)
    crossings = guard.check(2 * GB, 100 * MB, 0.05)
    assert {c.name for c in crossings} == {"rss_warning", "rss_critical", "available_min", "free_min"}
    assert guard.breached() == {"rss_warning", "rss_critical", "available_min", "free_min"}
    assert guard.check(2 * GB, 100 * MB, 0.05) == ()
    guard.check(2 * GB, 4 * GB, 0.05)  # available recovers, the rest stay breached
    assert guard.breached() == {"rss_warning", "rss_critical", "free_min"}
    assert [c.name for c in guard.check(2 * GB, 100 * MB, 0.05)] == ["available_min"]


def test_attributes_follow_the_spec():
    guard = ThresholdGuard(Thresholds(rss_warning_mb=900.5))
    (rss,) = guard.check(1000 * MB, **CALM)
    assert rss.attributes("Nations Dump Processing") == {
        "otel_memory.threshold.name": "rss_warning",
        "otel_memory.threshold.value": int(900.5 * MB),
        "otel_memory.value": 1000 * MB,
        "otel_memory.task.name": "Nations Dump Processing",
    }
    assert isinstance(rss.attributes()["otel_memory.threshold.value"], int)
    (free,) = guard.check(1 * MB, 4 * GB, 0.1)
    assert free.attributes() == {
        "otel_memory.threshold.name": "free_min",
        "otel_memory.threshold.value": 0.25,
        "otel_memory.value": 0.1,
    }


def test_zero_hysteresis_rearms_as_soon_as_the_value_is_back():
    guard = ThresholdGuard(DEFAULT, hysteresis=0)
    assert rss_run(guard, [1001, 999, 1001]) == [("rss_warning", 1001), ("rss_warning", 1001)]
    with pytest.raises(ValueError, match="hysteresis"):
        ThresholdGuard(DEFAULT, hysteresis=1.5)


def test_concurrent_threads_give_exactly_one_event_per_crossing():
    # GIVEN 8 threads reading at once, through three phases: high, low (re-arm), high
    guard = ThresholdGuard(DEFAULT)
    threads_n, per_phase = 8, 3_000
    barrier = threading.Barrier(threads_n)
    events: list[Crossing] = []
    events_lock = threading.Lock()

    def reader(index: int) -> None:
        for phase_mb in (1600, 800, 1600):
            barrier.wait()
            for i in range(per_phase):
                # jitter so the threads do not all send one value
                rss = int((phase_mb + (index + i) % 7) * MB)
                crossings = guard.check(rss, **CALM)
                if crossings:
                    with events_lock:
                        events.extend(crossings)
        barrier.wait()

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN each of the two upward crossings gave one warning and one critical, no more
    assert sorted(c.name for c in events) == ["rss_critical"] * 2 + ["rss_warning"] * 2


class _YieldingInt(int):
    """An RSS value whose comparison gives the GIL away, so that threads interleave inside the
    guard's state change (a plain int compares too fast for a race to show up)."""

    def __gt__(self, other: object) -> bool:
        time.sleep(0.0005)
        return int(self) > other  # type: ignore[operator]

    def __lt__(self, other: object) -> bool:
        time.sleep(0.0005)
        return int(self) < other  # type: ignore[operator]


def test_threads_interleaving_inside_the_state_change_still_fire_once():
    guard = ThresholdGuard(DEFAULT)
    threads_n, rounds = 6, 5
    barrier = threading.Barrier(threads_n)
    fired: list[str] = []

    def reader() -> None:
        for phase_mb in (1200, 800) * rounds:  # above warning, then below its re-arm level
            barrier.wait()
            for crossing in guard.check(_YieldingInt(phase_mb * MB), **CALM):
                fired.append(crossing.name)  # list.append is atomic

    threads = [threading.Thread(target=reader) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fired == ["rss_warning"] * rounds
