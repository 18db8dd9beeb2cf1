"""Log records are exported once: by otel-memory's own bridge, or, when the SDK's root logging
handler is on too (``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true``), by that handler
alone once ``OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS=false`` (docs/zero-code.md)."""

from __future__ import annotations

from collections import Counter

import pytest
from example_runs import run_instrumented

pytestmark = pytest.mark.e2e

AUTO_LOGGING = {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}


def _start_records(receiver, tmp_path, extra_env):
    example = run_instrumented(
        "leak_demo.py",
        ["--iterations", "2", "--per-iteration", "10"],
        endpoint=receiver.endpoint("grpc"),
        protocol="grpc",
        log_dir=tmp_path,
        service_name="log-export-e2e",
        extra_env=extra_env,
    )
    assert example.result.returncode == 0, example.result.stderr
    markers = Counter(r.attributes.get("memory.marker") for r in receiver.log_records())
    spans = receiver.spans_named("Handle Messages")
    assert len(spans) == 2
    starts = [r for r in receiver.log_records() if r.attributes.get("memory.marker") == "START"]
    assert {r.trace_id for r in starts} == {span.trace_id for span in spans}
    return markers["START"], markers["END"]


@pytest.mark.parametrize(
    ("extra_env", "copies"),
    [
        ({}, 1),
        (AUTO_LOGGING, 2),  # both handlers export: the double export the docs warn about
        ({**AUTO_LOGGING, "OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS": "false"}, 1),
    ],
    ids=["bridge", "bridge+root-handler", "root-handler"],
)
def test_each_event_is_exported_the_expected_number_of_times(
    otlp_receiver, tmp_path, extra_env, copies
):
    assert _start_records(otlp_receiver, tmp_path, extra_env) == (2 * copies, 2 * copies)
