"""A Flask app whose every request span carries its memory, with no code for it.

    opentelemetry-instrument gunicorn -w 2 -b 127.0.0.1:8000 --chdir examples flask_app:app

(``OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none`` in front
prints the spans instead of sending them to a collector; ``python examples/flask_app.py`` runs
Flask's development server on 127.0.0.1:8000 without OpenTelemetry.)

Needs ``flask``, ``gunicorn`` and ``opentelemetry-instrumentation-flask``. The flask
instrumentation makes a SERVER span per request; the ``memory`` instrumentor (this package)
adds ``memory.rss.start/end/delta/peak`` and ``memory.task.overlap`` to it and records
``otel_memory.request.rss.growth`` by route. ``/report`` also opens a ``traced_task`` inside
the request: a child span with the full set of memory attributes.

    curl http://127.0.0.1:8000/items/42          # allocates a little
    curl http://127.0.0.1:8000/report?mb=150     # a 150 MB spike: the request span's peak
"""

from __future__ import annotations

import time

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from otel_memory import traced_task

MB = 1024 * 1024
app = Flask(__name__)


@app.get("/items/<int:item>")
def item(item: int) -> ResponseReturnValue:
    """A small request: a few hundred kB built and dropped."""
    rows = [{"id": item, "n": n, "name": f"item-{item}-{n}"} for n in range(200)]
    return jsonify(id=item, rows=len(rows))


@app.get("/report")
def report() -> ResponseReturnValue:
    """A report that holds ``mb`` MB (default 30) for a moment, inside a traced task."""
    size = min(max(request.args.get("mb", 30, type=int), 1), 1024) * MB
    with traced_task("Build Report"):
        block = bytearray(size)
        block[::4096] = b"x" * len(range(0, size, 4096))  # touch every page: resident
        time.sleep(0.3)
        del block
    return jsonify(mb=size // MB)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
