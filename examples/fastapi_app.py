"""A FastAPI app under uvicorn whose every request span carries its memory, with no code for it.

    opentelemetry-instrument uvicorn --app-dir examples fastapi_app:app --host 127.0.0.1 --port 8000

(``OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none`` in front
prints the spans instead of sending them to a collector.)

Needs ``fastapi``, ``uvicorn`` and ``opentelemetry-instrumentation-fastapi``. The ASGI
instrumentation makes a SERVER span per request (named by route, e.g. ``GET /items/{item}``);
the ``memory`` instrumentor adds ``memory.rss.*`` and ``memory.task.overlap`` (concurrent
requests of one process share its RSS: the overlap says when a delta is shared).

    curl http://127.0.0.1:8000/items/42
    curl http://127.0.0.1:8000/report?mb=150     # a 150 MB spike: the request span's peak
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from otel_memory import traced_task

MB = 1024 * 1024
app = FastAPI()


@app.get("/items/{item}")
async def item(item: int) -> dict[str, int]:
    """A small request: a few hundred kB built and dropped."""
    rows = [{"id": item, "n": n} for n in range(200)]
    return {"id": item, "rows": len(rows)}


@app.get("/report")
async def report(mb: int = 30) -> dict[str, int]:
    """A report that holds ``mb`` MB (default 30) for a moment, inside a traced task."""
    size = min(max(mb, 1), 1024) * MB
    with traced_task("Build Report"):
        block = bytearray(size)
        block[::4096] = b"x" * len(range(0, size, 4096))  # touch every page: resident
        await asyncio.sleep(0.3)
        del block
    return {"mb": size // MB}
