"""100 censuses leave no memory behind (pytest-memray's limit_leaks), through each pass.

Only meaningful under memray tracking: run ``pytest --memray tests/test_census_memray.py``.
Without ``--memray`` the marker does nothing, so the test is skipped.
"""

from __future__ import annotations

import pytest

from otel_memory.activity.census import ACCELERATED, take_census


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
