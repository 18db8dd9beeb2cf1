"""A Flask app for the per-worker Prometheus test: each answer names the worker that served it.

    opentelemetry-instrument gunicorn -c examples/gunicorn_prometheus.py -w 2 \\
        --chdir tests/prometheus_apps worker_app:app

``/work?seconds=0.3`` sleeps (so concurrent requests spread over the workers); ``/hold?mb=150``
allocates 150 MB and keeps it for the worker's life.
"""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

MB = 1024 * 1024
app = Flask(__name__)
held: list[bytearray] = []


@app.get("/work")
def work() -> ResponseReturnValue:
    time.sleep(request.args.get("seconds", 0.0, type=float))
    return jsonify(pid=os.getpid())


@app.get("/hold")
def hold() -> ResponseReturnValue:
    held.append(bytearray(b"\x01") * (request.args.get("mb", 150, type=int) * MB))  # resident
    return jsonify(pid=os.getpid(), held_mb=sum(len(block) for block in held) // MB)
