"""100 censuses leave no memory behind (pytest-memray's limit_leaks).

Only meaningful under memray tracking: run ``pytest --memray tests/test_census_memray.py``.
Without ``--memray`` the marker does nothing, so the test is skipped.
"""

from __future__ import annotations

import pytest

from otel_memory.census import take_census


@pytest.fixture(autouse=True)
def _require_memray(request):
    if not (request.config.getoption("memray") or request.config.getini("memray")):
        pytest.skip("needs pytest --memray")


@pytest.mark.limit_leaks("64 KB")
def test_a_hundred_censuses_leak_nothing():
    for _ in range(100):
        census = take_census()
        assert census.total_objects > 0
    del census
