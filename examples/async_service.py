"""An asyncio bot-like service: hundreds of concurrent message handlers, each a task span.

    python examples/async_service.py                       # 5 s, 200 handlers per batch
    python examples/async_service.py --seconds 2 --handlers 50 --all-spans
    opentelemetry-instrument python examples/async_service.py --batches 2

Every batch is a "Message Batch" task that runs ``--handlers`` "Handle Message" coroutines at
once; each handler opens nested "Parse Message" and "Store Message" tasks. Beside the batches a
"Cache Dump" task runs every ``--dump-every`` seconds and drops the cache. Because each asyncio
task has its own task stack, the concurrent handlers never end each other's spans: every
"Parse Message" span is the child of its own "Handle Message".

Run plainly, finished spans are printed (the examples' embedded default; only the top-level
ones unless ``--all-spans``: one batch of 200 handlers ends 601 spans) and the monitor writes
``logs/memory_YYYYMMDD.log`` (``OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR`` moves it). Under
``opentelemetry-instrument`` the ``memory`` instrumentor has already started the monitor and the
``OTEL_*`` variables decide where spans, metrics and log records go.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import time

from _embedded import configure_embedded_default

import otel_memory
from otel_memory import traced_task

# The service's cache: handlers fill it, the periodic dump empties it, so RSS rises and falls.
_cache: dict[int, bytes] = {}


@traced_task("Parse Message")
async def parse_message(raw: str) -> dict[str, object]:
    await asyncio.sleep(0)  # yield, as a real parser reading from a stream would
    return json.loads(raw)


@traced_task("Store Message")
async def store_message(message: dict[str, object]) -> None:
    await asyncio.sleep(random.uniform(0, 0.01))
    _cache[int(str(message["id"]))] = json.dumps(message).encode() * 20


@traced_task("Handle Message")
async def handle_message(message_id: int) -> None:
    raw = json.dumps({"id": message_id, "text": "hello " * random.randint(10, 200)})
    message = await parse_message(raw)
    await store_message(message)


@traced_task("Message Batch")
async def message_batch(first_id: int, handlers: int) -> None:
    await asyncio.gather(*(handle_message(first_id + i) for i in range(handlers)))


@traced_task("Cache Dump")
async def cache_dump() -> int:
    dropped = len(_cache)
    _cache.clear()
    await asyncio.sleep(0)
    return dropped


async def dump_periodically(every: float, stop: asyncio.Event) -> int:
    """Run "Cache Dump" every ``every`` seconds until ``stop`` is set; returns how many ran."""
    dumps = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except asyncio.TimeoutError:
            await cache_dump()
            dumps += 1
    return dumps


async def serve(args: argparse.Namespace) -> int:
    """Run batches until ``--seconds`` pass or ``--batches`` are done; returns batches run."""
    started = time.monotonic()
    stop = asyncio.Event()
    dumper = asyncio.create_task(dump_periodically(args.dump_every, stop))
    done = 0
    while time.monotonic() - started < args.seconds and done != args.batches:
        if done:
            await asyncio.sleep(args.pause)  # messages arrive in bursts; the bot idles between
        await message_batch(done * args.handlers, args.handlers)
        done += 1
    stop.set()
    dumps = await dumper
    print(
        f"served {done} batches of {args.handlers} messages, {dumps} cache dumps"
        f" in {time.monotonic() - started:.2f} s"
    )
    return done


class TopLevelLines(io.TextIOBase):
    """Passes on to stdout only the lines of top-level spans (the printer indents children)."""

    def write(self, text: str) -> int:
        if not text.startswith(" "):
            sys.stdout.write(text)
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="run at most this long")
    parser.add_argument("--batches", type=int, default=None, help="stop after this many batches")
    parser.add_argument("--handlers", type=int, default=200, help="concurrent handlers per batch")
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between batches")
    parser.add_argument("--dump-every", type=float, default=1.0, help="seconds between dumps")
    parser.add_argument("--all-spans", action="store_true", help="print nested spans too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_embedded_default(None if args.all_spans else TopLevelLines())
    # Under opentelemetry-instrument the instrumentor has started the monitor: this is a no-op.
    otel_memory.start()
    try:
        asyncio.run(serve(args))
    finally:
        otel_memory.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
