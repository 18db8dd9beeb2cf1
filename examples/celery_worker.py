"""A Celery worker whose every job span carries its memory, with no code for it.

    opentelemetry-instrument celery --workdir examples -A celery_worker worker -c 2 -l info
    python examples/celery_worker.py --jobs 10           # queue jobs (another terminal)

(``OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none`` in front
prints the spans instead of sending them to a collector.)

Needs ``celery`` and ``opentelemetry-instrumentation-celery``. The broker is a directory
(``$TMPDIR/otel-memory-celery``, or ``OTEL_MEMORY_EXAMPLE_BROKER_DIR``): no server to run. The
celery instrumentation makes a CONSUMER span ``run/<task name>`` per job; the ``memory``
instrumentor adds ``memory.rss.*`` and ``memory.task.overlap`` to it and records
``otel_memory.request.rss.growth`` by span name. ``nations.dump`` holds ``mb`` MB for a moment.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from celery import Celery

MB = 1024 * 1024
BROKER_DIR = Path(
    os.environ.get("OTEL_MEMORY_EXAMPLE_BROKER_DIR")
    or Path(tempfile.gettempdir()) / "otel-memory-celery"
)
for folder in ("out", "processed", "results"):
    (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)

app = Celery(
    "celery_worker",
    broker="filesystem://",
    backend=f"file://{BROKER_DIR / 'results'}",
)
app.conf.broker_transport_options = {
    "data_folder_in": str(BROKER_DIR / "out"),
    "data_folder_out": str(BROKER_DIR / "out"),
    "data_folder_processed": str(BROKER_DIR / "processed"),
}
app.conf.worker_hijack_root_logger = False


@app.task(name="nations.count")
def count(n: int) -> int:
    """A small job: a few hundred kB built and dropped."""
    return len([str(i) * 10 for i in range(n)])


@app.task(name="nations.dump")
def dump(mb: int = 30) -> int:
    """A job that holds ``mb`` MB for a moment."""
    size = min(max(mb, 1), 1024) * MB
    block = bytearray(size)
    block[::4096] = b"x" * len(range(0, size, 4096))  # touch every page: resident
    time.sleep(0.3)
    del block
    return size // MB


def main() -> None:
    """Queue ``--jobs`` small jobs and one dump, and wait for their results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="small jobs to queue")
    parser.add_argument("--dump-mb", type=int, default=150, help="MB the dump job holds")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for results")
    args = parser.parse_args()
    results = [count.delay(10_000) for _ in range(args.jobs)]
    results.append(dump.delay(args.dump_mb))
    done = [result.get(timeout=args.timeout) for result in results]
    print(f"{len(done)} jobs done; dump held {done[-1]} MB")


if __name__ == "__main__":
    main()
