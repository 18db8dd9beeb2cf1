"""A leak on purpose: a global dict that keeps every message, and the leak detector naming it.

    python examples/leak_demo.py                           # 6 iterations of 20,000 messages
    python examples/leak_demo.py --iterations 10 --per-iteration 5000 --fixed
    opentelemetry-instrument python examples/leak_demo.py  # suspects also go out as log records

This is the growing-global-dict pattern of the memory analysis findings
(``message_fetch_failures = {}  # Can accumulate indefinitely``). Every iteration is a
"Handle Messages" task that stores its messages in ``_message_cache`` and never evicts them.
After each iteration the demo takes a heap snapshot (standing in for the profiler's
``interval_seconds``, which is at least 10 s in a real deployment) right after a full garbage
collection (standing in for the ones a long-running process makes on its own; the monitor never
forces one). A class whose object count grows in ``leak_snapshots`` consecutive snapshots (3 by
default), by at least 1,000 objects and 20 %, becomes a leak suspect: here ``Message``, and not
the list each message owns. The detector reports it as a WARNING on the ``memory_profiler``
logger and as an OpenTelemetry log record (event ``otel_memory.leak_suspect``), with the path
that holds it (``module __main__ -> collections.OrderedDict __main__._message_cache ->
__main__.Message``), and the demo prints every suspect and its path at the end.

With ``--fixed`` the cache is bounded (the oldest entries are evicted), the count stops growing
and nothing is flagged.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections import OrderedDict

from _embedded import configure_embedded_default

import otel_memory
from otel_memory import traced_task
from otel_memory.guards.profiler import Profiler, format_snapshot

BOUNDED_CACHE_SIZE = 1000


class Message:
    """A chat message as a bot would keep it."""

    def __init__(self, message_id: int, text: str) -> None:
        self.message_id = message_id
        self.text = text
        self.reactions: list[str] = []


# The leak: nothing ever removes entries, exactly like the seed's global failure dict.
_message_cache: OrderedDict[int, Message] = OrderedDict()


@traced_task("Handle Messages")
def handle_messages(first_id: int, count: int, bounded: bool) -> None:
    for message_id in range(first_id, first_id + count):
        _message_cache[message_id] = Message(message_id, f"message {message_id}")
        if bounded and len(_message_cache) > BOUNDED_CACHE_SIZE:
            _message_cache.popitem(last=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=6, help="batches of messages")
    parser.add_argument("--per-iteration", type=int, default=20_000, help="messages per batch")
    parser.add_argument("--fixed", action="store_true", help="bound the cache: no leak")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_embedded_default()
    config = otel_memory.load_config()
    otel_memory.start(config)  # a no-op under opentelemetry-instrument: already started
    profiler = Profiler(config)
    try:
        for iteration in range(args.iterations):
            handle_messages(iteration * args.per_iteration, args.per_iteration, args.fixed)
            gc.collect()  # the host's own full collection: the leak trend only counts after one
            census = profiler.snapshot()
            print(
                f"iteration {iteration + 1}: {len(_message_cache):,} cached messages,"
                f" {census.counts.get(f'{__name__}.Message', 0):,} Message objects on the heap"
            )
    finally:
        otel_memory.stop()
    print()
    print(format_snapshot(census, 5))
    print()
    suspects = profiler.suspects()
    if not suspects:
        print("no leak suspects")
    for suspect in suspects:
        print(
            f"LEAK SUSPECT {suspect.name}: grew in {suspect.streak} consecutive snapshots,"
            f" {suspect.before:,} -> {suspect.now:,} objects (+{suspect.growth:,})"
        )
        if suspect.path:
            print(f"  held by: {' -> '.join(suspect.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
