"""Throughput of a Flask app on ``gunicorn -w 2`` under ``opentelemetry-instrument``, with and
without this package (issue 17's goal: >= 95 %).

    .venv/bin/python benchmarks/servers.py                 # 3 rounds x 3,000 requests
    .venv/bin/python benchmarks/servers.py --rounds 5 --requests 5000
    .venv/bin/python benchmarks/servers.py --inside         # + the request path's CPU in situ
    .venv/bin/python benchmarks/servers.py --floor          # + a bound: the contract's least work

The app (written to a temporary directory; it imports nothing of this package unless
``--inside``) answers ``GET /work`` by building and dropping a few hundred kB (``--rows`` rows,
default 1,000; heavier requests make the package's fixed cost per request a smaller part).
Every contender runs the same command, ``opentelemetry-instrument gunicorn -w 2 app:app``, with
the flask instrumentation and every signal over OTLP/gRPC into a local receiver
(``tests/otlp_receiver.py``):

- ``without``: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=memory``: ``opentelemetry-instrument``
  never imports this package, as if it were not installed;
- ``with``: the ``memory`` instrumentor loaded (daily log, periodic lines, gauges) and
  ``request_spans`` on: memory on every request span and the request histogram;
- ``with, request_spans off``: the monitor alone, to tell its cost from the request spans';
- ``with, floor (not a product)``, with ``--floor``: the app replaces the request spans' start
  and end with only what the contract cannot do without (two readings, five attributes, the
  histogram's event; no open-task registry, overlap counts, context stacks or threshold
  checks): a bound on what any implementation of the request spans can keep.

A bounded load generator (asyncio, 127.0.0.1 only) keeps ``--in-flight`` requests (default 16)
open; each round starts a fresh server, warms it up, then times ``--requests`` requests.
Contenders alternate round by round; the table gives each round and the medians, and how much
of the server's CPU per request ran outside the processes' main threads (the exporters' and the
monitor's threads: the span export of the memory attributes and the request histogram's
records are there).

``--inside`` also times, with CPU clocks inside the ``with`` workers, what the package's request
span start and end cost the request's thread in the server: the app then wraps
``RequestSpans.on_start`` and ``RequestSpans.finish`` when it is loaded (the clocks' own cost is
in that contender's row). A server's request runs so much other code between two of them that
the package's code and data are out of the CPU caches each time: this is about twice what
``benchmarks/request_spans.py`` measures in a loop.
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
from typing import NamedTuple

from _common import median, python_line

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
from otlp_receiver import OTLPReceiver  # noqa: E402  (a test helper: the real receiver)

APP = '''
import os

from flask import Flask

app = Flask(__name__)
ROWS = int(os.environ.get("SERVERS_BENCHMARK_ROWS", "1000"))


@app.get("/work")
def work():
    rows = [{"id": n, "name": f"row-{n}"} for n in range(ROWS)]
    return {"rows": len(rows)}
'''
INSIDE = '''
import os
import time

try:
    from otel_memory.activity import requests as _requests
except ImportError:  # the package is not installed: nothing to time
    _requests = None
_directory = os.environ.get("SERVERS_BENCHMARK_INSIDE")
if _requests is not None and _directory:
    _clock = time.thread_time_ns
    _totals = [0, 0, 0]  # ns in RequestSpans.on_start, ns in RequestSpans.finish, finishes
    _on_start, _finish = _requests.RequestSpans.on_start, _requests.RequestSpans.finish

    def _timed_on_start(self, span, parent_context=None):
        started = _clock()
        _on_start(self, span, parent_context)
        _totals[0] += _clock() - started

    def _timed_finish(self, task):
        started = _clock()
        _finish(self, task)
        _totals[1] += _clock() - started
        _totals[2] += 1
        if _totals[2] % 100 == 0:
            path = os.path.join(_directory, str(os.getpid()))
            with open(path + ".tmp", "w") as out:
                out.write(" ".join(map(str, _totals)))
            os.replace(path + ".tmp", path)

    _requests.RequestSpans.on_start = _timed_on_start
    _requests.RequestSpans.finish = _timed_finish
'''
"""``--inside``: the app wraps the package's request span start and end with CPU clocks; each
worker writes its totals to a file every 100 requests."""
FLOOR = '''
import functools

from opentelemetry.trace import SpanKind

from otel_memory.activity import requests as _floor_requests
from otel_memory.activity.events import RequestEnd
from otel_memory.activity.opentask import REQUEST, OpenTask
from otel_memory.base import attributes as _attr


def _floor_on_start(self, span, parent_context=None):
    kind = span.kind
    if not self.enabled or (kind is not SpanKind.SERVER and kind is not SpanKind.CONSUMER):
        return
    span.end = functools.partial(_floor_end, self, span, self._reader.source.read())


def _floor_end(self, span, start, end_time=None):
    del span.end
    self.finish((span, start))
    type(span).end(span, end_time)


def _floor_finish(self, ending):
    span, start = ending
    end = self._reader.source.read()
    span.set_attributes({
        _attr.RSS_START: start.rss, _attr.RSS_END: end.rss, _attr.RSS_DELTA: end.rss - start.rss,
        _attr.RSS_PEAK: max(start.rss, end.rss), _attr.TASK_OVERLAP: 0,
    })
    growth = max(0, end.rss - start.rss)
    self._events.put(RequestEnd(OpenTask(span.name, span, start, None, REQUEST), growth))


_floor_requests.RequestSpans.on_start = _floor_on_start
_floor_requests.RequestSpans.finish = _floor_finish
'''
"""``--floor``'s app: the request spans reduced to the work the contract cannot do without (two
readings, five attributes, the histogram's event): no open-task registry (so no sampled peak),
overlap counts, context stacks, threshold checks or failure handling. Not a product: a bound."""
CONTENDERS = ("without", "with, request_spans off", "with")
FLOOR_CONTENDER = "with, floor (not a product)"


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
    elif contender == "with, request_spans off":  # the monitor alone: request spans' cost apart
        env["OTEL_PYTHON_MEMORY_MONITOR_REQUEST_SPANS"] = "false"
    return env


class Round(NamedTuple):
    """One fresh server's numbers."""

    rate: float
    """Requests per second."""
    cpu: float
    """Server CPU µs per request (master and workers, every thread)."""
    threads: float
    """The part of ``cpu`` outside the processes' main threads (exporters, monitor threads)."""
    inside: tuple[float, float] | None
    """``--inside``: µs of CPU per request in the request span's start and end, or None."""


