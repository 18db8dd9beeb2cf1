"""Watched collections and asyncio task counts."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from otel_memory.activity import watched as w


class Cache:
    """A sized object that takes weak references."""

    def __init__(self, n: int) -> None:
        self.items = list(range(n))

    def __len__(self) -> int:
        return len(self.items)


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    for name in w.watched():
        w.unwatch(name)


def test_a_global_dict_is_watched_through_a_callable_that_follows_reassignment():
    state = {"failures": {1: "a"}}
    w.watch("message_fetch_failures", lambda: state["failures"])
    assert w.collection_sizes() == [("message_fetch_failures", 1)]

    state["failures"] = {1: "a", 2: "b", 3: "c"}
    assert w.collection_sizes() == [("message_fetch_failures", 3)]


def test_a_weakly_referenceable_container_is_not_kept_alive():
    cache = Cache(4)
    w.watch("avatar_cache", cache)
    assert w.collection_sizes() == [("avatar_cache", 4)]

    del cache
    gc.collect()
    assert w.collection_sizes() == []


def test_a_plain_dict_needs_a_callable():
    with pytest.raises(TypeError, match="cannot be weakly referenced"):
        w.watch("failures", {})
    with pytest.raises(TypeError, match="sized container or a callable"):
        w.watch("number", 5)  # type: ignore[arg-type]


def test_unwatch_stops_the_series_and_ignores_unknown_names():
    w.watch("a", lambda: [1])
    w.unwatch("a")
    w.unwatch("never watched")
    assert w.collection_sizes() == []


def test_watching_again_replaces():
    w.watch("a", lambda: [1])
    w.watch("a", lambda: [1, 2])
    assert w.collection_sizes() == [("a", 2)]


def test_a_failing_getter_is_skipped_and_logged_once(caplog):
    def broken():
        raise KeyError("gone")

    w.watch("broken", broken)
    w.watch("fine", lambda: "abc")
    with caplog.at_level(logging.WARNING, logger="otel_memory"):
        assert w.collection_sizes() == [("fine", 3)]
        assert w.collection_sizes() == [("fine", 3)]
    assert len([r for r in caplog.records if "'broken'" in r.getMessage()]) == 1


async def test_asyncio_tasks_are_counted_on_the_loop_and_read_from_another_thread():
    release = asyncio.Event()
    before = len(asyncio.all_tasks())
    w.watch_asyncio_tasks(name="main")  # on the loop thread: counted at once

    tasks = [asyncio.create_task(release.wait()) for _ in range(3)]
    # From the metric reader's thread: the last count, and a recount is requested from the loop,
    # which runs it while this coroutine awaits the thread.
    assert await asyncio.to_thread(w.asyncio_task_counts) == [("main", before)]
    assert await asyncio.to_thread(w.asyncio_task_counts) == [("main", before + 3)]

    release.set()
    await asyncio.gather(*tasks)


def test_a_closed_loop_is_dropped():
    loop = asyncio.new_event_loop()
    try:
        w.watch_asyncio_tasks(loop, name="worker")
        loop.run_until_complete(asyncio.sleep(0))  # runs the first count, inside that task
        assert w.asyncio_task_counts() == [("worker", 1)]
    finally:
        loop.close()
    assert w.asyncio_task_counts() == []
    assert w.watched() == []
