"""Daily-log lines leave as log records as ``export_logs`` says, exactly once: they never pass
through ``logging``, so the SDK's root logging handler
(``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true``) cannot export them a second time
(docs/zero-code.md)."""

from __future__ import annotations

from collections import Counter

import pytest
from example_runs import run_instrumented

pytestmark = pytest.mark.e2e

AUTO_LOGGING = {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}
ALL = "OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS"


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
    if starts:
        assert {r.trace_id for r in starts} == {span.trace_id for span in spans}
    return markers["START"], markers["END"]


@pytest.mark.parametrize(
    ("extra_env", "copies"),
    [
        ({ALL: "all"}, 1),
        ({**AUTO_LOGGING, ALL: "all"}, 1),  # the root handler never sees the lines
        ({**AUTO_LOGGING, ALL: "true"}, 1),  # v0.1's boolean: all
        (AUTO_LOGGING, 0),  # the default, events: START/END stay on the span
        ({ALL: "none"}, 0),
    ],
    ids=["all", "all+root-handler", "v0.1-true", "events", "none"],
)
def test_each_event_is_exported_the_expected_number_of_times(
    otlp_receiver, tmp_path, extra_env, copies
):
    assert _start_records(otlp_receiver, tmp_path, extra_env) == (2 * copies, 2 * copies)
