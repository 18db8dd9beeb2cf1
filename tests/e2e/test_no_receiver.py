"""With nothing listening on the OTLP endpoint the application still finishes promptly and the
daily file is whole: exports fail in the SDK's background threads, never in the host's code."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from example_runs import EXPORT_TIMEOUT_SECONDS, run_instrumented

from otel_memory.base.logline import Marker, parse_line

pytestmark = pytest.mark.e2e

BATCHES, HANDLERS = 3, 20
ARGS = ["--batches", str(BATCHES), "--handlers", str(HANDLERS), "--pause", "0.3"]
ARGS += ["--dump-every", "0.4", "--seconds", "30"]
SERVED = re.compile(r"served (\d+) batches of \d+ messages, (\d+) cache dumps in ([\d.]+) s")
# At exit the monitor flushes and then the SDK shuts down traces, metrics and logs: six exports,
# each bounded by OTEL_EXPORTER_OTLP_TIMEOUT (retries included). A hang on the SDK's default
# 10 s timeout, or a blocking export on the host's thread, would blow far past this.
EXIT_EXPORTS = 6
STARTUP_AND_WORK_SECONDS = 10


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_runs_at_normal_speed_with_no_receiver(closed_endpoint, tmp_path, protocol):
    example = run_instrumented(
        "async_service.py",
        ARGS,
        endpoint=closed_endpoint,
        protocol=protocol,
        log_dir=tmp_path,
        service_name="no-receiver",
    )
    print(f"{protocol}, no receiver: wall {example.wall_seconds:.2f} s; {example.result.stdout}")

    assert example.result.returncode == 0, example.result.stderr
    served = SERVED.search(example.result.stdout)
    assert served is not None, example.result.stdout
    batches, dumps, work_seconds = int(served[1]), int(served[2]), float(served[3])
    assert batches == BATCHES
    # the work itself (0.6 s of pauses + ~0.3 s of handlers) is not held up by failing exports
    assert work_seconds < STARTUP_AND_WORK_SECONDS
    assert example.wall_seconds < STARTUP_AND_WORK_SECONDS + EXIT_EXPORTS * EXPORT_TIMEOUT_SECONDS

    [path] = tmp_path.glob("memory_*.log")
    lines = [parse_line(line) for line in path.read_text().splitlines()]
    assert None not in lines
    markers = Counter(line.marker for line in lines)
    tasks = BATCHES * (1 + 3 * HANDLERS) + dumps
    assert markers[Marker.START] == markers[Marker.END] == tasks
    assert lines[-1].name == "Monitor Stopped"
