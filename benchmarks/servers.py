"""Throughput of a Flask app on ``gunicorn -w 2`` under ``opentelemetry-instrument``, with and
without this package (issue 17's goal: >= 95 %).

    .venv/bin/python benchmarks/servers.py                 # 3 rounds x 3,000 requests
    .venv/bin/python benchmarks/servers.py --rounds 5 --requests 5000

The app (written to a temporary directory; it does not import this package) answers
``GET /work`` by building and dropping a few hundred kB. Both contenders run the same command,
``opentelemetry-instrument gunicorn -w 2 app:app``, with the flask instrumentation and every
signal over OTLP/gRPC into a local receiver (``tests/otlp_receiver.py``):

- ``without``: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=memory``: ``opentelemetry-instrument``
  never imports this package, as if it were not installed;
- ``with``: the ``memory`` instrumentor loaded (daily log, periodic lines, gauges) and
  ``request_spans`` on: memory on every request span and the request histogram;
- ``with, request_spans off``: the monitor alone, to tell its cost from the request spans'.

A bounded load generator (asyncio, 127.0.0.1 only) keeps ``--in-flight`` requests (default 16)
open; each round starts a fresh server, warms it up, then times ``--requests`` requests.
Contenders alternate round by round; the table gives each round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, python_line

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
from otlp_receiver import OTLPReceiver  # noqa: E402  (a test helper: the real receiver)

APP = '''
from flask import Flask

app = Flask(__name__)


@app.get("/work")
def work():
    rows = [{"id": n, "name": f"row-{n}"} for n in range(1000)]
    return {"rows": len(rows)}
'''
CONTENDERS = ("without", "with, request_spans off", "with")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(port: int, requests: int, in_flight: int) -> tuple[int, int]:
    """``requests`` GETs of /work, ``in_flight`` at once; (answered 200, failed)."""
    remaining = requests
    ok = failed = 0
    request = b"GET /work HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"

    async def client() -> None:
        nonlocal remaining, ok, failed
        while remaining > 0:
            remaining -= 1
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                response = await reader.read()  # HTTP/1.0: the server closes after the body
                writer.close()
                if response.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
                    ok += 1
                else:
                    failed += 1
            except OSError:
                failed += 1

    await asyncio.gather(*(client() for _ in range(in_flight)))
    return ok, failed


def _server_cpu(master: int) -> tuple[float, float]:
    """CPU seconds (user + system) of gunicorn's master and workers so far: (main threads, others).

    Threads that ended (the workers' exporters start and stop none while serving) are not counted.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [master]
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        pids += [int(pid) for pid in children.read_text().split()]
    main = others = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            used = int(fields[11]) + int(fields[12])  # utime, stime
            if task.name == str(pid):
                main += used
            else:
                others += used
    return main / ticks, others / ticks


def _environment(contender: str, receiver: OTLPReceiver, log_dir: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="servers-benchmark",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint("grpc"),
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=log_dir,
    )
    if contender == "without":
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "memory"
    elif contender != "with":  # the monitor alone: what request spans add is the difference
        env["OTEL_PYTHON_MEMORY_MONITOR_REQUEST_SPANS"] = "false"
    return env


def measure(
    contender: str, args: argparse.Namespace, receiver: OTLPReceiver
) -> tuple[float, float, float]:
    """Requests per second of one fresh server of ``contender``, its CPU µs per request, and
    the part of it spent in threads other than the processes' main threads (exporters, the
    monitor's sampler and events threads)."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "app.py").write_text(APP)
        command = [
            str(BIN / "opentelemetry-instrument"), str(BIN / "gunicorn"),
            "-w", str(args.workers), "-b", f"127.0.0.1:{port}", "--chdir", directory,
            "--log-level", "warning", "app:app",
        ]  # fmt: skip
        env = _environment(contender, receiver, str(Path(directory, "logs")))
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{contender}: gunicorn did not start") from None
                    time.sleep(0.1)
            asyncio.run(_load(port, args.warmup, args.in_flight))
            main_before, others_before = _server_cpu(server.pid)
            started = time.perf_counter()
            ok, failed = asyncio.run(_load(port, args.requests, args.in_flight))
            elapsed = time.perf_counter() - started
            main_after, others_after = _server_cpu(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    if failed:
        raise SystemExit(f"{contender}: {failed} requests failed")
    per_request = 1e6 / max(ok, 1)
    main = (main_after - main_before) * per_request
    others = (others_after - others_before) * per_request
    return ok / elapsed, main + others, others


def main() -> None:
    """Interleaved rounds, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per round")
    parser.add_argument("--warmup", type=int, default=300, help="untimed requests first")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn -w")
    args = parser.parse_args()
    print(python_line())
    print(
        f"gunicorn -w {args.workers}, flask instrumentation, OTLP/gRPC to a local receiver; "
        f"{args.rounds} interleaved rounds x {args.requests:,} requests, "
        f"{args.in_flight} in flight\n"
    )
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    cpus: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    threads: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    with OTLPReceiver() as receiver:
        for _ in range(args.rounds):
            for name in CONTENDERS:
                rate, cpu, others = measure(name, args, receiver)
                rates[name].append(rate)
                cpus[name].append(cpu)
                threads[name].append(others)
                receiver.clear()
    print("requests/s per round (server CPU µs per request)")
    for index in range(args.rounds):
        cells = [f"{n}: {rates[n][index]:.0f} ({cpus[n][index]:.0f})" for n in CONTENDERS]
        print(f"  round {index + 1}: " + "   ".join(cells))
    print(
        f"\n{'contender':<28}{'req/s':>8}{'ratio':>8}{'CPU µs/req':>12}{'CPU ratio':>11}"
        f"{'of it threads':>15}"
    )
    base = rates["without"]
    for name in CONTENDERS:
        ratio = median([w / o for o, w in zip(base, rates[name], strict=True)])
        cpu_ratio = median([w / o for o, w in zip(cpus["without"], cpus[name], strict=True)])
        print(
            f"{name:<28}{median(rates[name]):>8.0f}{ratio:>8.3f}"
            f"{median(cpus[name]):>12.0f}{cpu_ratio:>11.3f}{median(threads[name]):>15.0f}"
        )
    print("\nratio: median of the per-round ratios to 'without' (goal, issue 17: 'with' >= 0.95)")
    print("of it threads: CPU µs per request outside the processes' main threads (exporters, ...)")

if __name__ == "__main__":
    main()