def _inside_totals(directory: Path) -> tuple[int, int, int]:
    """Summed over the workers: ns in the request span starts and ends, and the ends."""
    totals = [0, 0, 0]
    for path in directory.glob("[0-9]*"):
        for index, value in enumerate(path.read_text().split()):
            totals[index] += int(value)
    return totals[0], totals[1], totals[2]


def measure(contender: str, args: argparse.Namespace, receiver: OTLPReceiver) -> Round:
    """One fresh server of ``contender`` under the timed load."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        floor = contender == FLOOR_CONTENDER
        timed = args.inside and (contender == "with" or floor)
        inside = Path(directory, "inside") if timed else None
        Path(directory, "app.py").write_text(
            (FLOOR if floor else "") + (INSIDE if inside else "") + APP
        )
        command = [
            str(BIN / "opentelemetry-instrument"), str(BIN / "gunicorn"),
            "-w", str(args.workers), "-b", f"127.0.0.1:{port}", "--chdir", directory,
            "--log-level", "warning", "app:app",
        ]  # fmt: skip
        env = _environment(contender, receiver, str(Path(directory, "logs")))
        env["SERVERS_BENCHMARK_ROWS"] = str(args.rows)
        if inside is not None:
            inside.mkdir()
            env["SERVERS_BENCHMARK_INSIDE"] = str(inside)
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
            inside_before = _inside_totals(inside) if inside else (0, 0, 0)
            started = time.perf_counter()
            ok, failed = asyncio.run(_load(port, args.requests, args.in_flight))
            elapsed = time.perf_counter() - started
            main_after, others_after = _server_cpu(server.pid)
            inside_after = _inside_totals(inside) if inside else (0, 0, 0)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    if failed:
        raise SystemExit(f"{contender}: {failed} requests failed")
    per_request = 1e6 / max(ok, 1)
    main = (main_after - main_before) * per_request
    others = (others_after - others_before) * per_request
    timed: tuple[float, float] | None = None
    if inside is not None:
        start_ns, end_ns, ends = (a - b for a, b in zip(inside_after, inside_before, strict=True))
        timed = (start_ns / max(ends, 1) / 1e3, end_ns / max(ends, 1) / 1e3)
    return Round(ok / elapsed, main + others, others, timed)


def main() -> None:
    """Interleaved rounds, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per round")
    parser.add_argument("--warmup", type=int, default=300, help="untimed requests first")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn -w")
    parser.add_argument(
        "--rows", type=int, default=1000,
        help="rows each request builds (default: issue 17's 'requests that allocate a little')",
    )  # fmt: skip
    parser.add_argument(
        "--floor", action="store_true",
        help="add a contender whose request spans do only what the contract cannot do without",
    )  # fmt: skip
    parser.add_argument(
        "--inside", action="store_true",
        help="also time the package's request span start and end inside 'with' (CPU clocks)",
    )  # fmt: skip
    args = parser.parse_args()
    print(python_line())
    print(
        f"gunicorn -w {args.workers}, flask instrumentation, OTLP/gRPC to a local receiver; "
        f"{args.rounds} interleaved rounds x {args.requests:,} requests, "
        f"{args.in_flight} in flight, {args.rows:,} rows built per request\n"
    )
    contenders = CONTENDERS + ((FLOOR_CONTENDER,) if args.floor else ())
    rounds: dict[str, list[Round]] = {name: [] for name in contenders}
    with OTLPReceiver() as receiver:
        for _ in range(args.rounds):
            for name in contenders:
                rounds[name].append(measure(name, args, receiver))
                receiver.clear()
    rates = {name: [r.rate for r in rounds[name]] for name in contenders}
    cpus = {name: [r.cpu for r in rounds[name]] for name in contenders}
    threads = {name: [r.threads for r in rounds[name]] for name in contenders}
    print("requests/s per round (server CPU µs per request)")
    for index in range(args.rounds):
        cells = [f"{n}: {rates[n][index]:.0f} ({cpus[n][index]:.0f})" for n in contenders]
        print(f"  round {index + 1}: " + "   ".join(cells))
    print(
        f"\n{'contender':<28}{'req/s':>8}{'ratio':>8}{'CPU µs/req':>12}{'CPU ratio':>11}"
        f"{'of it threads':>15}"
    )
    base = rates["without"]
    for name in contenders:
        ratio = median([w / o for o, w in zip(base, rates[name], strict=True)])
        cpu_ratio = median([w / o for o, w in zip(cpus["without"], cpus[name], strict=True)])
        print(
            f"{name:<28}{median(rates[name]):>8.0f}{ratio:>8.3f}"
            f"{median(cpus[name]):>12.0f}{cpu_ratio:>11.3f}{median(threads[name]):>15.0f}"
        )
    print("\nratio: median of the per-round ratios to 'without' (goal, issue 17: 'with' >= 0.95)")
    print("of it threads: CPU µs per request outside the processes' main threads (exporters, ...)")
    print()
    for name in contenders:
        timed = [r.inside for r in rounds[name] if r.inside is not None]
        if timed:
            starts, ends = median([t[0] for t in timed]), median([t[1] for t in timed])
            print(
                f"inside '{name}' (--inside, its clocks in its row): request span start "
                f"{starts:.1f} µs + end {ends:.1f} µs = {starts + ends:.1f} µs of CPU per request"
            )


if __name__ == "__main__":
    main()
