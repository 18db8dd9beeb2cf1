"""100 censuses (and 100 reachability scans) leave no memory behind (pytest-memray's limit_leaks).

Only meaningful under memray tracking: run ``pytest --memray tests/test_census_memray.py``.
Without ``--memray`` the marker does nothing, so the test is skipped.
"""

from __future__ import annotations

import pytest

from otel_memory.activity.census import ACCELERATED, newest_instances, referrers_of, take_census


@pytest.fixture(autouse=True)
def _require_memray(request):
    if not (request.config.getoption("memray") or request.config.getini("memray")):
        pytest.skip("needs pytest --memray")


@pytest.mark.limit_leaks("64 KB")
@pytest.mark.parametrize(
    "accelerated",
    [
        pytest.param(True, id="compiled", marks=pytest.mark.skipif(
            not ACCELERATED, reason="otel_memory.activity._census is not built")),
        pytest.param(False, id="pure-python"),
    ],
)
def test_a_hundred_censuses_leak_nothing(accelerated):
    for _ in range(100):
        census = take_census(accelerated=accelerated)
        assert census.total_objects > 0
    del census


class _Held:
    pass


_held = [(_Held(), n) for n in range(200)]  # each in a tuple: referrers_of probes them


@pytest.mark.limit_leaks("64 KB")
@pytest.mark.parametrize(
    "accelerated",
    [
        pytest.param(True, id="compiled", marks=pytest.mark.skipif(
            not ACCELERATED, reason="otel_memory.activity._census is not built")),
        pytest.param(False, id="pure-python"),
    ],
)
def test_a_hundred_reachability_scans_leak_nothing(accelerated):
    targets = tuple(item for item, _ in _held[:8])
    for _ in range(100):
        found = newest_instances([_Held], 50, accelerated=accelerated)
        assert len(found) == 50
        referrers, calls = referrers_of(targets, accelerated=accelerated)
        assert calls == 2 and len(referrers) >= 8
    del found, referrers
